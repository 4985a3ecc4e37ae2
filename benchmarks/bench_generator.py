"""The generator wrapper's overhead: N img2img calls through dreamreel vs the same calls on a diffusers pipeline.

Tiny random-weight model at 64x64 (built in a temporary folder, nothing downloaded). Target: ratio <= 1.05.

    python benchmarks/bench_generator.py [--calls 30] [--steps 4]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dreamreel.generation import GenerationRequest
from dreamreel.pipelines.generator import DiffusersGenerator
from dreamreel.testing import TINY_PROMPT, save_tiny_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        generator = DiffusersGenerator.from_source(str(save_tiny_model(Path(folder) / "tiny", controlnets=())))
    init = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    requests = [
        GenerationRequest(
            prompt=TINY_PROMPT,
            negative_prompt="blue",
            width=64,
            height=64,
            steps=args.steps,
            strength=0.5,
            seed=seed,
            init_image=init,
        )
        for seed in range(args.calls)
    ]
    pipe = generator._img2img  # the very pipeline the wrapper calls, used directly
    pil = Image.fromarray(init)

    def direct(request: GenerationRequest) -> None:
        pipe(prompt=request.prompt, negative_prompt=request.negative_prompt, image=pil, strength=request.strength,
             num_inference_steps=request.steps, guidance_scale=request.cfg_scale,
             generator=torch.Generator("cpu").manual_seed(request.seed), output_type="np")  # fmt: skip

    generator.generate(requests[0])
    direct(requests[0])  # warm up both paths
    ours, theirs = [], []
    for request in requests:  # interleaved, so machine load hits both alike
        start = time.perf_counter()
        generator.generate(request)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        direct(request)
        theirs.append(time.perf_counter() - start)
    ratio = statistics.median(ours) / statistics.median(theirs)
    print(f"{args.calls} img2img calls at 64x64, {args.steps} steps x 0.5 strength:")
    ms_ours, ms_theirs = statistics.median(ours) * 1e3, statistics.median(theirs) * 1e3
    print(f"  dreamreel median {ms_ours:.1f} ms, diffusers median {ms_theirs:.1f} ms")
    print(f"  ratio {ratio:.3f} (target <= 1.05)")
    print(f"  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
