"""The diffusers-backed :class:`FrameGenerator`: one set of weights serving txt2img, img2img and ControlNet.

Everything heavy happens once, in :meth:`DiffusersGenerator.from_source`. A call does only what
the request changes: swap the scheduler when the sampler name changes, switch LoRA adapters when
the ``<lora:...>`` tags change, encode the prompt (cached by text), then run the pipeline with its
own seeded ``torch.Generator``.
"""

from __future__ import annotations

import logging
import math
import re
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image as PILImage

from dreamreel.errors import ModelLoadError, SettingsError
from dreamreel.generation import GenerationRequest, Image
from dreamreel.pipelines.composable import ComposableGuidance, composable_parts, installed
from dreamreel.pipelines.finding import find_embedding, find_lora
from dreamreel.pipelines.loading import load_pipeline, resolve_model
from dreamreel.pipelines.prompt_syntax import extract_lora_tags, prompt_schedule
from dreamreel.pipelines.samplers import check_sampler, make_scheduler
from dreamreel.pipelines.sdxl import SdxlConditioner, first_prompt, is_sdxl, load_sdxl_embedding
from dreamreel.pipelines.text_encoding import encode_blend, encode_pair, pad_to_chunks

logger = logging.getLogger(__name__)

Offload = Literal["none", "model", "sequential"]
_EMBEDDING_CACHE = 64


