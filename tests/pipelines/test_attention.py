"""Cross-frame attention: exact on/off, first frame untouched, later frames attend, CFG halves paired."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import (
    ControlNetModel,
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
)
from PIL import Image

from dreamreel.errors import SettingsError
from dreamreel.pipelines.attention import (
    CrossFrameAttnProcessor,
    _match_batch,
    _nearest,
    cross_frame_attention,
    cross_frame_layers,
    cross_frame_state,
    disable_cross_frame_attention,
    enable_cross_frame_attention,
)
from dreamreel.testing import TINY_PROMPT

STEPS = 3
# the tiny UNet at 64x64: 8x8 latents, up_blocks.0 runs at 4x4 tokens with 64 channels
UP_TOKENS, UP_CHANNELS = 16, 64


@pytest.fixture(scope="module")
def pipe(tiny_model_dir: Path) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(
        tiny_model_dir, local_files_only=True, safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def attn1_names(unet: Any, prefix: str = "") -> list[str]:
    return [n for n in unet.attn_processors if n.startswith(prefix) and n.endswith(".attn1.processor")]


def run(pipe: Any, seed: int, **kwargs: Any) -> np.ndarray:
    kwargs.setdefault("num_inference_steps", STEPS)
    if "image" not in kwargs:
        kwargs.update(height=64, width=64)
    generator = torch.Generator("cpu").manual_seed(seed)
    out = pipe(TINY_PROMPT, negative_prompt="blue", generator=generator, output_type="np", **kwargs)
    return np.asarray(out.images[0])


@contextmanager
def attention_outputs(unet: Any) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Collect every self-attention layer's output, per UNet call, while the block runs."""
    outputs: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for name in attn1_names(unet):
        outputs[name] = []
        module = unet.get_submodule(name.removesuffix(".processor"))
        hooks.append(module.register_forward_hook(lambda _m, _a, out, key=name: outputs[key].append(out.clone())))
    try:
        yield outputs
    finally:
        for hook in hooks:
            hook.remove()


@pytest.fixture(scope="module")
def plain(pipe: StableDiffusionPipeline) -> dict[int, tuple[np.ndarray, dict[str, list[torch.Tensor]]]]:
    """Seed -> (image, self-attention outputs) without cross-frame attention."""
    result = {}
    for seed in (1, 2):
        with attention_outputs(pipe.unet) as outputs:
            result[seed] = (run(pipe, seed), outputs)
    return result


def test_enable_then_disable_restores_everything(pipe: StableDiffusionPipeline, plain: dict) -> None:
    unet = pipe.unet
    before = dict(unet.attn_processors)
    pre_hooks = len(unet._forward_pre_hooks)
    state = enable_cross_frame_attention(unet)
    try:
        assert cross_frame_state(unet) is state
        after = unet.attn_processors
        changed = {n for n in after if after[n] is not before[n]}
        assert changed == set(attn1_names(unet, "up_blocks."))
        assert all(isinstance(after[n], CrossFrameAttnProcessor) for n in changed)
        assert all(after[n].original is before[n] for n in changed)
        with pytest.raises(ValueError, match="already enabled"):
            enable_cross_frame_attention(unet)
        run(pipe, 1)
        state.next_frame()
        assert not np.array_equal(run(pipe, 2), plain[2][0])
    finally:
        disable_cross_frame_attention(unet)
    disable_cross_frame_attention(unet)  # a no-op when off
    assert all(p is before[n] for n, p in unet.attn_processors.items())
    assert len(unet._forward_pre_hooks) == pre_hooks and cross_frame_state(unet) is None
    assert not state.has_references  # disabling frees the references
    assert np.array_equal(run(pipe, 2), plain[2][0])


def test_first_frame_is_a_plain_generation(pipe: StableDiffusionPipeline, plain: dict) -> None:
    with cross_frame_attention(pipe.unet, blocks=("down", "mid", "up"), mode="record") as state:
        assert np.array_equal(run(pipe, 1), plain[1][0])
        state.mode = "attend"  # with no references yet, "attend" only records too
        assert np.array_equal(run(pipe, 1), plain[1][0])
        assert state.frames == 0 and not state.has_references


