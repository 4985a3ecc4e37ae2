"""Encode prompts into CLIP embeddings the way AUTOMATIC1111 does.

What differs from ``pipe.encode_prompt`` in diffusers:

* attention weights ``(word:1.5)`` scale each token's embedding, then the chunk's mean is restored
  (``z * (original_mean / new_mean)``), as A1111's default "Original" emphasis mode;
* prompts longer than 75 tokens are not truncated: they are split into chunks of 75 tokens, each
  encoded as its own 77-token sequence (BOS + 75 + EOS) and concatenated along the sequence axis;
  when a chunk overflows, the tokens after the last comma in its final 20 tokens move to the next
  chunk; ``BREAK`` starts a new chunk;
* ``clip_skip`` uses A1111's numbering (1 = last layer, 2 = the penultimate layer + final norm).

A prompt with no special syntax and at most 75 tokens gives exactly diffusers' ``encode_prompt``
result. Textual-inversion tokens added with ``pipe.load_textual_inversion`` work (multi-vector
tokens are expanded like diffusers does). The results feed ``prompt_embeds=`` and
``negative_prompt_embeds=`` of any Stable Diffusion 1.x/2.x pipeline.

Order of processing for a prompt: :func:`~dreamreel.pipelines.prompt_syntax.extract_lora_tags`,
then :func:`~dreamreel.pipelines.prompt_syntax.prompt_schedule`, then the functions here on each
scheduled text.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from dreamreel.errors import SettingsError
from dreamreel.pipelines.prompt_syntax import BREAK, parse_prompt_attention

logger = logging.getLogger(__name__)

__all__ = ["PromptChunk", "encode_blend", "encode_pair", "encode_prompt", "pad_to_chunks", "tokenize_chunks"]

CHUNK_TOKENS = 75
"""Tokens per chunk, without BOS and EOS."""
COMMA_BACKTRACK = 20
"""A1111's "Increase coherency by padding from the last comma within n tokens" default."""

Prompt = str | Sequence[tuple[str, float]]
"""A prompt text, or ``(text, weight)`` parts to blend (see :func:`encode_blend`)."""


@dataclass(slots=True)
class PromptChunk:
    """One 77-token CLIP input: BOS, 75 tokens (padded), EOS, with a weight per position."""

    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


class _ChunkBuilder:
    """Fills chunks of 75 tokens the way A1111's ``tokenize_line`` does."""

    def __init__(self, bos: int, eos: int, pad: int, comma: int | None) -> None:
        self.bos, self.eos, self.pad, self.comma = bos, eos, pad, comma
        self.chunks: list[PromptChunk] = []
        self.current = PromptChunk()
        self.last_comma = -1

    def close(self) -> None:
        """Finish the current chunk: BOS, tokens, EOS, padding (diffusers' and A1111's layout)."""
        chunk = self.current
        missing = CHUNK_TOKENS - len(chunk.tokens)
        chunk.tokens = [self.bos, *chunk.tokens, self.eos, *([self.pad] * missing)]
        chunk.weights = [1.0, *chunk.weights, 1.0, *([1.0] * missing)]
        self.chunks.append(chunk)
        self.current = PromptChunk()
        self.last_comma = -1

    def add(self, token: int, weight: float) -> None:
        """Append a token. When the chunk is full and a comma is among its last 20 tokens, the
        tokens after that comma move to the next chunk (A1111's comma backtrack)."""
        chunk = self.current
        if token == self.comma:
            self.last_comma = len(chunk.tokens)
        elif (
            len(chunk.tokens) == CHUNK_TOKENS
            and self.last_comma != -1
            and len(chunk.tokens) - self.last_comma <= COMMA_BACKTRACK
        ):
            cut = self.last_comma + 1
            moved = chunk.tokens[cut:], chunk.weights[cut:]
            del chunk.tokens[cut:], chunk.weights[cut:]
            self.close()
            self.current.tokens, self.current.weights = list(moved[0]), list(moved[1])
        if len(self.current.tokens) == CHUNK_TOKENS:
            self.close()
        self.current.tokens.append(token)
        self.current.weights.append(weight)

    def finish(self) -> list[PromptChunk]:
        if self.current.tokens or not self.chunks:
            self.close()
        return self.chunks


