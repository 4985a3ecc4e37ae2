"""A1111's composable diffusion (``a cat AND a dog :0.5``) for diffusers pipelines.

A1111 runs the model on the negative prompt and on every ``AND`` sub-prompt and combines the
predictions in ``CFGDenoiser.combine_denoised``::

    denoised = uncond + cfg_scale * sum_i(weight_i * (cond_i - uncond))

diffusers' pipelines compute ``uncond + cfg_scale * (cond - uncond)`` from one UNet call on
``[uncond, cond]``. :class:`ComposableGuidance` sits in front of the UNet for one pipeline call
(its ``forward`` is replaced on the instance and restored afterwards, as
``generator._noise_multiplier`` does with ``add_noise``): it runs the UNet on
``[uncond, cond_1, ..., cond_n]`` and hands the pipeline ``[uncond, combined]`` with
``combined = uncond + sum_i(weight_i * (cond_i - uncond))``, so the pipeline's own guidance step
gives A1111's result. Without classifier-free guidance (CFG scale 1) the pipeline asks for the
conditional prediction only, and ``combined`` is returned. Every sub-prompt has its own prompt
editing schedule; the object is also the pipeline's ``callback_on_step_end`` and counts the steps
(from 0 for the steps a call runs, as ``generator._PromptEditor`` does).

Everything else the pipeline hands the UNet with one row per image of the ``[uncond, cond]``
batch (timesteps, ControlNet residuals, SDXL's added conditioning) is extended the same way, the
conditional rows repeated for every sub-prompt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from dreamreel.errors import SettingsError
from dreamreel.pipelines.prompt_syntax import prompt_schedule, split_and
from dreamreel.pipelines.text_encoding import CHUNK_TOKENS, pad_to_chunks

logger = logging.getLogger(__name__)

__all__ = ["ComposableGuidance", "SubPrompt", "composable_parts", "installed"]

Encode = Callable[[str], tuple[torch.Tensor, torch.Tensor]]
"""Encodes one sub-prompt text with the negative prompt: ``(cond, uncond)`` of equal length."""
EncodeBlend = Callable[[tuple[tuple[str, float], ...]], tuple[torch.Tensor, torch.Tensor]]
"""Encodes blended ``(text, weight)`` parts with the negative prompt: ``(cond, uncond)``."""


@dataclass(frozen=True, slots=True)
class SubPrompt:
    """One ``AND`` part: its prompt-editing schedule ``[(end_step, cond)]`` and its weight."""

    schedule: list[tuple[int, torch.Tensor]]
    weight: float

    def at(self, step: int) -> torch.Tensor:
        """The conditioning at a 0-based sampler step (A1111: the first entry with ``step <= end``)."""
        return next((c for end, c in self.schedule if step <= end), self.schedule[-1][1])


def composable_parts(
    prompt: str,
    blend: Sequence[tuple[str, float]],
    steps: int,
    encode: Encode,
    encode_blend: EncodeBlend,
    empty: Callable[[], torch.Tensor],
    *,
    first_pass_steps: int | None = None,
) -> tuple[list[SubPrompt], torch.Tensor] | None:
    """The sub-prompts of a prompt with ``AND``, or None when plain guidance does (one part of weight 1).

    Args:
        prompt: the prompt (LoRA tags removed); used when ``blend`` is empty.
        blend: dreamreel's prompt blending ``(text, weight)`` parts, or empty. With a blend, every
            part must have the same number of ``AND`` sub-prompts; sub-prompt ``j`` is the blend of
            the parts' sub-prompts ``j`` (embeddings mixed with the blend weights, as without
            ``AND``), and its weight is the blend-weighted mean of their weights. Blends have no
            prompt editing (as without ``AND``).
        steps: the steps prompt editing is scheduled over.
        encode: see :data:`Encode`.
        encode_blend: see :data:`EncodeBlend`.
        empty: the encoded empty prompt ``(1, 77, hidden)``, for padding to equal lengths.
        first_pass_steps: in a hires pass, the first pass's steps (see ``prompt_schedule``).

    Returns:
        ``(sub_prompts, uncond)``, all embeddings padded to the same number of chunks; or None.

    Raises:
        SettingsError: blend parts with different numbers of ``AND`` sub-prompts.
    """
    pairs: list[tuple[list[tuple[int, tuple[torch.Tensor, torch.Tensor]]], float]] = []
    if blend:
        splits = [split_and(text) for text, _ in blend]
        counts = {len(s) for s in splits}
        if counts == {1} and all(s[0][1] == 1.0 for s in splits):
            return None
        if len(counts) != 1:
            raise SettingsError(
                "the blended prompts have different numbers of AND sub-prompts "
                f"({', '.join(str(len(s)) for s in splits)}); give every part the same number",
                key="prompt",
            )
        total = sum(float(w) for _, w in blend)
        for j in range(len(splits[0])):
            texts = tuple((s[j][0], float(w)) for s, (_, w) in zip(splits, blend, strict=True))
            if total != 0.0:
                weight = sum(float(w) * s[j][1] for s, (_, w) in zip(splits, blend, strict=True)) / total
            else:
                weight = splits[0][j][1]
            pairs.append(([(steps, encode_blend(texts))], weight))
    else:
        subs = split_and(prompt)
        if len(subs) == 1 and subs[0][1] == 1.0:
            return None
        for text, weight in subs:
            schedule = prompt_schedule(text, steps, first_pass_steps=first_pass_steps)
            pairs.append(([(end, encode(t)) for end, t in schedule], weight))
    chunk = CHUNK_TOKENS + 2
    chunks = max(max(c.shape[1], u.shape[1]) for sched, _ in pairs for _, (c, u) in sched) // chunk
    filler = empty()
    parts = [
        SubPrompt([(end, pad_to_chunks(c, chunks, filler)) for end, (c, _) in sched], weight) for sched, weight in pairs
    ]
    uncond = pad_to_chunks(pairs[0][0][0][1][1], chunks, filler)
    logger.debug("composable diffusion: %d sub-prompts, weights %s", len(parts), [p.weight for p in parts])
    return parts, uncond


class ComposableGuidance:
    """The UNet front and step counter of one composable pipeline call (see the module's docstring).

    Args:
        parts: the sub-prompts, from :func:`composable_parts`.
        uncond: the negative prompt's embedding, ``(1, tokens, hidden)``.
        count: images per call (the batch of the pipeline call).
        cfg: whether the pipeline does classifier-free guidance (CFG scale above 1).
    """

    def __init__(self, parts: Sequence[SubPrompt], uncond: torch.Tensor, count: int, *, cfg: bool) -> None:
        self.parts = list(parts)
        self.uncond = uncond
        self.count = count
        self.cfg = cfg
        self.step = 0

    def __call__(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        """``callback_on_step_end``: the next UNet calls belong to step ``step + 1``."""
        self.step = step + 1
        return callback_kwargs

    def _expand(self, value: Any, batch: int) -> Any:
        """Rows of the pipeline's batch -> rows of ``[uncond, cond_1, ..., cond_n]``."""
        if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == batch:
            n = len(self.parts)
            if self.cfg:
                return torch.cat([value[: self.count], *([value[self.count :]] * n)])
            return torch.cat([value] * (n + 1))
        if isinstance(value, dict):
            return {k: self._expand(v, batch) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._expand(v, batch) for v in value)
        return value

    def _call(self, original: Callable[..., Any], sample: torch.Tensor, args: Any, kwargs: dict[str, Any]) -> Any:
        """``original`` on ``[uncond, cond_1, ..., cond_n]``: the rows extended, the embeddings replaced."""
        batch = sample.shape[0]
        expected = self.count * (2 if self.cfg else 1)
        if batch != expected:
            raise RuntimeError(f"composable diffusion: the UNet got a batch of {batch}, expected {expected}")
        hidden = kwargs.pop("encoder_hidden_states", None)
        if hidden is None:
            hidden, *args = args
        conds = [p.at(self.step).to(device=hidden.device, dtype=hidden.dtype) for p in self.parts]
        uncond = self.uncond.to(device=hidden.device, dtype=hidden.dtype)
        embeds = torch.cat([e.repeat(self.count, 1, 1) for e in (uncond, *conds)])
        return original(
            self._expand(sample, batch),
            *(self._expand(a, batch) for a in args),
            encoder_hidden_states=embeds,
            **{k: self._expand(v, batch) for k, v in kwargs.items()},
        )

    def control(self, original: Callable[..., Any], sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """Run ``original`` (the ControlNet's forward) on all sub-prompts; its residuals then have the rows
        :meth:`forward` runs the UNet on (and are left as they are there)."""
        return self._call(original, sample, args, kwargs)

    def forward(self, original: Callable[..., Any], sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """Run ``original`` (the UNet's forward) on all sub-prompts and combine as A1111 does."""
        result = self._call(original, sample, args, kwargs)
        out: torch.Tensor = result[0] if isinstance(result, tuple) else result.sample
        rows = out.split(self.count)
        eps_uncond = rows[0]
        combined = eps_uncond.clone()
        for part, eps in zip(self.parts, rows[1:], strict=True):
            combined = combined + part.weight * (eps - eps_uncond)
        guided = torch.cat([eps_uncond, combined]) if self.cfg else combined
        if isinstance(result, tuple):
            return (guided, *result[1:])
        return type(result)(sample=guided)


@contextmanager
def installed(guidance: ComposableGuidance | None, unet: Any, controlnet: Any = None) -> Iterator[None]:
    """Put ``guidance`` in front of ``unet`` (and ``controlnet``) for one pipeline call (nothing when None).

    Args:
        guidance: the call's :class:`ComposableGuidance`, or None.
        unet: ``pipe.unet``.
        controlnet: ``pipe.controlnet`` of a ControlNet pipeline (its residuals are computed for every
            sub-prompt, as A1111's ControlNet runs on the whole conditioning batch), or None.
    """
    if guidance is None:
        yield
        return
    with _wrapped(unet, guidance.forward), _wrapped(controlnet, guidance.control):
        yield


@contextmanager
def _wrapped(module: Any, front: Callable[..., Any]) -> Iterator[None]:
    """``module.forward`` replaced on the instance by ``front(original, ...)``, restored afterwards."""
    if module is None:
        yield
        return
    had_own = "forward" in vars(module)  # e.g. an accelerate offload hook
    original = module.forward

    def forward(sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return front(original, sample, *args, **kwargs)

    module.forward = forward
    try:
        yield
    finally:
        if had_own:
            module.forward = original
        else:
            del module.forward