def test_second_frame_attends_to_the_first(pipe: StableDiffusionPipeline, plain: dict) -> None:
    up = set(attn1_names(pipe.unet, "up_blocks."))
    with cross_frame_attention(pipe.unet) as state:
        run(pipe, 1)
        state.next_frame()
        with attention_outputs(pipe.unet) as outputs:
            second = run(pipe, 2)
    assert not np.array_equal(second, plain[2][0])
    first_out, plain_out = plain[1][1], plain[2][1]
    for name, calls in outputs.items():
        before = np.mean([(a - b).abs().mean().item() for a, b in zip(first_out[name], plain_out[name], strict=True)])
        after = np.mean([(a - b).abs().mean().item() for a, b in zip(first_out[name], calls, strict=True)])
        if name in up:
            # self-attention now mixes in the first frame's values: its output moves toward the first
            # frame's (measured: 35-40% closer for these seeds). Random weights make this hold at the
            # layer, not at the image: the noise seed dominates the tiny model's output.
            assert after < 0.75 * before, name
        else:
            # layers upstream of the decoder are not modified: their first call is bit-identical
            assert torch.equal(calls[0], plain_out[name][0]), name


def test_cfg_halves_stay_paired(pipe: StableDiffusionPipeline) -> None:
    unet = pipe.unet
    cond, uncond = pipe.encode_prompt(TINY_PROMPT, "cpu", 1, True, "blue")
    context = torch.cat([uncond, cond])  # the pipelines' [uncond, cond] batch
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)).repeat(2, 1, 1, 1)
    layer = attn1_names(unet, "up_blocks.")[0]
    seen: list[tuple[int, ...] | None] = []
    with torch.no_grad(), cross_frame_attention(unet) as state:
        plain = unet(latents, 500, encoder_hidden_states=context).sample
        plain_cond = unet(latents[1:], 500, encoder_hidden_states=context[1:]).sample
        state.reset()
        processor = unet.get_submodule(layer.removesuffix(".processor")).processor
        original = processor.original

        def spy(attn: Any, hidden: torch.Tensor, encoder_hidden_states: Any = None, **kwargs: Any) -> Any:
            seen.append(None if encoder_hidden_states is None else tuple(encoder_hidden_states.shape))
            return original(attn, hidden, encoder_hidden_states=encoder_hidden_states, **kwargs)

        processor.original = spy
        frames = []
        for _ in range(3):  # the same frame three times
            frames.append(unet(latents, 500, encoder_hidden_states=context).sample)
            state.next_frame()
        # without CFG (batch 1) the frame attends to the cond half of the references
        alone = unet(latents[1:], 500, encoder_hidden_states=context[1:]).sample
    assert seen == [
        None,
        (2, 2 * UP_TOKENS, UP_CHANNELS),
        (2, 3 * UP_TOKENS, UP_CHANNELS),
        (1, 3 * UP_TOKENS, UP_CHANNELS),
    ]
    # a frame attending to identical frames computes the same attention (keys duplicated), but only
    # if uncond attends to uncond and cond to cond: swapped halves change the output by ~2e-2
    assert torch.equal(frames[0], plain)
    for frame in frames[1:]:
        torch.testing.assert_close(frame, plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(alone, plain_cond, atol=1e-5, rtol=0)


def test_batch_pairing_by_position() -> None:
    def pairs(ref_batch: int, batch: int) -> list[int]:
        return _match_batch(torch.arange(ref_batch), batch).tolist()

    assert pairs(2, 2) == [0, 1]
    assert pairs(2, 4) == [0, 0, 1, 1]  # [u, c] -> [u, u, c, c]
    assert pairs(4, 2) == [1, 3]  # [u1, u2, c1, c2] -> [u, c]
    assert pairs(4, 6) == [0, 1, 1, 2, 3, 3]  # uncond to uncond, cond to cond
    assert pairs(2, 1) == [1]  # no CFG now: the cond half
    assert pairs(1, 2) == [0, 0]


def test_state_holds_references_only_for_selected_layers(pipe: StableDiffusionPipeline) -> None:
    unet = pipe.unet
    up = attn1_names(unet, "up_blocks.")
    per_step = 2 * UP_TOKENS * UP_CHANNELS * 4  # CFG batch x tokens x channels x fp32
    with cross_frame_attention(unet) as state:
        assert state.layers == tuple(up)
        run(pipe, 1, num_inference_steps=2)  # PNDM: 3 calls at 2 distinct timesteps
        assert state.reference_layers == set(up)
        assert all(len(state.recorded_timesteps(n)) == 2 for n in up)
        assert state.memory_bytes() == len(up) * 2 * per_step
        state.next_frame()  # first and previous are the same frame
        assert state.memory_bytes() == len(up) * 2 * per_step
        run(pipe, 2, num_inference_steps=2)
        state.next_frame()
        assert state.memory_bytes() == 2 * len(up) * 2 * per_step and state.frames == 2
        state.reset()
        assert state.memory_bytes() == 0 and not state.has_references and not state.reference_layers
    with cross_frame_attention(unet, blocks=("mid",)) as state:
        run(pipe, 1, num_inference_steps=2)
        assert state.reference_layers == set(attn1_names(unet, "mid_block."))
    assert cross_frame_layers(unet, max_layers=1) == up[:1]
    assert len(cross_frame_layers(unet, blocks=("down", "mid", "up"))) == len(attn1_names(unet))
    with pytest.raises(SettingsError, match="Did you mean 'up'"):
        cross_frame_layers(unet, blocks=("upp",))
    with pytest.raises(SettingsError, match="max_layers"):
        cross_frame_layers(unet, max_layers=0)


def test_img2img_frames_align_by_timestep(pipe: StableDiffusionPipeline) -> None:
    img2img = StableDiffusionImg2ImgPipeline.from_pipe(pipe)
    img2img.set_progress_bar_config(disable=True)
    init = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    layer = attn1_names(pipe.unet, "up_blocks.")[0]
    plain = run(img2img, 2, image=init, strength=0.5, num_inference_steps=4)
    with cross_frame_attention(pipe.unet) as state:
        run(pipe, 1, num_inference_steps=4)
        first_steps = state.recorded_timesteps(layer)
        state.next_frame()
        second = run(img2img, 2, image=init, strength=0.5, num_inference_steps=4)
        # img2img runs the tail of the same schedule: every timestep has an exact reference
        assert set(state.recorded_timesteps(layer)) < set(first_steps)
        state.next_frame()
        run(pipe, 3, num_inference_steps=3)  # other timesteps: the nearest recorded ones are used
        assert not set(state.recorded_timesteps(layer)) <= set(first_steps)
    assert not np.array_equal(second, plain)


def test_nearest_timestep() -> None:
    a, b = torch.zeros(1), torch.ones(1)
    assert _nearest({999.0: a, 500.0: b}, 600.0) is b
    assert _nearest({999.0: a, 500.0: b}, 999.0) is a
    assert _nearest({999.0: a}, None) is None
    assert _nearest({}, 10.0) is None


def test_mode_off_leaves_calls_plain_and_references_kept(pipe: StableDiffusionPipeline, plain: dict) -> None:
    with cross_frame_attention(pipe.unet) as state:
        run(pipe, 1)
        state.next_frame()
        with state.using("off"):
            assert np.array_equal(run(pipe, 2), plain[2][0])
        assert state.mode == "attend"
        state.next_frame()  # nothing was recorded: the references stay
        assert state.frames == 1 and state.has_references
        with pytest.raises(ValueError, match="mode"):
            state.mode = "on"  # type: ignore[assignment]


def test_controlnet_pipeline_keeps_controlnet_attention(pipe: StableDiffusionPipeline, tiny_model_dir: Path) -> None:
    controlnet = ControlNetModel.from_pretrained(tiny_model_dir / "controlnet-openpose", local_files_only=True)
    control = StableDiffusionControlNetImg2ImgPipeline.from_pipe(pipe, controlnet=controlnet)
    control.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(1)
    init, hint = (Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(2))
    inputs = {"image": init, "control_image": hint, "strength": 0.75}
    before = dict(controlnet.attn_processors)
    plain = [run(control, seed, **inputs) for seed in (1, 2)]
    with cross_frame_attention(control.unet) as state:
        assert all(controlnet.attn_processors[n] is p for n, p in before.items())
        assert np.array_equal(run(control, 1, **inputs), plain[0])
        state.next_frame()
        assert not np.array_equal(run(control, 2, **inputs), plain[1])
