"""A1111-style prompt encoding, checked against diffusers' own encode_prompt on a tiny CLIP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from dreamreel.errors import SettingsError
from dreamreel.pipelines.text_encoding import (
    encode_blend,
    encode_pair,
    encode_prompt,
    pad_to_chunks,
    tokenize_chunks,
)

MERGES = [("a", "n"), ("an", "d</w>"), ("c", "a"), ("ca", "t</w>"), ("t", "h"), ("th", "e</w>"), ("o", "g</w>")]
MERGES += [("d", "og</w>")]


def _byte_chars() -> list[str]:
    """GPT-2/CLIP byte-to-unicode table: every byte gets a printable character."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(keep), 0
    for byte in range(256):
        if byte not in keep:
            keep.append(byte)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def tiny_tokenizer(directory: Path) -> CLIPTokenizer:
    """A byte-level CLIP BPE tokenizer written to disk (no download): cat, dog, the, and are one token."""
    chars = _byte_chars()
    vocab = [*chars, *(c + "</w>" for c in chars), *(a + b for a, b in MERGES), "<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    merges = "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in MERGES) + "\n"
    (directory / "merges.txt").write_text(merges, encoding="utf-8")
    return CLIPTokenizer(
        str(directory / "vocab.json"),
        str(directory / "merges.txt"),
        pad_token="<|endoftext|>",
        model_max_length=77,
    )


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> StableDiffusionPipeline:
    tok = tiny_tokenizer(tmp_path_factory.mktemp("tok"))
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=3,
            vocab_size=len(tok),
            max_position_embeddings=77,
            projection_dim=32,
        )
    ).eval()
    with torch.no_grad():  # a fresh LayerNorm gives zero-mean tokens; CLIP's trained one does not
        text_encoder.final_layer_norm.bias.normal_(0.3, 0.2)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=1,
    )
    vae = AutoencoderKL(
        block_out_channels=[4, 8],
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=2,
    )
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False)
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def ours(pipe: StableDiffusionPipeline, text: str, **kwargs: object) -> torch.Tensor:
    return encode_prompt(text, pipe.tokenizer, pipe.text_encoder, **kwargs)


def diffusers_embeds(pipe: StableDiffusionPipeline, text: str) -> torch.Tensor:
    with torch.no_grad():
        return pipe.encode_prompt(text, "cpu", 1, False)[0]


@pytest.mark.parametrize("text", ["the cat and dog", "", "cat " * 75])
def test_plain_prompt_equals_diffusers(pipe: StableDiffusionPipeline, text: str) -> None:
    embeds = ours(pipe, text)
    assert embeds.shape == (1, 77, 32)
    torch.testing.assert_close(embeds, diffusers_embeds(pipe, text), rtol=0, atol=1e-6)