@dataclass(frozen=True)
class GeneratorOptions:
    """How to load and run the model. Defaults suit a CUDA GPU; everything also runs on the CPU.

    Attributes:
        device: "auto" (cuda, then mps, then cpu), or a torch device string.
        dtype: "auto" (fp16 on CUDA, fp32 elsewhere), "fp32", "fp16" or "bf16".
        vae: a VAE to use instead of the model's (name, file, folder, or "taesd").
        controlnets: ControlNet models to load next to the model.
        offload: "model" = A1111 --medvram (model CPU offload), "sequential" = --lowvram.
        attention_slicing: lower peak memory at some speed cost.
        vae_tiling: decode large images in tiles.
        compile: torch.compile the UNet (first frames are slow while it compiles).
        models_dir: an AUTOMATIC1111 install folder to resolve names in.
        embeddings: extra textual-inversion files, used in prompts by file stem.
    """

    device: str = "auto"
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    vae: str | None = None
    controlnets: tuple[str, ...] = ()
    offload: Offload = "none"
    attention_slicing: bool = False
    vae_tiling: bool = False
    compile: bool = False
    models_dir: Path | None = None
    embeddings: tuple[Path, ...] = field(default_factory=tuple)
    cross_frame_attention: bool = False


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; a named device is checked (see :func:`check_device`)."""
    if requested != "auto":
        return check_device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def check_device(requested: str, *, key: str = "--device") -> torch.device:
    """The torch device ``requested`` names, after checking that this machine has it.

    Raises:
        SettingsError: the name is not a device (``cuda``, ``cuda:1``, ``mps``, ``cpu``), or this
            machine (or this PyTorch build) does not have it; the message names ``key``.
    """
    text = str(requested).strip()
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as exc:
        raise SettingsError(f"{text!r} is not a device; use auto, cuda, cuda:N, mps or cpu", key=key) from exc
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingsError(
                f"{text!r} was asked for, but this machine has no CUDA GPU that PyTorch can use "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use --device cpu, or "
                "auto (cuda, then mps, then cpu)",
                key=key,
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise SettingsError(
                f"{text!r} was asked for, but this machine has {count} CUDA device(s), numbered from 0", key=key
            )
        return device
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise SettingsError(
                f"{text!r} was asked for, but Apple's MPS is not available here; use --device cpu or auto", key=key
            )
        return device
    backend = getattr(torch, device.type, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        raise SettingsError(f"the device {text!r} is not available here; use auto, cuda, mps or cpu", key=key)
    return device


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """``auto`` -> fp16 on CUDA, fp32 elsewhere."""
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if requested == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return table[requested]


class DiffusersGenerator:
    """Generates frames with a Stable Diffusion pipeline; implements :class:`FrameGenerator`."""

    def __init__(self, pipe: Any, *, models_dir: Path | None = None, embeddings: Sequence[Path] = ()) -> None:
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image

        self._sdxl = SdxlConditioner(pipe) if is_sdxl(pipe) else None  # A1111's conditioning on both encoders
        self.models_dir = models_dir
        self._has_controlnet = getattr(pipe, "controlnet", None) is not None
        if self._has_controlnet:
            self._control_txt2img = pipe
            self._control_img2img = AutoPipelineForImage2Image.from_pipe(pipe)
            self._txt2img = AutoPipelineForText2Image.from_pipe(pipe, controlnet=None)
        else:
            self._txt2img = pipe
        self._img2img = AutoPipelineForImage2Image.from_pipe(self._txt2img)
        self._pipes = [p for p in self._all_pipes()]
        for each in self._pipes:
            each.set_progress_bar_config(disable=True)
        self._base_scheduler_config = dict(pipe.scheduler.config)
        self._sampler: str | None = None
        self._loras: dict[str, str] = {}  # lora name -> adapter name
        self._active_loras: tuple[tuple[str, float], ...] = ()
        self._embedding_files = {p.stem: p for p in embeddings}
        self._loaded_embeddings: set[str] = set()
        self._encoded: OrderedDict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.model_path: Path | None = None
        self._warned: set[str] = set()
        self._cross_frame: Any = None

    def _all_pipes(self) -> Iterator[Any]:
        yield self._txt2img
        yield self._img2img
        if self._has_controlnet:
            yield self._control_txt2img
            yield self._control_img2img

    @classmethod
    def from_source(cls, model: str, options: GeneratorOptions | None = None) -> DiffusersGenerator:
        """Load ``model`` (diffusers folder, single file, hub id in the local cache, or A1111 name) once."""
        options = options or GeneratorOptions()
        device = pick_device(options.device)
        dtype = pick_dtype(options.dtype, device)
        source = resolve_model(model, models_dir=options.models_dir)
        target = "cpu" if options.offload != "none" else device
        # Any: mypy sees diffusers' placeholder classes (its TYPE_CHECKING imports), not the real pipelines
        pipe: Any = load_pipeline(
            source,
            device=target,
            dtype=dtype,
            vae=options.vae,
            controlnets=options.controlnets,
            models_dir=options.models_dir,
        )
        if options.offload == "model":
            pipe.enable_model_cpu_offload(device=device)
        elif options.offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=device)
        if options.attention_slicing:
            pipe.enable_attention_slicing()
        if options.vae_tiling:
            pipe.vae.enable_tiling()
        if options.compile:
            pipe.unet = torch.compile(pipe.unet, mode="reduce-overhead", fullgraph=False)
        embeddings = list(options.embeddings)
        if options.models_dir is not None and (options.models_dir / "embeddings").is_dir():
            embeddings += [
                p
                for p in sorted((options.models_dir / "embeddings").rglob("*"))
                if p.suffix in (".safetensors", ".pt", ".bin")
            ]
        generator = cls(pipe, models_dir=options.models_dir, embeddings=embeddings)
        generator.model_path = source.path
        if options.cross_frame_attention:
            generator.enable_cross_frame_attention()
        return generator

    def enable_cross_frame_attention(self) -> None:
        """Each frame's self-attention also attends to the first and the previous frame (decoder layers)."""
        from dreamreel.pipelines.attention import enable_cross_frame_attention

        self._cross_frame = enable_cross_frame_attention(self._txt2img.unet)

    # --- per call --------------------------------------------------------------------------

    def generate(self, request: GenerationRequest) -> Image:
        """One image for the request (see :class:`GenerationRequest`)."""
        return self.generate_batch(request, 1)[0]

    @property
    def device(self) -> torch.device:
        """Where the pipeline runs (the execution device, also with CPU offload)."""
        return torch.device(self._txt2img._execution_device)

    def generate_batch(self, request: GenerationRequest, count: int) -> list[Image]:
        """``count`` images in one sampler call, with seeds ``request.seed + i`` (A1111's batch size)."""
        if request.init_image is not None and request.strength <= 0.0:
            return [request.init_image.copy() for _ in range(count)]  # nothing to denoise
        init = None if request.init_image is None else torch.from_numpy(np.ascontiguousarray(request.init_image))
        images = self._sample(request, count, init)
        return [image.cpu().numpy() for image in images]

    def generate_tensor(self, request: GenerationRequest, init: torch.Tensor | None) -> torch.Tensor:
        """One image for the request as an (H, W, 3) uint8 tensor on the pipeline's device, from an init that is
        an (H, W, 3) uint8 tensor (img2img with ``request.strength``) or None (txt2img). The frame never visits
        the host: the frame loop's device path (``--frame-ops``). The same code as :meth:`generate`, so the same
        images."""
        if init is not None and request.strength <= 0.0:
            return init.clone()
        return self._sample(request, 1, init)[0]

    def _sample(self, request: GenerationRequest, count: int, init: torch.Tensor | None) -> list[torch.Tensor]:
        """One sampler call, txt2img when ``init`` is None: (H, W, 3) uint8 tensors on the pipeline's device.

        The init goes in as the (1, 3, H, W) 0..1 tensor the pipeline's image processor would make of it,
        and the images come out as tensors, rounded to levels on the device.
        """
        image = None
        if init is not None:
            image = init.to(self.device).permute(2, 0, 1).unsqueeze(0).to(torch.float32) / 255.0
        decoded = self._run(request, count, image)  # (count, 3, H, W) in 0..1
        levels = torch.round(decoded.to(torch.float32) * 255.0).clamp(0, 255).to(torch.uint8)
        return list(levels.permute(0, 2, 3, 1))

    def _run(self, request: GenerationRequest, count: int, image: torch.Tensor | None) -> torch.Tensor:
        """The pipeline call: txt2img when ``image`` is None, img2img from ``image`` otherwise."""
        img2img = image is not None
        self._use_sampler(request.sampler)
        prompt, loras = extract_lora_tags(request.prompt)
        negative, negative_loras = extract_lora_tags(request.negative_prompt)
        self._use_loras(tuple(loras + negative_loras))
        self._load_embeddings(prompt + " " + negative + " " + " ".join(t for t, _ in request.prompt_parts))
        pipe = self._pipe_for(request, img2img=img2img)
        cond, uncond, schedule = self._conditioning(request, prompt, negative)
        kwargs: dict[str, Any] = {
            "prompt_embeds": cond.repeat(count, 1, 1),
            "negative_prompt_embeds": uncond.repeat(count, 1, 1),
            "guidance_scale": request.cfg_scale,
            "num_inference_steps": _steps_for(request, self._warned, img2img=img2img),
            "generator": [torch.Generator("cpu").manual_seed(request.seed + i) for i in range(count)],
            "output_type": "pt",
        }
        if img2img:
            kwargs.update(image=image, strength=request.strength)
        else:
            kwargs.update(height=request.height, width=request.width)
        if self._sdxl is not None:
            kwargs.update(self._sdxl_kwargs(request, prompt, negative, count, image))
        if request.controls:
            self._add_controls(kwargs, request, txt2img=not img2img)
        guidance = self._composable(request, prompt, count)
        if guidance is not None:
            kwargs["callback_on_step_end"] = guidance
        elif len(schedule) > 1:
            kwargs["callback_on_step_end"] = _PromptEditor(schedule, uncond, count, cfg=request.cfg_scale > 1.0)
            kwargs["callback_on_step_end_tensor_inputs"] = ["prompt_embeds"]
        with (
            _noise_multiplier(pipe.scheduler, request.noise_multiplier if img2img else 1.0),
            installed(guidance, pipe.unet, getattr(pipe, "controlnet", None)),
        ):
            output = pipe(**kwargs)
        if self._cross_frame is not None:
            self._cross_frame.next_frame()
        return output.images

    def _pipe_for(self, request: GenerationRequest, *, img2img: bool) -> Any:
        if request.controls:
            if not self._has_controlnet:
                raise SettingsError("the request has ControlNet inputs but no ControlNet model was loaded")
            return self._control_img2img if img2img else self._control_txt2img
        return self._img2img if img2img else self._txt2img

    def _use_sampler(self, name: str) -> None:
        if name == self._sampler:
            return
        canonical = check_sampler(name)
        scheduler = make_scheduler(canonical, self._base_scheduler_config)
        for each in self._pipes:
            each.scheduler = scheduler
        self._sampler = name
        logger.debug("sampler %s -> %s", name, type(scheduler).__name__)

    def _use_loras(self, loras: tuple[tuple[str, float], ...]) -> None:
        if loras == self._active_loras:
            return
        pipe = self._txt2img
        for name, _ in loras:
            if name not in self._loras:
                path = Path(name) if Path(name).is_file() else find_lora(name, self.models_dir)
                adapter = re.sub(r"\W", "_", Path(name).stem) or "lora"
                try:
                    pipe.load_lora_weights(str(path), adapter_name=adapter)
                except (ValueError, KeyError, RuntimeError, OSError) as exc:
                    raise ModelLoadError(f"cannot load LoRA {name!r} from {path}: {exc}") from exc
                self._loras[name] = adapter
        if loras:
            pipe.enable_lora()
            pipe.set_adapters([self._loras[n] for n, _ in loras], adapter_weights=[w for _, w in loras])
        else:
            pipe.disable_lora()
        self._active_loras = loras
        self._encoded.clear()  # LoRAs may change the text encoder
        if self._sdxl is not None:
            self._sdxl.clear()

    def _load_embeddings(self, text: str) -> None:
        for stem, path in self._embedding_files.items():
            if stem not in self._loaded_embeddings and re.search(rf"(?<![\w-]){re.escape(stem)}(?![\w-])", text):
                try:
                    if self._sdxl is not None:
                        load_sdxl_embedding(self._txt2img, path, stem)
                    else:
                        self._txt2img.load_textual_inversion(str(path), token=stem)
                except (ValueError, KeyError, RuntimeError, OSError) as exc:
                    raise ModelLoadError(f"cannot load embedding {stem!r} from {path}: {exc}") from exc
                self._loaded_embeddings.add(stem)
                self._encoded.clear()
                if self._sdxl is not None:
                    self._sdxl.clear()
                logger.info("loaded embedding %s from %s", stem, path)

    def add_embedding(self, name: str) -> None:
        """Make an embedding from the models folder usable by name (A1111 ``embeddings/``)."""
        self._embedding_files[Path(name).stem] = find_embedding(name, self.models_dir)

    def _conditioning(
        self, request: GenerationRequest, prompt: str, negative: str, *, first_pass_steps: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, torch.Tensor]]]:
        """(cond, uncond, [(end_step, cond)] for prompt editing), all padded to the same length.

        Encodings are cached on what they depend on (the texts, blended parts and clip skip), not on
        the step count: a step schedule does not re-encode the same prompt every frame. In a hires pass,
        ``first_pass_steps`` shifts prompt editing as A1111 does (see ``prompt_schedule``).
        """
        if request.prompt_parts:
            cond, uncond = self._encode(
                ("parts", request.prompt_parts, request.negative_parts, negative), request.clip_skip
            )
            return cond, uncond, [(request.steps, cond)]
        schedule = prompt_schedule(prompt, request.steps, first_pass_steps=first_pass_steps)
        if len(schedule) == 1:
            cond, uncond = self._encode(("text", schedule[0][1], negative), request.clip_skip)
            return cond, uncond, [(request.steps, cond)]
        encoded = [(end, self._encode(("text", text, negative), request.clip_skip)) for end, text in schedule]
        chunks = max(max(c.shape[1], u.shape[1]) for _, (c, u) in encoded) // 77
        empty = self._encode(("text", "", ""), request.clip_skip)[0]
        edits = [(end, pad_to_chunks(c, chunks, empty)) for end, (c, _) in encoded]
        uncond = pad_to_chunks(encoded[0][1][1], chunks, empty)
        return edits[0][1], uncond, edits

    def _encode(self, what: tuple[Any, ...], clip_skip: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cond, uncond) for ``("text", prompt, negative)`` or ``("parts", parts, negative_parts, negative)``,
        from an LRU cache of the last ``_EMBEDDING_CACHE`` encodings."""
        key = (*what, clip_skip)
        if key in self._encoded:
            self._encoded.move_to_end(key)
            return self._encoded[key]
        pipe = self._txt2img
        encode = {"tokenizer": pipe.tokenizer, "text_encoder": pipe.text_encoder, "clip_skip": clip_skip}
        if self._sdxl is not None:  # A1111 ignores clip skip on SDXL (see dreamreel.pipelines.sdxl)
            pair = (list(what[1]), list(what[2]) or what[3]) if what[0] == "parts" else (what[1], what[2])
            cond, uncond = self._sdxl.pair(*pair)
        elif what[0] == "parts":
            _, parts, negative_parts, negative = what
            cond = encode_blend(parts, **encode)
            uncond_source: Any = list(negative_parts) or negative
            _, uncond = encode_pair("", uncond_source, **encode)
            chunks = max(cond.shape[1], uncond.shape[1]) // 77
            empty = self._encode(("text", "", ""), clip_skip)[0]
            cond, uncond = pad_to_chunks(cond, chunks, empty), pad_to_chunks(uncond, chunks, empty)
        else:
            _, text, negative = what
            cond, uncond = encode_pair(text, negative, **encode)
        self._encoded[key] = (cond, uncond)
        if len(self._encoded) > _EMBEDDING_CACHE:
            self._encoded.popitem(last=False)
        return cond, uncond

    def _sdxl_kwargs(
        self, request: GenerationRequest, prompt: str, negative: str, count: int, image: torch.Tensor | None
    ) -> dict[str, Any]:
        """SDXL's pooled embeddings (of the first scheduled prompt or the blend) and size conditioning."""
        assert self._sdxl is not None
        height, width = (request.height, request.width) if image is None else tuple(image.shape[-2:])
        if image is not None and image.shape[1] != 3:  # latents (the hires pass)
            scale = int(self._txt2img.vae_scale_factor)
            height, width = height * scale, width * scale
        source = first_prompt(request.prompt_parts, prompt_schedule(prompt, request.steps))
        negative_source = list(request.negative_parts) or negative
        return self._sdxl.call_kwargs(source, negative_source, height=height, width=width, count=count)

    def _add_controls(self, kwargs: dict[str, Any], request: GenerationRequest, *, txt2img: bool) -> None:
        images = [PILImage.fromarray(c.image) for c in request.controls]
        single = len(images) == 1
        kwargs["control_image" if not txt2img else "image"] = images[0] if single else images
        kwargs["controlnet_conditioning_scale"] = (
            request.controls[0].weight if single else [c.weight for c in request.controls]
        )
        kwargs["control_guidance_start"] = [c.guidance_start for c in request.controls]
        kwargs["control_guidance_end"] = [c.guidance_end for c in request.controls]
        kwargs["guess_mode"] = request.guess_mode

    # --- A1111's hires fix: the pieces of its two passes (dreamreel.jobs.still puts them together) ----------

    def generate_latents(self, request: GenerationRequest, count: int) -> torch.Tensor:
        """The txt2img latents of ``count`` images (seeds ``request.seed + i``), before the VAE decode.

        The same sampler call as :meth:`generate_batch` for a txt2img request (``request.init_image`` is
        ignored), stopped where the pipeline would decode: :meth:`decode_latents` of the result gives the
        images :meth:`generate_batch` gives.

        Returns:
            (count, C, height / 8, width / 8) latents in the UNet's (scaled) latent space, on the
            pipeline's device: what A1111's latent hires upscalers resize.
        """
        return self._hires_call(request, count, None, output_type="latent")

    def decode_latents(self, latents: torch.Tensor) -> list[torch.Tensor]:
        """Decode (count, C, h, w) latents as the pipeline does: (8h, 8w, 3) uint8 tensors on the device."""
        pipe = self._txt2img
        with torch.no_grad():
            decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
            decoded = pipe.image_processor.postprocess(
                decoded, output_type="pt", do_denormalize=[True] * decoded.shape[0]
            )
        return _levels(decoded)

    def generate_hires_pass(
        self, request: GenerationRequest, init: torch.Tensor, *, first_pass_steps: int | None = None
    ) -> list[torch.Tensor]:
        """The second pass of A1111's hires fix: img2img of a batch that runs exactly ``request.steps`` steps.

        A1111's hires pass always hands its step count to the sampler, so ``setup_img2img_steps`` takes the
        "do exactly the amount of steps" branch whatever the setting says: the schedule has
        ``int(steps / min(strength, 0.999))`` steps and the last ``steps`` of them run, starting from the
        init noised to that point. Prompt editing (``[a:b:when]``) is scheduled over ``steps``, shifted by
        ``first_pass_steps`` as A1111 >= 1.6 does. A schedule longer than the scheduler's training steps
        (tiny strengths) is cut to them, with a warning.

        Args:
            request: the pass's prompts, sampler, CFG scale, clip skip and seed (image ``i`` has the seed
                ``request.seed + i``); ``steps`` and ``strength`` (above 0) as above. No ControlNet.
            init: (count, C, h, w) latents (from :meth:`generate_latents`, resized), or (count, H, W, 3)
                uint8 images (encoded by the VAE, as img2img does).
            first_pass_steps: the first pass's steps. Given, prompt editing counts on from the first pass
                (step numbers minus ``first_pass_steps``, fractions from 1.0: ``[a:b:1.5]`` switches half-way
                through this pass, ``[a:b:0.5]`` uses ``b`` throughout); None schedules over ``steps`` alone.

        Returns:
            (H, W, 3) uint8 tensors on the pipeline's device, one per init, the size of the init.
        """
        if not request.strength > 0.0:
            raise ValueError(f"the hires pass needs a denoising strength above 0, not {request.strength}")
        if init.dtype == torch.uint8:
            image = init.to(self.device).permute(0, 3, 1, 2).to(torch.float32) / 255.0
        else:
            image = init.to(self.device)
        steps = max(1, int(request.steps))
        total = int(steps / min(request.strength, 0.999))
        limit = int(self._txt2img.scheduler.config.get("num_train_timesteps", 1000))
        if total > limit:
            if "hires_steps" not in self._warned:
                self._warned.add("hires_steps")
                logger.warning(
                    "hires pass: %d steps at denoising strength %.3g need a schedule of %d steps; the scheduler "
                    "has %d, so the pass runs on a schedule of %d",
                    steps, request.strength, total, limit, limit,
                )  # fmt: skip
            total = limit
        # diffusers runs int(total * strength) steps of a total-step schedule: ask for exactly ``steps``
        strength = min(1.0, (min(steps, total) + 0.5) / total)
        decoded = self._hires_call(
            request, image.shape[0], image, output_type="pt", steps=total, strength=strength,
            first_pass_steps=first_pass_steps,
        )  # fmt: skip
        return _levels(decoded)

    def _hires_call(
        self,
        request: GenerationRequest,
        count: int,
        image: torch.Tensor | None,
        *,
        output_type: str,
        steps: int | None = None,
        strength: float = 1.0,
        first_pass_steps: int | None = None,
    ) -> torch.Tensor:
        """One pipeline call of the hires fix: :meth:`_run` without ControlNet, noise multiplier or cross-frame
        attention, with the output type and, for img2img, the scheduled steps and diffusers' strength given."""
        if request.controls:
            raise SettingsError("the hires fix does not take ControlNet inputs", key="--hires")
        img2img = image is not None
        self._use_sampler(request.sampler)
        prompt, loras = extract_lora_tags(request.prompt)
        negative, negative_loras = extract_lora_tags(request.negative_prompt)
        self._use_loras(tuple(loras + negative_loras))
        self._load_embeddings(prompt + " " + negative + " " + " ".join(t for t, _ in request.prompt_parts))
        pipe = self._pipe_for(request, img2img=img2img)
        cond, uncond, schedule = self._conditioning(request, prompt, negative, first_pass_steps=first_pass_steps)
        kwargs: dict[str, Any] = {
            "prompt_embeds": cond.repeat(count, 1, 1),
            "negative_prompt_embeds": uncond.repeat(count, 1, 1),
            "guidance_scale": request.cfg_scale,
            "num_inference_steps": steps or request.steps,
            "generator": [torch.Generator("cpu").manual_seed(request.seed + i) for i in range(count)],
            "output_type": output_type,
        }
        if img2img:
            kwargs.update(image=image, strength=strength)
        else:
            kwargs.update(height=request.height, width=request.width)
        if self._sdxl is not None:
            kwargs.update(self._sdxl_kwargs(request, prompt, negative, count, image))
        guidance = self._composable(request, prompt, count, first_pass_steps=first_pass_steps)
        if guidance is not None:
            kwargs["callback_on_step_end"] = guidance
        elif len(schedule) > 1:
            kwargs["callback_on_step_end"] = _PromptEditor(schedule, uncond, count, cfg=request.cfg_scale > 1.0)
            kwargs["callback_on_step_end_tensor_inputs"] = ["prompt_embeds"]
        with installed(guidance, pipe.unet):
            images: torch.Tensor = pipe(**kwargs).images
        return images

    def _composable(
        self, request: GenerationRequest, prompt: str, count: int, *, first_pass_steps: int | None = None
    ) -> ComposableGuidance | None:
        """A1111's composable diffusion for a prompt (or blend) with ``AND`` or a ``:weight`` suffix; None
        otherwise, so that a plain prompt takes the pipeline's own guidance unchanged."""
        negative = extract_lora_tags(request.negative_prompt)[0]
        clip_skip = request.clip_skip
        found = composable_parts(
            prompt,
            request.prompt_parts,
            request.steps,
            lambda text: self._encode(("text", text, negative), clip_skip),
            lambda parts: self._encode(("parts", parts, request.negative_parts, negative), clip_skip),
            lambda: self._encode(("text", "", ""), clip_skip)[0],
            first_pass_steps=first_pass_steps,
        )
        if found is None:
            return None
        parts, uncond = found
        return ComposableGuidance(parts, uncond, count, cfg=request.cfg_scale > 1.0)


