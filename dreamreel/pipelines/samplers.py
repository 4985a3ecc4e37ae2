"""A1111 sampler names and the diffusers schedulers that stand in for them.

The table follows diffusers' own "A1111/k-diffusion → Diffusers" mapping (schedulers overview page).
Names are matched case-insensitively and accept the spellings Deforum and older tools use
(``"euler_a"``, ``"k_dpmpp_2m"``, ``"dpm2_ancestral"``, ``"DPM++ 2M Karras"``). A trailing
``Karras`` or ``Exponential`` selects that sigma schedule (A1111's "Schedule type") for the
samplers whose diffusers scheduler supports it.

Importing this module does not import torch or diffusers: :func:`check_sampler` validates a name
while settings are loaded, before any model is; :func:`make_scheduler` imports diffusers lazily.

Example:
    >>> check_sampler("dpm++ 2m karras")
    'DPM++ 2M Karras'
    >>> SAMPLERS["DPM++ 2M Karras"].scheduler
    'DPMSolverMultistepScheduler'
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from dreamreel.errors import MissingDependencyError, SettingsError

if TYPE_CHECKING:
    from diffusers import SchedulerMixin

logger = logging.getLogger(__name__)

__all__ = ["SAMPLERS", "UNSUPPORTED_SAMPLERS", "SamplerSpec", "check_sampler", "make_scheduler"]


@dataclass(frozen=True, slots=True)
class SamplerSpec:
    """How one A1111 sampler is built in diffusers.

    Attributes:
        name: the canonical A1111 name, e.g. ``"DPM++ 2M Karras"``.
        scheduler: the diffusers scheduler class name.
        options: keyword arguments passed to ``Scheduler.from_config`` on top of the model's config.
        requires: Python packages the scheduler needs besides diffusers.
        note: how the diffusers scheduler differs from A1111's sampler, if it does.
    """

    name: str
    scheduler: str
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    requires: tuple[str, ...] = ()
    note: str = ""


# Config keys that belong to the sampler, not to the model: they are dropped from the pipeline's
# current scheduler config before the new scheduler is built, so that switching from
# "DPM++ 2M Karras" to "DPM++ 2M" does not carry Karras sigmas over.
_SAMPLER_KEYS = frozenset(
    {
        "algorithm_type",
        "solver_order",
        "solver_type",
        "lower_order_final",
        "euler_at_final",
        "final_sigmas_type",
        "use_karras_sigmas",
        "use_exponential_sigmas",
        "use_beta_sigmas",
        "use_lu_lambdas",
        "use_flow_sigmas",
        "skip_prk_steps",
        "predict_x0",
        "disable_corrector",
        "solver_p",
        "interpolation_type",
        "timestep_type",
        "original_inference_steps",
        "timestep_scaling",
    }
)

_SIGMA_SCHEDULES = {"Karras": "use_karras_sigmas", "Exponential": "use_exponential_sigmas"}

# (A1111 name, diffusers class, options, supports Karras/Exponential sigmas, requires, note)
_BASE: tuple[tuple[str, str, dict[str, Any], bool, tuple[str, ...], str], ...] = (
    ("Euler a", "EulerAncestralDiscreteScheduler", {}, False, (), ""),
    ("Euler", "EulerDiscreteScheduler", {}, True, (), ""),
    ("LMS", "LMSDiscreteScheduler", {}, True, ("scipy",), ""),
    ("Heun", "HeunDiscreteScheduler", {}, True, (), ""),
    ("DPM2", "KDPM2DiscreteScheduler", {}, True, (), ""),
    ("DPM2 a", "KDPM2AncestralDiscreteScheduler", {}, True, (), ""),
    ("DPM++ 2M", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, True, (), ""),
    (
        "DPM++ 2M SDE",
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
        True,
        (),
        "diffusers draws plain Gaussian noise where A1111 uses a Brownian tree",
    ),
    (
        "DPM++ 2M SDE Heun",
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "heun"},
        True,
        (),
        "diffusers draws plain Gaussian noise where A1111 uses a Brownian tree",
    ),
    (
        "DPM++ 3M SDE",
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
        True,
        (),
        "diffusers' third-order SDE solver; noise is plain Gaussian, not a Brownian tree",
    ),
    (
        "DPM++ SDE",
        "DPMSolverSinglestepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
        True,
        (),
        "diffusers' documented equivalent (single-step DPM-Solver++, SDE variant); A1111's sampler "
        "uses a Brownian tree (diffusers' DPMSolverSDEScheduler, which needs torchsde)",
    ),
    ("DDIM", "DDIMScheduler", {}, False, (), ""),
    ("PLMS", "PNDMScheduler", {"skip_prk_steps": True}, False, (), ""),
    (
        "UniPC",
        "UniPCMultistepScheduler",
        {"solver_type": "bh1", "solver_order": 3, "final_sigmas_type": "sigma_min"},
        True,
        (),
        "A1111's defaults (variant bh1, order 3, ending at sigma_min; diffusers' bh1 gives NaN when "
        "it steps to sigma 0)",
    ),
    ("DEIS", "DEISMultistepScheduler", {}, True, (), "not an A1111 sampler; diffusers' DEIS"),
    ("LCM", "LCMScheduler", {}, False, (), "needs an LCM model or LoRA, 2-8 steps, CFG about 1-2"),
)

UNSUPPORTED_SAMPLERS: Mapping[str, str] = MappingProxyType(
    {
        "DPM fast": "diffusers has no equivalent of k-diffusion's DPM fast (adaptive-order DPM-Solver)",
        "DPM adaptive": "diffusers has no equivalent of k-diffusion's DPM adaptive (it picks its own step count)",
        "DPM++ 2S a": "diffusers has no ancestral single-step DPM-Solver++; the closest is 'DPM++ SDE'",
        "DPM++ 2S a Karras": "diffusers has no ancestral single-step DPM-Solver++; the closest is 'DPM++ SDE Karras'",
        "Restart": "diffusers has no Restart sampler",
    }
)
"""A1111 samplers with no diffusers equivalent, and why."""


def _build_table() -> dict[str, SamplerSpec]:
    table: dict[str, SamplerSpec] = {}
    for name, cls, options, sigmas, requires, note in _BASE:
        table[name] = SamplerSpec(name, cls, MappingProxyType(dict(options)), requires, note)
        if not sigmas:
            continue
        for suffix, key in _SIGMA_SCHEDULES.items():
            full = f"{name} {suffix}"
            table[full] = SamplerSpec(full, cls, MappingProxyType({**options, key: True}), requires, note)
    return table


SAMPLERS: Mapping[str, SamplerSpec] = MappingProxyType(_build_table())
"""Every supported sampler, keyed by its canonical A1111 name."""


def _normalise(name: str) -> str:
    """Lower-case a sampler name and map Deforum/k-diffusion spellings to A1111 words."""
    text = re.sub(r"[\s_\-]+", " ", name.strip().lower())
    text = re.sub(r"^k ", "", text)  # k_euler_a, k_dpmpp_2m (k-diffusion prefix)
    text = text.replace("dpmpp", "dpm++").replace("ancestral", "a").replace("uni pc", "unipc")
    text = re.sub(r"\bdpm 2\b", "dpm2", text)
    text = re.sub(r"\bdpm\+\+(\d)", r"dpm++ \1", text)
    return {"k lms": "lms", "klms": "lms", "pndm": "plms", "dpm ad": "dpm adaptive"}.get(text, text)


_LOOKUP: dict[str, str] = {_normalise(n): n for n in (*SAMPLERS, *UNSUPPORTED_SAMPLERS)}


def _suggestions(name: str) -> str:
    """Case-insensitive version of :func:`dreamreel.errors.did_you_mean` over the sampler names."""
    matches = difflib.get_close_matches(_normalise(name), list(_LOOKUP), n=3, cutoff=0.6)
    names = [SAMPLERS[_LOOKUP[m]].name for m in matches if _LOOKUP[m] in SAMPLERS]
    if not names:
        return ""
    if len(names) == 1:
        return f" Did you mean {names[0]!r}?"
    return " Did you mean one of " + ", ".join(repr(n) for n in names) + "?"


def check_sampler(name: str, *, key: str = "sampler") -> str:
    """Validate an A1111 sampler name and return its canonical spelling.

    Args:
        name: the sampler name as the user wrote it (any case, A1111 or Deforum spelling).
        key: the settings key, for the error message.

    Returns:
        The canonical name, a key of :data:`SAMPLERS`.

    Raises:
        SettingsError: the name is unknown, or the sampler has no diffusers equivalent.
        MissingDependencyError: the scheduler needs a package that is not installed.
    """
    canonical = _LOOKUP.get(_normalise(str(name)))
    if canonical is None:
        raise SettingsError(
            f"unknown sampler {name!r}.{_suggestions(str(name))} Supported samplers: "
            + ", ".join(base[0] for base in _BASE)
            + "; most also take a ' Karras' or ' Exponential' suffix (not Euler a, DDIM, PLMS, LCM).",
            key=key,
        )
    if canonical in UNSUPPORTED_SAMPLERS:
        raise SettingsError(
            f"the sampler {name!r} is not available: {UNSUPPORTED_SAMPLERS[canonical]}. "
            "Pick another sampler, e.g. 'DPM++ 2M Karras' or 'Euler a'.",
            key=key,
        )
    spec = SAMPLERS[canonical]
    for package in spec.requires:
        if importlib.util.find_spec(package) is None:
            raise MissingDependencyError(package, f"the sampler {canonical!r}")
    return canonical


def make_scheduler(name: str, config: Mapping[str, Any]) -> SchedulerMixin:
    """Build the diffusers scheduler for an A1111 sampler from a pipeline's scheduler config.

    The model's settings in ``config`` (betas, prediction type, timestep spacing, steps offset)
    are kept; sampler settings from a previous sampler (Karras sigmas, solver order, ...) are
    dropped and replaced by this sampler's options.

    Args:
        name: an A1111 sampler name (validated with :func:`check_sampler`).
        config: the current scheduler's config, e.g. ``pipe.scheduler.config``.

    Returns:
        A new scheduler; assign it to ``pipe.scheduler``.

    Raises:
        SettingsError: unknown or unsupported sampler name.
        MissingDependencyError: the scheduler needs a package that is not installed.
    """
    spec = SAMPLERS[check_sampler(name)]
    import diffusers

    cls = getattr(diffusers, spec.scheduler)
    base = {k: v for k, v in config.items() if k not in _SAMPLER_KEYS and not k.startswith("_")}
    try:
        scheduler: SchedulerMixin = cls.from_config(base, **spec.options)
    except ImportError as exc:  # diffusers' dummy objects raise this for missing backends
        if not spec.requires:
            raise
        raise MissingDependencyError(spec.requires[0], f"the sampler {spec.name!r}") from exc
    if spec.note:
        logger.debug("sampler %r uses %s: %s", spec.name, spec.scheduler, spec.note)
    return scheduler