def _special_ids(tokenizer: Any) -> tuple[int, int, int, int | None]:
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is None or eos is None:
        raise SettingsError("the tokenizer has no BOS/EOS token; a CLIP tokenizer is needed", key="tokenizer")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    comma = tokenizer.get_vocab().get(",</w>")
    return bos, eos, pad, comma


def _multi_vector_ids(tokenizer: Any) -> dict[int, list[int]]:
    """Textual-inversion tokens ``<t>`` with extra vectors ``<t>_1``, ``<t>_2``, ... (diffusers' layout)."""
    added = tokenizer.get_added_vocab()
    extra: dict[int, list[int]] = {}
    for token, token_id in added.items():
        ids, index = [], 1
        while f"{token}_{index}" in added:
            ids.append(added[f"{token}_{index}"])
            index += 1
        if ids:
            extra[token_id] = ids
    return extra


def tokenize_chunks(text: str, tokenizer: Any) -> list[PromptChunk]:
    """Split a prompt (attention syntax allowed) into weighted 77-token chunks, A1111 style.

    Args:
        text: one prompt text (prompt editing already resolved, no LoRA tags).
        tokenizer: a CLIP tokenizer (e.g. ``pipe.tokenizer``).

    Returns:
        At least one chunk; each has 77 tokens and 77 weights.
    """
    runs = parse_prompt_attention(text)
    texts = [run for run, weight in runs if (run, weight) != BREAK]
    encoded = tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"] if texts else []
    multi = _multi_vector_ids(tokenizer)
    builder = _ChunkBuilder(*_special_ids(tokenizer))
    ids_iter = iter(encoded)
    for run in runs:
        if run == BREAK:
            builder.close()
            continue
        weight = run[1]
        for token in next(ids_iter):
            for piece in (token, *multi.get(token, ())):
                builder.add(piece, weight)
    return builder.finish()


def _hidden_states(ids: torch.Tensor, text_encoder: Any, clip_skip: int) -> torch.Tensor:
    layers = int(text_encoder.config.num_hidden_layers)
    if not 1 <= clip_skip <= layers:
        raise SettingsError(
            f"clip_skip must be between 1 (last layer) and {layers} for this text encoder, got {clip_skip}",
            key="clip_skip",
        )
    if clip_skip == 1:
        last: torch.Tensor = text_encoder(ids)[0]
        return last
    out = text_encoder(ids, output_hidden_states=True)
    # transformers >= 5.6 flattened CLIPTextModel: final_layer_norm is on the model itself.
    final_norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm
    normed: torch.Tensor = final_norm(out.hidden_states[-clip_skip])
    return normed


def _resolve(text_encoder: Any, device: Any, dtype: torch.dtype | None) -> tuple[torch.device, torch.dtype]:
    out_device = torch.device(device) if device is not None else text_encoder.device
    return out_device, dtype if dtype is not None else text_encoder.dtype