def test_weight_scales_the_token_relative_to_the_others(pipe: StableDiffusionPipeline) -> None:
    plain = ours(pipe, "the cat and dog")[0]
    weighted = ours(pipe, "the (cat:1.5) and dog")[0]
    cat = 2  # BOS, the, cat
    others = [i for i in range(77) if i != cat]
    # mean restore multiplies everything by one scalar c = original_mean / new_mean
    scale = plain.mean() / (plain.mean() + 0.5 * plain[cat].mean() / 77)
    torch.testing.assert_close(weighted[others], scale * plain[others], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(weighted[cat], 1.5 * scale * plain[cat], rtol=1e-4, atol=1e-6)
    assert not torch.allclose(weighted[cat], plain[cat], atol=1e-3)


def test_de_emphasis_and_nesting(pipe: StableDiffusionPipeline) -> None:
    plain = ours(pipe, "the cat")[0]
    for text, factor in [("the [cat]", 1 / 1.1), ("the ((cat))", 1.21)]:
        weighted = ours(pipe, text)[0]
        ratio = weighted[1] / plain[1]  # "the": scaled only by the mean restore
        torch.testing.assert_close(weighted[2] / plain[2], factor * ratio, rtol=1e-3, atol=1e-4)


def test_long_prompt_makes_two_chunks_and_keeps_the_tail(pipe: StableDiffusionPipeline) -> None:
    text = "cat " * 80 + "dog " * 20
    embeds = ours(pipe, text)
    assert embeds.shape == (1, 154, 32)
    # the first chunk is what diffusers gives after truncating to 75 tokens
    torch.testing.assert_close(embeds[:, :77], diffusers_embeds(pipe, text), rtol=0, atol=1e-6)
    # the second chunk holds the 25 remaining tokens, encoded on their own
    torch.testing.assert_close(embeds[:, 77:], ours(pipe, "cat " * 5 + "dog " * 20), rtol=0, atol=1e-6)


def test_chunk_layout_and_comma_backtrack(pipe: StableDiffusionPipeline) -> None:
    tok = pipe.tokenizer
    cat, dog, comma = (tok.convert_tokens_to_ids(t) for t in ("cat</w>", "dog</w>", ",</w>"))
    chunks = tokenize_chunks("cat " * 70 + ", " + "dog " * 10, tok)
    assert len(chunks) == 2
    first, second = chunks[0].tokens, chunks[1].tokens
    assert all(len(c.tokens) == 77 and len(c.weights) == 77 for c in chunks)
    # the comma was within 20 tokens of the end: the dogs after it moved to the second chunk
    assert first[:72] == [tok.bos_token_id, *[cat] * 70, comma]
    assert first[72:] == [tok.eos_token_id] * 5
    assert second[:12] == [tok.bos_token_id, *[dog] * 10, tok.eos_token_id]
    assert second[12:] == [tok.pad_token_id] * 65


def test_no_backtrack_when_the_comma_is_far(pipe: StableDiffusionPipeline) -> None:
    tok = pipe.tokenizer
    cat = tok.convert_tokens_to_ids("cat</w>")
    chunks = tokenize_chunks("cat " * 10 + ", " + "cat " * 70, tok)
    assert len(chunks) == 2
    assert chunks[0].tokens[-2] == cat  # the chunk is filled to 75 tokens
    assert chunks[1].tokens[:8] == [tok.bos_token_id, *[cat] * 6, tok.eos_token_id]


def test_break_starts_a_new_chunk(pipe: StableDiffusionPipeline) -> None:
    embeds = ours(pipe, "the cat BREAK dog")
    assert embeds.shape == (1, 154, 32)
    torch.testing.assert_close(embeds[:, :77], ours(pipe, "the cat"), rtol=0, atol=1e-6)
    torch.testing.assert_close(embeds[:, 77:], ours(pipe, "dog"), rtol=0, atol=1e-6)


def test_weights_follow_tokens_into_chunks(pipe: StableDiffusionPipeline) -> None:
    chunks = tokenize_chunks("(the cat:1.3) BREAK [dog]", pipe.tokenizer)
    assert chunks[0].weights[:4] == [1.0, 1.3, 1.3, 1.0]
    assert chunks[1].weights[:3] == pytest.approx([1.0, 1 / 1.1, 1.0])


def test_pair_is_padded_to_the_same_length(pipe: StableDiffusionPipeline) -> None:
    cond, uncond = encode_pair("cat " * 100, "dog", pipe.tokenizer, pipe.text_encoder)
    assert cond.shape == uncond.shape == (1, 154, 32)
    torch.testing.assert_close(uncond[:, :77], ours(pipe, "dog"), rtol=0, atol=1e-6)
    torch.testing.assert_close(uncond[:, 77:], ours(pipe, ""), rtol=0, atol=1e-6)
    cond2, uncond2 = encode_pair("dog", "cat " * 100, pipe.tokenizer, pipe.text_encoder)
    assert cond2.shape == uncond2.shape == (1, 154, 32)


def test_blend_of_two_halves_is_the_mean(pipe: StableDiffusionPipeline) -> None:
    a, b = ours(pipe, "the cat"), ours(pipe, "the dog")
    blend = encode_blend([("the cat", 0.5), ("the dog", 0.5)], pipe.tokenizer, pipe.text_encoder)
    torch.testing.assert_close(blend, (a + b) / 2, rtol=0, atol=1e-6)
    weighted = encode_blend([("the cat", 0.25), ("the dog", 0.75)], pipe.tokenizer, pipe.text_encoder)
    torch.testing.assert_close(weighted, 0.25 * a + 0.75 * b, rtol=0, atol=1e-6)


def test_blend_pads_parts_and_pair_accepts_parts(pipe: StableDiffusionPipeline) -> None:
    long_text = "cat " * 100
    blend = encode_blend([(long_text, 0.5), ("dog", 0.5)], pipe.tokenizer, pipe.text_encoder)
    assert blend.shape == (1, 154, 32)
    expected_tail = 0.5 * ours(pipe, long_text)[:, 77:] + 0.5 * ours(pipe, "")
    torch.testing.assert_close(blend[:, 77:], expected_tail, rtol=0, atol=1e-6)
    cond, uncond = encode_pair([("the cat", 1.0)], "", pipe.tokenizer, pipe.text_encoder)
    torch.testing.assert_close(cond, ours(pipe, "the cat"), rtol=0, atol=1e-6)
    assert uncond.shape == cond.shape
    with pytest.raises(SettingsError, match="at least one"):
        encode_blend([], pipe.tokenizer, pipe.text_encoder)


def test_clip_skip_uses_the_penultimate_layer_with_final_norm(pipe: StableDiffusionPipeline) -> None:
    te = pipe.text_encoder
    ids = torch.tensor([tokenize_chunks("the cat", pipe.tokenizer)[0].tokens])
    with torch.no_grad():
        hidden = te(ids, output_hidden_states=True).hidden_states
        expected = te.final_layer_norm(hidden[-2])
    skipped = ours(pipe, "the cat", clip_skip=2)
    torch.testing.assert_close(skipped, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(skipped, ours(pipe, "the cat"), atol=1e-3)
    with pytest.raises(SettingsError, match="clip_skip"):
        ours(pipe, "the cat", clip_skip=4)
    with pytest.raises(SettingsError, match="clip_skip"):
        ours(pipe, "the cat", clip_skip=0)


def test_dtype_and_device(pipe: StableDiffusionPipeline) -> None:
    embeds = ours(pipe, "the (cat:1.2)", dtype=torch.float16, device="cpu")
    assert embeds.dtype == torch.float16 and embeds.device.type == "cpu"
    assert torch.isfinite(embeds).all()


def test_pad_to_chunks_appends_empty_chunks(pipe: StableDiffusionPipeline) -> None:
    empty = ours(pipe, "")
    padded = pad_to_chunks(ours(pipe, "dog"), 3, empty)
    assert padded.shape == (1, 231, 32)
    torch.testing.assert_close(padded[:, 154:], empty, rtol=0, atol=0)
    long_embeds = ours(pipe, "cat " * 100)
    assert pad_to_chunks(long_embeds, 1, empty) is long_embeds


def test_textual_inversion_tokens(pipe: StableDiffusionPipeline) -> None:
    torch.manual_seed(1)
    pipe.load_textual_inversion({"<toy>": torch.randn(3, 32)}, token="<toy>")
    tok = pipe.tokenizer
    toy_ids = [tok.convert_tokens_to_ids(t) for t in ("<toy>", "<toy>_1", "<toy>_2")]
    chunk = tokenize_chunks("a (<toy>:1.2) dog", tok)[0]
    assert chunk.tokens[2:5] == toy_ids
    assert chunk.weights[2:5] == [1.2, 1.2, 1.2]
    # the multi-vector token expands exactly as diffusers expands it
    torch.testing.assert_close(ours(pipe, "a <toy> dog"), diffusers_embeds(pipe, "a <toy> dog"), rtol=0, atol=1e-6)
