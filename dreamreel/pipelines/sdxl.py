"""SDXL conditioning the way AUTOMATIC1111 builds it, for diffusers' SDXL pipelines.

A1111 (``modules/sd_hijack_clip.py``, ``modules/sd_models_xl.py``) runs its SD 1.x prompt machinery on
each of SDXL's two text encoders and joins the results:

* each prompt is split into 75-token chunks (``BREAK``, comma backtrack) and weighted with the
  attention syntax (``(word:1.5)``; each chunk's mean restored), per encoder, exactly as
  :mod:`dreamreel.pipelines.text_encoding` does for SD 1.x;
* each encoder's hidden states come from its penultimate layer without the final layer norm (SGM's
  ``layer="hidden", layer_idx=11`` for CLIP-L, ``layer="penultimate"`` for OpenCLIP-G); A1111 ignores
  "Clip skip" on SDXL unless its ``sdxl_clip_l_skip`` option is set, and so does dreamreel;
* the two are concatenated on the feature axis, chunk by chunk (768 + 1280 = 2048 in real SDXL);
* the pooled embedding is the G encoder's projected EOS output of the **first** chunk, unweighted
  (``zs[0].pooled`` in ``sd_hijack_clip.TextConditionalModel.forward``);
* an empty negative prompt is encoded as zeros, embeddings and pooled vector alike
  (``force_zero_embeddings = ["txt"]`` in ``sd_models_xl.get_learned_conditioning``);
* the size conditioning is the image's ``(height, width)`` as original and target size, crop
  ``(0, 0)`` (``sdxl_crop_top``/``sdxl_crop_left`` default 0).

The G tokenizer pads with token 0 after the first EOS (OpenCLIP's padding, A1111's ``id_pad = 0``),
which is what diffusers' ``tokenizer_2`` (``pad_token="!"``) gives. SDXL embeddings hold one tensor per
encoder (``clip_l``, ``clip_g``); :func:`load_sdxl_embedding` adds both.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dreamreel.errors import ModelLoadError, SettingsError
from dreamreel.pipelines import safety
from dreamreel.pipelines.text_encoding import CHUNK_TOKENS, Prompt, pad_to_chunks, tokenize_chunks

logger = logging.getLogger(__name__)

__all__ = ["SdxlConditioner", "encode_sdxl_prompt", "is_sdxl", "load_sdxl_embedding", "size_conditioning"]

_CACHE = 32
"""Encoded texts kept by a :class:`SdxlConditioner`."""


def is_sdxl(pipe: Any) -> bool:
    """Whether ``pipe`` is an SDXL pipeline (it has a second text encoder)."""
    return getattr(pipe, "text_encoder_2", None) is not None


def _emphasis(z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A1111's "Original" emphasis: scale each token, then restore each chunk's mean."""
    if torch.all(weights == 1.0):
        return z
    original_mean = z.mean(dim=(1, 2), keepdim=True)
    z = z * weights[..., None]
    new_mean = z.mean(dim=(1, 2), keepdim=True)
    safe = new_mean != 0
    return z * torch.where(safe, original_mean / torch.where(safe, new_mean, 1.0), 1.0)


def _encode_one(text: str, tokenizer: Any, text_encoder: Any, *, pooled: bool) -> tuple[torch.Tensor, Any]:
    """(1, 77 * chunks, hidden) penultimate-layer states of one encoder, weighted; with ``pooled``, also
    the projected pooled output of the first chunk, (1, projection_dim)."""
    chunks = tokenize_chunks(text, tokenizer)
    device = text_encoder.device
    ids = torch.tensor([c.tokens for c in chunks], dtype=torch.long, device=device)
    weights = torch.tensor([c.weights for c in chunks], dtype=torch.float32, device=device)
    if int(text_encoder.config.num_hidden_layers) < 2:
        raise SettingsError("an SDXL text encoder needs at least 2 layers", key="model")
    with torch.no_grad():
        out = text_encoder(ids, output_hidden_states=True)
    z = _emphasis(out.hidden_states[-2].float(), weights)
    first = out.text_embeds[:1].float() if pooled else None
    return z.reshape(1, -1, z.shape[-1]), first