def _levels(decoded: torch.Tensor) -> list[torch.Tensor]:
    """(count, 3, H, W) images in 0..1 -> (H, W, 3) uint8 tensors, rounded as :meth:`DiffusersGenerator._sample`
    rounds."""
    levels = torch.round(decoded.to(torch.float32) * 255.0).clamp(0, 255).to(torch.uint8)
    return list(levels.permute(0, 2, 3, 1))


def _steps_for(request: GenerationRequest, warned: set[str], *, img2img: bool | None = None) -> int:
    """Sampler steps to ask diffusers for. img2img runs ``int(steps * strength)`` of them; when that is
    0 (A1111 would then denoise nothing), ask for just enough steps that one runs, and say so once."""
    img2img = request.init_image is not None if img2img is None else img2img
    if not img2img or int(request.steps * request.strength) >= 1:
        return request.steps
    steps = math.ceil(1.0 / request.strength - 1e-9)
    while int(steps * request.strength) < 1:  # 1 - 0.8 is 0.19999999999999996: 5 steps would run none
        steps += 1
    if "steps" not in warned:
        warned.add("steps")
        logger.warning(
            "steps %d x denoising strength %.3g runs no sampler step; using %d steps so that one step runs",
            request.steps, request.strength, steps,
        )  # fmt: skip
    return steps