def encode_prompt(
    text: str,
    tokenizer: Any,
    text_encoder: Any,
    *,
    clip_skip: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Encode one prompt A1111 style.

    Args:
        text: the prompt, with attention syntax and ``BREAK``.
        tokenizer: ``pipe.tokenizer``.
        text_encoder: ``pipe.text_encoder`` (a ``CLIPTextModel``).
        clip_skip: A1111's "Clip skip": 1 uses the last layer, 2 the penultimate one (then the
            final layer norm). This is diffusers' ``clip_skip`` + 1.
        device: where the result goes (default: the text encoder's device).
        dtype: the result's dtype (default: the text encoder's dtype).

    Returns:
        A tensor of shape ``(1, 77 * chunks, hidden_size)``.

    Raises:
        SettingsError: ``clip_skip`` out of range for the text encoder.
    """
    chunks = tokenize_chunks(text, tokenizer)
    encoder_device = text_encoder.device
    ids = torch.tensor([c.tokens for c in chunks], dtype=torch.long, device=encoder_device)
    weights = torch.tensor([c.weights for c in chunks], dtype=torch.float32, device=encoder_device)
    with torch.no_grad():
        z = _hidden_states(ids, text_encoder, clip_skip).float()
    if not torch.all(weights == 1.0):
        original_mean = z.mean(dim=(1, 2), keepdim=True)
        z = z * weights[..., None]
        new_mean = z.mean(dim=(1, 2), keepdim=True)
        safe = new_mean != 0
        z = z * torch.where(safe, original_mean / torch.where(safe, new_mean, 1.0), 1.0)
    out_device, out_dtype = _resolve(text_encoder, device, dtype)
    return z.reshape(1, -1, z.shape[-1]).to(device=out_device, dtype=out_dtype)


def pad_to_chunks(embeds: torch.Tensor, chunks: int, empty: torch.Tensor) -> torch.Tensor:
    """Append copies of the empty prompt's chunk until ``embeds`` has ``chunks`` chunks (A1111).

    Args:
        embeds: ``(1, 77 * k, hidden)`` with ``k <= chunks``.
        chunks: the wanted number of chunks.
        empty: the encoded empty prompt, ``(1, 77, hidden)`` (``encode_prompt("", ...)``).

    Returns:
        ``(1, 77 * chunks, hidden)``.
    """
    have = embeds.shape[1] // empty.shape[1]
    if have >= chunks:
        return embeds
    filler = empty.to(device=embeds.device, dtype=embeds.dtype).repeat(1, chunks - have, 1)
    return torch.cat([embeds, filler], dim=1)


def encode_blend(
    parts: Sequence[tuple[str, float]],
    tokenizer: Any,
    text_encoder: Any,
    *,
    clip_skip: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Weighted sum of the embeddings of several prompts (Deforum-style prompt blending).

    The weights are used as given (not normalised). Parts with fewer chunks are padded with the
    empty prompt's chunk first.

    Args:
        parts: ``(prompt, weight)`` pairs, at least one.
        tokenizer: ``pipe.tokenizer``.
        text_encoder: ``pipe.text_encoder``.
        clip_skip: as in :func:`encode_prompt`.
        device: as in :func:`encode_prompt`.
        dtype: as in :func:`encode_prompt`.

    Returns:
        ``(1, 77 * max_chunks, hidden)``.

    Raises:
        SettingsError: ``parts`` is empty.
    """
    if not parts:
        raise SettingsError("a prompt blend needs at least one (prompt, weight) part", key="prompt")
    kwargs: dict[str, Any] = {"clip_skip": clip_skip, "device": device, "dtype": torch.float32}
    encoded = [encode_prompt(text, tokenizer, text_encoder, **kwargs) for text, _ in parts]
    chunks = max(e.shape[1] for e in encoded) // (CHUNK_TOKENS + 2)
    if any(e.shape[1] != encoded[0].shape[1] for e in encoded):
        empty = encode_prompt("", tokenizer, text_encoder, **kwargs)
        encoded = [pad_to_chunks(e, chunks, empty) for e in encoded]
    total = sum(float(weight) * e for e, (_, weight) in zip(encoded, parts, strict=True))
    assert isinstance(total, torch.Tensor)  # parts is not empty
    out_device, out_dtype = _resolve(text_encoder, device, dtype)
    return total.to(device=out_device, dtype=out_dtype)


def encode_pair(
    prompt: Prompt,
    negative: Prompt,
    tokenizer: Any,
    text_encoder: Any,
    *,
    clip_skip: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode a prompt and its negative prompt to equal lengths, for ``prompt_embeds=`` and
    ``negative_prompt_embeds=``.

    The shorter one is padded with the empty prompt's chunk, as A1111 does.

    Args:
        prompt: a prompt text, or ``(text, weight)`` parts to blend.
        negative: the negative prompt, text or parts.
        tokenizer: ``pipe.tokenizer``.
        text_encoder: ``pipe.text_encoder``.
        clip_skip: as in :func:`encode_prompt`.
        device: as in :func:`encode_prompt`.
        dtype: as in :func:`encode_prompt`.

    Returns:
        ``(cond, uncond)``, both ``(1, 77 * k, hidden)`` with the same ``k``.
    """
    kwargs: dict[str, Any] = {"clip_skip": clip_skip, "device": device, "dtype": dtype}

    def one(p: Prompt) -> torch.Tensor:
        if isinstance(p, str):
            return encode_prompt(p, tokenizer, text_encoder, **kwargs)
        return encode_blend(p, tokenizer, text_encoder, **kwargs)

    cond, uncond = one(prompt), one(negative)
    if cond.shape[1] != uncond.shape[1]:
        chunks = max(cond.shape[1], uncond.shape[1]) // (CHUNK_TOKENS + 2)
        empty = encode_prompt("", tokenizer, text_encoder, **kwargs)
        cond, uncond = pad_to_chunks(cond, chunks, empty), pad_to_chunks(uncond, chunks, empty)
    return cond, uncond