def encode_sdxl_prompt(text: str, pipe: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode one prompt for SDXL as A1111 does (see the module docstring).

    Args:
        text: the prompt, with attention syntax and ``BREAK`` (prompt editing and LoRA tags resolved).
        pipe: an SDXL pipeline (``tokenizer``, ``text_encoder``, ``tokenizer_2``, ``text_encoder_2``).

    Returns:
        ``(embeds, pooled)``: float32 ``(1, 77 * chunks, hidden_l + hidden_g)`` and
        ``(1, projection_dim)``, on the second text encoder's device.
    """
    z_l, _ = _encode_one(text, pipe.tokenizer, pipe.text_encoder, pooled=False)
    z_g, pooled = _encode_one(text, pipe.tokenizer_2, pipe.text_encoder_2, pooled=True)
    z_l = z_l.to(z_g.device)
    if z_l.shape[1] != z_g.shape[1]:  # the tokenizers split differently: pad the shorter one, A1111-style
        z_l, z_g = _pad_pair(z_l, z_g, pipe)
    return torch.cat([z_l, z_g], dim=-1), pooled


def _pad_pair(z_l: torch.Tensor, z_g: torch.Tensor, pipe: Any) -> tuple[torch.Tensor, torch.Tensor]:
    chunks = max(z_l.shape[1], z_g.shape[1]) // (CHUNK_TOKENS + 2)
    empty_l, _ = _encode_one("", pipe.tokenizer, pipe.text_encoder, pooled=False)
    empty_g, _ = _encode_one("", pipe.tokenizer_2, pipe.text_encoder_2, pooled=False)
    return pad_to_chunks(z_l, chunks, empty_l.to(z_g.device)), pad_to_chunks(z_g, chunks, empty_g)


def size_conditioning(height: int, width: int) -> dict[str, Any]:
    """SDXL's micro-conditioning as A1111 sets it: original and target size ``(height, width)``, crop (0, 0)."""
    size = (int(height), int(width))
    return {"original_size": size, "target_size": size, "crops_coords_top_left": (0, 0)}


class SdxlConditioner:
    """Encodes prompts for an SDXL pipeline, with a small cache of encoded texts.

    Args:
        pipe: the SDXL txt2img pipeline whose tokenizers and text encoders to use.
    """

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self._texts: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def clear(self) -> None:
        """Forget the cached encodings (after a LoRA or an embedding changed the text encoders)."""
        self._texts.clear()

    def text(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(embeds, pooled)`` of one prompt text (see :func:`encode_sdxl_prompt`), cached."""
        if text in self._texts:
            self._texts.move_to_end(text)
            return self._texts[text]
        encoded = encode_sdxl_prompt(text, self.pipe)
        self._texts[text] = encoded
        if len(self._texts) > _CACHE:
            self._texts.popitem(last=False)
        return encoded

    def prompt(self, prompt: Prompt, *, negative: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(embeds, pooled)`` of a text or of ``(text, weight)`` parts (a weighted sum of both tensors,
        the weights as given). An empty negative text gives zeros (A1111's ``force_zero_embeddings``)."""
        if isinstance(prompt, str):
            embeds, pooled = self.text(prompt)
            if negative and prompt == "":
                return torch.zeros_like(embeds), torch.zeros_like(pooled)
            return embeds, pooled
        if not prompt:
            raise SettingsError("a prompt blend needs at least one (prompt, weight) part", key="prompt")
        encoded = [self.text(text) for text, _ in prompt]
        chunks = max(e.shape[1] for e, _ in encoded) // (CHUNK_TOKENS + 2)
        empty = self.text("")[0]
        weights = [float(w) for _, w in prompt]
        embeds = torch.stack(
            [w * pad_to_chunks(e, chunks, empty) for w, (e, _) in zip(weights, encoded, strict=True)]
        ).sum(0)
        pooled = torch.stack([w * p for w, (_, p) in zip(weights, encoded, strict=True)]).sum(0)
        return embeds, pooled

    def pair(self, prompt: Prompt, negative: Prompt) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cond, uncond)`` embeddings padded to the same number of chunks with the empty prompt's chunk,
        in the text encoders' dtype (for ``prompt_embeds=`` / ``negative_prompt_embeds=``)."""
        cond, _ = self.prompt(prompt)
        uncond, _ = self.prompt(negative, negative=True)
        if cond.shape[1] != uncond.shape[1]:
            chunks = max(cond.shape[1], uncond.shape[1]) // (CHUNK_TOKENS + 2)
            empty = self.text("")[0]
            cond, uncond = pad_to_chunks(cond, chunks, empty), pad_to_chunks(uncond, chunks, empty)
        dtype = self.pipe.text_encoder_2.dtype
        return cond.to(dtype), uncond.to(dtype)

    def call_kwargs(self, prompt: Prompt, negative: Prompt, *, height: int, width: int, count: int) -> dict[str, Any]:
        """The SDXL-only pipeline arguments: pooled embeddings (of ``prompt``'s first chunk) and the size
        conditioning of a ``height`` x ``width`` image, for a batch of ``count``."""
        dtype = self.pipe.text_encoder_2.dtype
        pooled = self.prompt(prompt)[1].to(dtype).repeat(count, 1)
        negative_pooled = self.prompt(negative, negative=True)[1].to(dtype).repeat(count, 1)
        kwargs: dict[str, Any] = {"pooled_prompt_embeds": pooled, "negative_pooled_prompt_embeds": negative_pooled}
        kwargs.update(size_conditioning(height, width))
        return kwargs


def first_prompt(parts: Sequence[tuple[str, float]], scheduled: Sequence[tuple[int, str]]) -> Prompt:
    """The prompt whose pooled embedding a call uses: the blend's parts, else the first scheduled text."""
    return list(parts) if parts else scheduled[0][1]


def load_sdxl_embedding(pipe: Any, path: Path, token: str) -> None:
    """Load an SDXL textual-inversion embedding (A1111's ``clip_l`` and ``clip_g`` tensors) into both
    tokenizers and text encoders of ``pipe`` under ``token``.

    Raises:
        ModelLoadError: the file has no ``clip_l``/``clip_g`` tensors (an SD 1.x/2.x embedding?) or does not fit.
    """
    state = safety.load_state_dict(Path(path))
    if not all(isinstance(state.get(key), torch.Tensor) for key in ("clip_l", "clip_g")):
        raise ModelLoadError(
            f"{path} is not an SDXL embedding (it needs 'clip_l' and 'clip_g' tensors, it has {sorted(state)[:5]})"
        )
    for key, suffix in (("clip_l", ""), ("clip_g", "_2")):
        pipe.load_textual_inversion(
            state[key],
            token=token,
            text_encoder=getattr(pipe, "text_encoder" + suffix),
            tokenizer=getattr(pipe, "tokenizer" + suffix),
        )