class _PromptEditor:
    """``callback_on_step_end`` that switches the text embedding at A1111 prompt-editing steps.

    As in A1111, the schedule is computed for the full step count and the steps a call actually
    runs are counted from 0 (so an img2img call runs the early part of the schedule).
    """

    def __init__(
        self, schedule: list[tuple[int, torch.Tensor]], uncond: torch.Tensor, count: int, *, cfg: bool
    ) -> None:
        self.schedule = schedule
        self.uncond = uncond.repeat(count, 1, 1)
        self.count = count
        self.cfg = cfg

    def __call__(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        upcoming = step + 1
        cond = next((c for end, c in self.schedule if upcoming <= end), self.schedule[-1][1])
        cond = cond.repeat(self.count, 1, 1).to(callback_kwargs["prompt_embeds"].dtype)
        embeds = torch.cat([self.uncond.to(cond.dtype), cond]) if self.cfg else cond
        callback_kwargs["prompt_embeds"] = embeds.to(callback_kwargs["prompt_embeds"].device)
        return callback_kwargs


@contextmanager
def _noise_multiplier(scheduler: Any, multiplier: float) -> Iterator[None]:
    """A1111's img2img "initial noise multiplier": scale the noise added to the init latents.

    diffusers adds that noise with ``scheduler.add_noise``; it is wrapped for the duration of one
    call and restored afterwards, whatever happens.
    """
    if multiplier == 1.0:
        yield
        return
    original = scheduler.add_noise

    def scaled(original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return original(original_samples, noise * multiplier, timesteps)

    scheduler.add_noise = scaled
    try:
        yield
    finally:
        del scheduler.add_noise
