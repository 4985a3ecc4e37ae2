"""Cross-frame attention for video-to-video consistency (Text2Video-Zero / Rerender-A-Video style).

With cross-frame attention on, the self-attention (``attn1``) of each frame also attends to the
keys and values of the *first* frame and of the *previous* frame, at the same layer and the same
denoising step, so appearance (colours, textures, identities) is shared between frames. The text
cross-attention (``attn2``) and a ControlNet model's own attention are not touched.

How it works:

- :func:`enable_cross_frame_attention` puts a :class:`CrossFrameAttnProcessor` on the selected
  ``attn1`` layers (by default only the decoder, ``up_blocks``, as Rerender and TokenFlow do) and a
  forward pre-hook on the UNet that tells the shared :class:`CrossFrameState` which timestep is
  being denoised. It returns that state; :func:`disable_cross_frame_attention` puts the original
  processors back (the very same objects) and removes the hook.
- Each processor wraps the layer's original processor: it records the layer's input (the hidden
  states from which K and V are computed) and, when the state has references, passes the
  concatenation ``[this frame, first frame, previous frame]`` along the token axis (the first
  frame only once while it is also the previous one) as the "encoder hidden states", so the
  original processor (SDPA, sliced, xformers) computes K and V over all three frames. With no
  references it calls the original processor unchanged, so the first frame is bit-identical to
  a plain generation.
- Modes (``state.mode``, switchable per call): ``"off"`` (plain attention, nothing recorded),
  ``"record"`` (plain attention, this frame is recorded), ``"attend"`` (attend to the references
  and record this frame; with no references yet it behaves like ``"record"``).
  After each frame, :meth:`CrossFrameState.next_frame` makes the recorded frame the "previous"
  one (and the "first" one if there is none yet). :meth:`CrossFrameState.reset` forgets all
  (a scene cut: the next frame becomes the new first frame).

Step alignment: references are keyed by **timestep value**, taken from the UNet's ``timestep``
argument by the pre-hook. An img2img frame at a lower strength runs a suffix of the txt2img
schedule, so its timesteps match the first frame's exactly; when a timestep was not recorded
(other step count or sampler), the nearest recorded timestep is used. This is robust to
callbacks (no ``callback_on_step_end`` is needed, so it combines with prompt editing) and to
samplers that call the UNet twice per step (Heun, DPM2: each call has its own timestep; repeated
timestep values share one reference, the last recorded).

Batches and CFG: a pipeline call's UNet batch is ``[uncond, cond]`` (with ``count`` images, each
half holds ``count`` items). Reference item ``j`` is paired with this frame's item ``i`` by
position, ``j = ((2i + 1) * B_ref) // (2 * B)``: identical batches pair item by item, so uncond
attends to the uncond reference and cond to cond; a frame without CFG (batch 1) attends to the
cond half of a CFG reference; batches of other sizes map half to half.

Memory: each selected layer stores its input, (batch, tokens, channels), per step for the first
frame, the previous frame and the frame being generated (K and V are recomputed from it, which
costs half the memory of storing K and V). For SD 1.5 at 512x512 in fp16 with CFG that is
27.5 MB per step per frame for the ``up_blocks`` layers (46 MB with all blocks), so with 20 steps
about 0.55 GB per stored frame: 1.1 GB between frames, 1.65 GB while a frame is generated.
``max_layers`` keeps only the first layers of the selection (in the decoder the low-resolution,
cheap ones). Attention in the selected layers runs over three times the keys.

Example (a clip; every pipeline built on this UNet takes part)::

    state = enable_cross_frame_attention(pipe.unet)  # blocks=("up",), mode="attend"
    for frame in frames:
        image = pipe(...)  # txt2img, img2img or ControlNet
        state.next_frame()
    with state.using("off"):  # one call without cross-frame attention
        preview = pipe(...)
    disable_cross_frame_attention(pipe.unet)

Not supported: ``torch.compile``'d UNets (the processors keep Python state), fused QKV
projections, attention masks on self-attention (those layers fall back to plain attention).
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

from dreamreel.errors import SettingsError, did_you_mean

logger = logging.getLogger(__name__)

CrossFrameMode = Literal["off", "record", "attend"]
_BLOCK_PREFIX: dict[str, str] = {"down": "down_blocks.", "mid": "mid_block.", "up": "up_blocks."}
_TIMESTEP_DIGITS = 4

References = dict[str, dict[float, torch.Tensor]]
"""Layer name -> timestep -> the layer's recorded input, (batch, tokens, channels)."""


