"""Seed behaviours (Deforum's ``seed_behavior``), resolved into one seed per diffusion up front.

Deforum advances the seed after every diffusion (not every output frame), so with diffusion
cadence ``c`` the k-th diffusion happens at frame ``k * c``. All behaviours are deterministic
given the base seed: ``random`` draws from ``numpy.random.default_rng(base_seed)`` where Deforum
used the unseeded global ``random`` (see docs/compat.md).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

SeedBehavior = Literal["iter", "fixed", "random", "ladder", "alternate", "schedule"]
SEED_RANGE = 2**32


def diffusion_seeds(base: int, behavior: SeedBehavior, count: int, *, iter_n: int = 1) -> NDArray[np.int64]:
    """The seed of each of ``count`` diffusions for a behaviour other than ``schedule``.

    ``iter`` uses the first seed once, then each later seed ``iter_n`` times (Deforum's
    ``seed_iter_N``); ``ladder`` goes +2, -1, +2, -1...; ``alternate`` goes +1, -1...

    Example:
        >>> diffusion_seeds(7, "iter", 5, iter_n=2).tolist()
        [7, 8, 8, 9, 9]
        >>> diffusion_seeds(7, "ladder", 5).tolist()
        [7, 9, 8, 10, 9]
    """
    k = np.arange(count, dtype=np.int64)
    if behavior == "iter":
        offsets = (k + iter_n - 1) // iter_n
    elif behavior == "fixed":
        offsets = np.zeros_like(k)
    elif behavior == "ladder":
        offsets = k // 2 + 2 * (k % 2)
    elif behavior == "alternate":
        offsets = k % 2
    elif behavior == "random":
        rng = np.random.default_rng(base)
        rest = rng.integers(0, SEED_RANGE, size=max(count - 1, 0), dtype=np.int64)
        return np.concatenate([np.array([base], dtype=np.int64), rest])[:count]
    else:
        raise ValueError(f"no fixed seed sequence for seed behaviour {behavior!r}")
    return (base + offsets) % SEED_RANGE


def random_seed(rng: np.random.Generator | None = None) -> int:
    """A fresh seed in A1111's range, for ``seed = -1``."""
    return int((rng or np.random.default_rng()).integers(0, SEED_RANGE))