@dataclass(frozen=True)
class _Installed:
    """What :func:`disable_cross_frame_attention` needs to undo an install."""

    state: CrossFrameState
    modules: dict[str, Any]
    originals: dict[str, Any]
    hook: Any


_ENABLED: weakref.WeakKeyDictionary[torch.nn.Module, _Installed] = weakref.WeakKeyDictionary()


class CrossFrameState:
    """What every cross-frame processor of one UNet shares: mode, current timestep, references.

    Attributes:
        layers: the processor names (``...attn1.processor``) that take part, in UNet order.
        timestep: the timestep of the UNet call running now (set by the UNet pre-hook).
        frames: how many recorded frames :meth:`next_frame` has committed since the last reset.
    """

    def __init__(self, layers: Sequence[str], mode: CrossFrameMode = "attend") -> None:
        self.layers: tuple[str, ...] = tuple(layers)
        self.mode = mode
        self.timestep: float | None = None
        self.frames = 0
        self._first: References = {}
        self._previous: References = {}
        self._current: References = {}
        self._warned: set[str] = set()

    @property
    def mode(self) -> CrossFrameMode:
        """``"off"``, ``"record"`` or ``"attend"`` (see the module docstring); settable per call."""
        return self._mode

    @mode.setter
    def mode(self, value: CrossFrameMode) -> None:
        if value not in get_args(CrossFrameMode):
            raise ValueError(f"cross-frame attention mode must be 'off', 'record' or 'attend', not {value!r}")
        self._mode: CrossFrameMode = value

    @contextmanager
    def using(self, mode: CrossFrameMode) -> Iterator[CrossFrameState]:
        """Set ``mode`` for the duration of a ``with`` block (e.g. ``"off"`` for one plain call)."""
        before = self.mode
        self.mode = mode
        try:
            yield self
        finally:
            self.mode = before

    @property
    def has_references(self) -> bool:
        """Whether a first frame has been committed (so ``"attend"`` attends to something)."""
        return bool(self._first)

    @property
    def reference_layers(self) -> frozenset[str]:
        """Names of the layers that hold references or recordings of the frame being generated."""
        return frozenset(self._first) | frozenset(self._previous) | frozenset(self._current)

    def recorded_timesteps(self, layer: str) -> tuple[float, ...]:
        """Timesteps recorded for ``layer`` in the frame being generated, in recording order."""
        return tuple(self._current.get(layer, {}))

    def references(self, layer: str) -> list[torch.Tensor]:
        """The first and previous frame's inputs of ``layer`` at the current timestep (deduplicated).

        Empty when there are no references. A missing timestep falls back to the nearest one.
        """
        found: list[torch.Tensor] = []
        for store in (self._first, self._previous):
            tensor = _nearest(store.get(layer, {}), self.timestep)
            if tensor is not None and not any(tensor is seen for seen in found):
                found.append(tensor)
        return found

    def record(self, layer: str, hidden_states: torch.Tensor) -> None:
        """Store ``hidden_states`` as ``layer``'s input at the current timestep for this frame."""
        if self.timestep is None:
            return
        self._current.setdefault(layer, {})[self.timestep] = hidden_states.detach().clone()

    def next_frame(self) -> None:
        """Commit the frame just generated: it becomes "previous" (and "first" if there is none).

        Does nothing when nothing was recorded (mode ``"off"``, or a call that ran no step), so
        the previous frame stays the reference.
        """
        if not self._current:
            logger.debug("cross-frame attention: nothing recorded for this frame; references kept")
            return
        if not self._first:
            self._first = self._current
        self._previous = self._current
        self._current = {}
        self.frames += 1

    def reset(self) -> None:
        """Forget every reference and recording; the next recorded frame becomes the first one."""
        self._first, self._previous, self._current = {}, {}, {}
        self.frames = 0
        self.timestep = None

    def memory_bytes(self) -> int:
        """Bytes held by references and the current recording (shared tensors counted once)."""
        seen: dict[int, int] = {}
        for store in (self._first, self._previous, self._current):
            for steps in store.values():
                for tensor in steps.values():
                    seen[id(tensor)] = tensor.numel() * tensor.element_size()
        return sum(seen.values())

    def warn_once(self, key: str, message: str, *args: object) -> None:
        """Log a warning the first time ``key`` is seen."""
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message, *args)


def _nearest(steps: dict[float, torch.Tensor], timestep: float | None) -> torch.Tensor | None:
    if not steps or timestep is None:
        return None
    if timestep in steps:
        return steps[timestep]
    return steps[min(steps, key=lambda t: abs(t - timestep))]


def _match_batch(reference: torch.Tensor, batch: int) -> torch.Tensor:
    """Pair reference items with this batch's items by relative position (keeps CFG halves paired)."""
    ref_batch = reference.shape[0]
    if ref_batch == batch:
        return reference
    index = torch.tensor([((2 * i + 1) * ref_batch) // (2 * batch) for i in range(batch)], device=reference.device)
    return reference.index_select(0, index)


class CrossFrameAttnProcessor:
    """A self-attention processor that also attends to the first and previous frame's tokens.

    Args:
        name: the processor name of the layer (``...attn1.processor``), the key of its references.
        state: the shared :class:`CrossFrameState`.
        original: the layer's processor before cross-frame attention was enabled; it does the
            attention math, so slicing or xformers processors keep working.
    """

    def __init__(self, name: str, state: CrossFrameState, original: Any) -> None:
        self.name = name
        self.state = state
        self.original: Callable[..., torch.Tensor] = original
        parameters = inspect.signature(original.__call__).parameters
        self._takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        self._accepts = frozenset(parameters)

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Attention over this frame's tokens plus the references' (see the module docstring).

        Extra positional ``args`` (diffusers' deprecated ``scale``) are ignored.
        """
        if temb is not None:
            kwargs["temb"] = temb
        if not self._takes_any:
            kwargs = {k: v for k, v in kwargs.items() if k in self._accepts}
        kwargs["attention_mask"] = attention_mask
        state = self.state
        if state.mode == "off" or encoder_hidden_states is not None or hidden_states.ndim != 3:
            return self.original(attn, hidden_states, encoder_hidden_states=encoder_hidden_states, **kwargs)
        references = state.references(self.name) if state.mode == "attend" else []
        if references and attention_mask is not None:
            state.warn_once("mask", "cross-frame attention: %s has an attention mask; using plain attention", self.name)
            references = []
        state.record(self.name, hidden_states)
        if not references:
            return self.original(attn, hidden_states, encoder_hidden_states=None, **kwargs)
        batch = hidden_states.shape[0]
        extended = [hidden_states] + [_match_batch(r, batch).to(hidden_states) for r in references]
        return self.original(attn, hidden_states, encoder_hidden_states=torch.cat(extended, dim=1), **kwargs)


def cross_frame_layers(unet: Any, *, blocks: Sequence[str] = ("up",), max_layers: int | None = None) -> list[str]:
    """Names (``...attn1.processor``) of the self-attention layers cross-frame attention would use.

    Args:
        unet: a diffusers ``UNet2DConditionModel``.
        blocks: which parts of the UNet: any of ``"down"``, ``"mid"``, ``"up"``.
        max_layers: keep only the first this many of the selected layers (down, mid, up order;
            within a part, the UNet's order: in ``up`` the lowest-resolution layers come first).

    Raises:
        SettingsError: an unknown block name or a ``max_layers`` below 1.
    """
    for block in blocks:
        if block not in _BLOCK_PREFIX:
            hint = did_you_mean(str(block), _BLOCK_PREFIX)
            raise SettingsError(
                f"unknown UNet block {block!r} for cross-frame attention; use 'down', 'mid' or 'up'.{hint}",
                key="cross_frame_attention.blocks",
            )
    if max_layers is not None and max_layers < 1:
        raise SettingsError(
            f"max_layers must be at least 1 (or unset for all layers), not {max_layers}",
            key="cross_frame_attention.max_layers",
        )
    names = [n for n in _base_unet(unet).attn_processors if n.endswith(".attn1.processor")]
    prefixes = [_BLOCK_PREFIX[part] for part in ("down", "mid", "up") if part in blocks]
    selected = [n for prefix in prefixes for n in names if n.startswith(prefix)]
    return selected[:max_layers] if max_layers is not None else selected


def _base_unet(unet: Any) -> Any:
    return getattr(unet, "_orig_mod", unet)


def enable_cross_frame_attention(
    unet: Any,
    *,
    blocks: Sequence[str] = ("up",),
    max_layers: int | None = None,
    mode: CrossFrameMode = "attend",
) -> CrossFrameState:
    """Install cross-frame attention on ``unet``'s self-attention layers and return the shared state.

    All pipelines sharing this UNet (txt2img, img2img, ControlNet) get it. Call
    ``state.next_frame()`` after each frame, and :func:`disable_cross_frame_attention` to remove it.

    Args:
        unet: a diffusers ``UNet2DConditionModel``.
        blocks: which parts of the UNet (see :func:`cross_frame_layers`); default: the decoder.
        max_layers: use only the first this many selected layers, to save memory.
        mode: the initial mode.

    Raises:
        ValueError: cross-frame attention is already enabled on ``unet``, or a layer has fused
            QKV projections.
        SettingsError: bad ``blocks`` or ``max_layers``.
    """
    base = _base_unet(unet)
    if base in _ENABLED:
        raise ValueError("cross-frame attention is already enabled on this UNet; disable it first")
    if base is not unet:
        logger.warning("cross-frame attention on a torch.compile'd UNet is not supported; expect recompilation")
    names = cross_frame_layers(base, blocks=blocks, max_layers=max_layers)
    modules = {name: base.get_submodule(name.removesuffix(".processor")) for name in names}
    for name, module in modules.items():
        if getattr(module, "fused_projections", False):
            raise ValueError(f"cross-frame attention does not support fused QKV projections ({name})")
    state = CrossFrameState(names, mode)
    originals = {name: module.get_processor() for name, module in modules.items()}
    for name, module in modules.items():
        module.set_processor(CrossFrameAttnProcessor(name, state, originals[name]))
    hook = base.register_forward_pre_hook(_timestep_hook(state), with_kwargs=True)
    _ENABLED[base] = _Installed(state, modules, originals, hook)
    logger.info("cross-frame attention on %d self-attention layers (%s)", len(names), ", ".join(blocks))
    return state


def disable_cross_frame_attention(unet: Any) -> None:
    """Put back the processors ``unet`` had before :func:`enable_cross_frame_attention`; no-op if off."""
    base = _base_unet(unet)
    installed = _ENABLED.pop(base, None)
    if installed is None:
        return
    for name, module in installed.modules.items():
        module.set_processor(installed.originals[name])
    installed.hook.remove()
    installed.state.reset()


def cross_frame_state(unet: Any) -> CrossFrameState | None:
    """The state of the cross-frame attention enabled on ``unet``, or None."""
    installed = _ENABLED.get(_base_unet(unet))
    return None if installed is None else installed.state


@contextmanager
def cross_frame_attention(
    unet: Any, *, blocks: Sequence[str] = ("up",), max_layers: int | None = None, mode: CrossFrameMode = "attend"
) -> Iterator[CrossFrameState]:
    """Enable cross-frame attention for the duration of a ``with`` block (for a whole clip)."""
    state = enable_cross_frame_attention(unet, blocks=blocks, max_layers=max_layers, mode=mode)
    try:
        yield state
    finally:
        disable_cross_frame_attention(unet)


def _timestep_hook(state: CrossFrameState) -> Any:
    """A UNet forward pre-hook that stores the call's timestep (rounded) in ``state.timestep``."""

    def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        if isinstance(timestep, torch.Tensor):
            timestep = timestep.reshape(-1)[0].item() if timestep.numel() else None
        state.timestep = None if timestep is None else round(float(timestep), _TIMESTEP_DIGITS)

    return hook
