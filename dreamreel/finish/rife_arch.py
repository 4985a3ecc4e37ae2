"""The IFNet of Practical-RIFE v4.x, written for dreamreel: the network, its backward warp and the
recognition of a ``flownet.pkl`` state dict.

The network (RIFE, Huang et al., "Real-Time Intermediate Flow Estimation for Video Frame
Interpolation", and the v4 releases of Practical-RIFE) estimates, from two frames and a time ``t``,
two flows from the in-between frame back to each input and a blending mask. It runs a chain of
:class:`IFBlock` s from coarse to fine: block ``i`` looks at the inputs downscaled by
``scales[i] / scale``, the first one from scratch, each later one at the frames warped by the flow so
far, and adds a correction to the flow. The result is
``warp(a, flow_a) * sigmoid(mask) + warp(b, flow_b) * (1 - sigmoid(mask))``.

The versions dreamreel reads differ only in a few switches (:class:`RifeArch`), so one module
covers them all; the tensor names are those of the published ``flownet.pkl`` files:

======== ============================================= ========= ================================
family   encoder (``encode``) per frame                blocks    widths (published)
======== ============================================= ========= ================================
4.6      none                                          4: 8..1   192 128 96 64
4.7      conv 3->16 (stride 2), deconv 16->4           4: 8..1   192 128 96 64
4.22     ``Head``: conv 3->32, 32->32, 32->32, deconv  4: 8..1   256 192 96 48
         32->8, LeakyReLU between
4.25     ``Head`` with 16 channels, deconv 16->4       5: 16..1  192 128 96 64 32
======== ============================================= ========= ================================

Details that differ between the families: in 4.6 the mask is a running sum over the blocks, from
4.7 on each block replaces it; from 4.21 on each block also passes 8 feature channels to the next
(``lastconv`` gives 13 channels: flow 4, mask 1, features 8, instead of 6 of which the 6th is
unused). Files from 4.7, 4.8 and 4.9 hold the same network (likewise 4.21/4.22/4.23 and 4.25/4.26),
so a state dict says only which family it is, not which of those releases.

Block widths and the encoder's size are read from the file, so the published "heavy" and "lite"
variants whose network is otherwise the same load too (4.22.lite, 4.25.heavy with doubled blocks,
4.26.heavy with a 16-channel ``Head`` output), and so do the small random networks of the tests. The one known
variant whose arithmetic differs while its tensors look alike, 4.25.lite (its blocks run at
32, 16, 8, 4, 1), is recognised by its last block's width and refused.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "FAMILIES",
    "VERSION_ALIASES",
    "IFBlock",
    "IFNet",
    "RifeArch",
    "UnknownArchitecture",
    "detect_arch",
    "expected_shapes",
    "family_arch",
    "normalize_version",
    "warp",
]

Encoder = Literal["none", "conv2", "head"]

RESIDUAL_CONVS = 8
"""Residual 3x3 convolutions in every block's body (``convblock.0`` ... ``convblock.7``)."""

_NETWORK = ("block", "encode.")
"""Tensor-name prefixes of the network itself; a file's other tensors (a training checkpoint's
``teacher``, ``caltime``) are not used by inference and are skipped on load."""


@dataclass(frozen=True)
class RifeArch:
    """Everything that decides the shape and the arithmetic of one IFNet.

    Attributes:
        family: ``"4.6"``, ``"4.7"``, ``"4.22"`` or ``"4.25"``.
        encoder: ``"none"`` (4.6), ``"conv2"`` (4.7: conv then deconv, no activation between) or
            ``"head"`` (4.21 on: four layers with LeakyReLU between).
        encoder_channels: the encoder's inner width (0 without one).
        feature_channels: channels the encoder gives per frame (0 without one).
        widths: every block's width ``c`` (its first conv has ``c // 2`` outputs).
        carries_features: each block hands 8 feature channels to the next (4.21 on).
        accumulates_mask: the mask is a sum over the blocks (4.6) rather than replaced by each.
        variant: the published release the widths match (``"4.25.heavy"``), or ``"custom"``.
    """

    family: str
    encoder: Encoder
    encoder_channels: int
    feature_channels: int
    widths: tuple[int, ...]
    carries_features: bool
    accumulates_mask: bool
    variant: str = ""

    @property
    def scales(self) -> tuple[int, ...]:
        """Each block's downscale at ``scale=1``: ``(8, 4, 2, 1)``, or ``(16, 8, 4, 2, 1)`` with five blocks."""
        return tuple(2 ** (len(self.widths) - 1 - i) for i in range(len(self.widths)))

    @property
    def block_outputs(self) -> int:
        """Channels a block's ``lastconv`` gives after the pixel shuffle (6, or 13 with features)."""
        return 13 if self.carries_features else 6

    def block_inputs(self, index: int) -> int:
        """Input channels of block ``index`` (the flow the block receives included)."""
        if index == 0:
            return 3 + 3 + 2 * self.feature_channels + 1  # frames, encoder features, time
        carried = self.block_outputs - 5 if self.carries_features else 0
        return 3 + 3 + 2 * self.feature_channels + 1 + 1 + carried + 4  # warped frames, features, time, mask, flow

    @property
    def pad_multiple(self) -> int:
        """The frame size must be a multiple of this at ``scale=1`` (coarsest block's downscale times 4)."""
        return 4 * self.scales[0]

    def describe(self) -> str:
        """A short description: ``"RIFE 4.25/4.26 (5 blocks, widths 192/128/96/64/32, Head 16->4)"``."""
        encoder = {
            "none": "no encoder",
            "conv2": f"encoder {self.encoder_channels}->{self.feature_channels}",
            "head": f"Head {self.encoder_channels}->{self.feature_channels}",
        }[self.encoder]
        releases = "/".join(release for release, family in VERSION_ALIASES.items() if family == self.family)
        if self.variant == "custom":
            name = f"{releases}-like (sizes of no published release)"
        elif self.variant in ("", self.family):
            name = releases
        else:
            name = self.variant
        widths = "/".join(str(w) for w in self.widths)
        return f"RIFE {name} ({len(self.widths)} blocks, widths {widths}, {encoder})"


FAMILIES: dict[str, RifeArch] = {
    "4.6": RifeArch("4.6", "none", 0, 0, (192, 128, 96, 64), False, True, "4.6"),
    "4.7": RifeArch("4.7", "conv2", 16, 4, (192, 128, 96, 64), False, False, "4.7"),
    "4.22": RifeArch("4.22", "head", 32, 8, (256, 192, 96, 48), True, False, "4.22"),
    "4.25": RifeArch("4.25", "head", 16, 4, (192, 128, 96, 64, 32), True, False, "4.25"),
}
"""The published shape of each family dreamreel runs (the release the family is named after)."""

VERSION_ALIASES: dict[str, str] = {
    "4.6": "4.6",
    "4.7": "4.7",
    "4.8": "4.7",
    "4.9": "4.7",
    "4.21": "4.22",
    "4.22": "4.22",
    "4.23": "4.22",
    "4.25": "4.25",
    "4.26": "4.25",
}
"""Release -> family: the releases whose ``flownet.pkl`` holds the same network as the family's."""

_VARIANTS: dict[tuple[str, int, int, tuple[int, ...]], str] = {
    ("4.6", 0, 0, (192, 128, 96, 64)): "4.6",
    ("4.7", 16, 4, (192, 128, 96, 64)): "4.7",
    ("4.22", 32, 8, (256, 192, 96, 48)): "4.22",
    ("4.22", 16, 4, (192, 128, 64, 32)): "4.22.lite",
    ("4.25", 16, 4, (192, 128, 96, 64, 32)): "4.25",
    ("4.25", 16, 4, (384, 256, 192, 128, 64)): "4.25.heavy",
    ("4.25", 16, 16, (192, 128, 96, 64, 32)): "4.26.heavy",
}
"""Published releases by (family, encoder width, encoder output, block widths)."""

_REFUSED: dict[tuple[str, int, int, tuple[int, ...]], str] = {
    ("4.25", 16, 4, (192, 128, 96, 64, 24)): (
        "RIFE 4.25.lite, whose blocks run at other scales (32, 16, 8, 4, 1) than 4.25's; dreamreel does not "
        "run it. Use the 4.25 or 4.26 flownet.pkl"
    ),
}


def normalize_version(version: str) -> str:
    """``"4.9"`` / ``"v4.9"`` / ``"rife49"`` / ``"4.9.0"`` -> the family ``"4.7"``; ``"4.25.heavy"`` -> ``"4.25"``.

    Raises:
        ValueError: not a release dreamreel reads (the message lists them).
    """
    text = str(version).strip().lower().removeprefix("rife").removeprefix("v").strip(" _-")
    if text.isdigit() and len(text) >= 2:  # ComfyUI's names: rife47, rife426
        text = f"{text[0]}.{text[1:]}"
    text = text.removesuffix(".0") if text.count(".") == 2 else text
    for refused in _REFUSED.values():
        if refused.startswith(f"RIFE {text},"):
            raise ValueError(refused.removeprefix("RIFE "))
    if text not in VERSION_ALIASES and text in _VARIANTS.values():
        text = text.rsplit(".", 1)[0]
    if text not in VERSION_ALIASES:
        known = ", ".join([*VERSION_ALIASES, *sorted(set(_VARIANTS.values()) - set(VERSION_ALIASES))])
        raise ValueError(f"unknown RIFE version {version!r}; dreamreel reads {known}")
    return VERSION_ALIASES[text]


def family_arch(
    version: str, *, widths: Sequence[int] | None = None, encoder: tuple[int, int] | None = None
) -> RifeArch:
    """The architecture of a release, optionally with other block widths or encoder size.

    Args:
        version: a release or family (``"4.9"`` -> the 4.7 family).
        widths: every block's width, one per block (even numbers); None for the published ones.
        encoder: ``(inner width, output channels)`` of the encoder; None for the published ones.
    """
    base = FAMILIES[normalize_version(version)]
    arch = base
    if widths is not None:
        widths = tuple(int(w) for w in widths)
        if len(widths) != len(base.widths) or any(w < 2 or w % 2 for w in widths):
            raise ValueError(f"RIFE {base.family} needs {len(base.widths)} even block widths; got {widths}")
        arch = replace(arch, widths=widths)
    if encoder is not None and base.encoder != "none":
        arch = replace(arch, encoder_channels=int(encoder[0]), feature_channels=int(encoder[1]))
    key = (arch.family, arch.encoder_channels, arch.feature_channels, arch.widths)
    return replace(arch, variant=_VARIANTS.get(key, "custom"))


# --------------------------------------------------------------------------------------------- network


def _conv(inputs: int, outputs: int, stride: int) -> nn.Sequential:
    """A 3x3 convolution and LeakyReLU(0.2) (keys ``N.0.weight``, ``N.0.bias``)."""
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, stride, 1), nn.LeakyReLU(0.2, inplace=True))


class ResidualConv(nn.Module):
    """``leaky_relu(conv(x) * beta + x)``: a 3x3 convolution with a learned per-channel gain."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.relu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x) * self.beta + x)


class Head(nn.Module):
    """The feature encoder of 4.21 on: conv (stride 2), two convs, deconv (x2); LeakyReLU between."""

    def __init__(self, channels: int, outputs: int) -> None:
        super().__init__()
        self.cnn0 = nn.Conv2d(3, channels, 3, 2, 1)
        self.cnn1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.cnn2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(channels, outputs, 4, 2, 1)
        self.relu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.cnn0(x))
        x = self.relu(self.cnn1(x))
        x = self.relu(self.cnn2(x))
        out: torch.Tensor = self.cnn3(x)
        return out


def _resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Bilinear resize by ``factor`` (half-pixel centres), as the published blocks do it."""
    if factor == 1.0:
        return x
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


class IFBlock(nn.Module):
    """One coarse-to-fine step: from its inputs at ``1 / scale`` resolution, a flow (or a flow correction),
    a mask and, with ``features``, 8 channels for the next block.

    Layout (the published one): ``conv0`` = two stride-2 convs (to ``c // 2``, then ``c``),
    ``convblock`` = 8 :class:`ResidualConv`, ``lastconv`` = a stride-2 deconv to ``4 * outputs``
    channels and a pixel shuffle (x2), so the block works at 1/4 of its input size and answers at
    full size.
    """

    def __init__(self, inputs: int, width: int, outputs: int) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(_conv(inputs, width // 2, 2), _conv(width // 2, width, 2))
        self.convblock = nn.Sequential(*(ResidualConv(width) for _ in range(RESIDUAL_CONVS)))
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(width, 4 * outputs, 4, 2, 1), nn.PixelShuffle(2))

    def forward(
        self, x: torch.Tensor, flow: torch.Tensor | None, scale: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(flow, mask, features)`` at the input's size; the flow is in full-size pixels."""
        x = _resize(x, 1.0 / scale)
        if flow is not None:
            x = torch.cat((x, _resize(flow, 1.0 / scale) / scale), 1)
        out = self.lastconv(self.convblock(self.conv0(x)))
        out = _resize(out, scale)
        return out[:, :4] * scale, out[:, 4:5], out[:, 5:]


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: ``out[y, x] = image[y + flow_y, x + flow_x]``, bilinear, border pixels repeated.

    Args:
        image: ``(N, C, H, W)``.
        flow: ``(N, 2, H, W)`` displacements in pixels, x first.

    The sampling grid puts pixel centres at -1 ... 1 (``align_corners=True``), so a zero flow gives
    back ``image`` itself. The grid is built in float32 and handed to ``grid_sample`` in the
    image's dtype.
    """
    height, width = image.shape[-2:]
    xs = torch.linspace(-1.0, 1.0, width, device=flow.device, dtype=torch.float32)
    ys = torch.linspace(-1.0, 1.0, height, device=flow.device, dtype=torch.float32)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    gx = grid_x + flow[:, 0].float() / ((width - 1.0) / 2.0)
    gy = grid_y + flow[:, 1].float() / ((height - 1.0) / 2.0)
    grid = torch.stack((gx, gy), dim=3).to(image.dtype)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


class IFNet(nn.Module):
    """The RIFE v4 flow network of one :class:`RifeArch`.

    Tensor names: ``block0`` ... ``block3`` (``block4`` in the 4.25 family), each an
    :class:`IFBlock`; ``encode``: absent (4.6), ``encode.0`` / ``encode.1`` (4.7) or
    ``encode.cnn0`` ... ``encode.cnn3`` (4.22, 4.25).
    """

    def __init__(self, arch: RifeArch) -> None:
        super().__init__()
        self.arch = arch
        self.blocks: list[IFBlock] = []  # the blocks coarse to fine (registered as block0, block1, ...)
        for index, width in enumerate(arch.widths):
            block = IFBlock(arch.block_inputs(index), width, arch.block_outputs)
            self.add_module(f"block{index}", block)
            self.blocks.append(block)
        self.encode: nn.Module | None
        if arch.encoder == "conv2":
            self.encode = nn.Sequential(
                nn.Conv2d(3, arch.encoder_channels, 3, 2, 1),
                nn.ConvTranspose2d(arch.encoder_channels, arch.feature_channels, 4, 2, 1),
            )
        elif arch.encoder == "head":
            self.encode = Head(arch.encoder_channels, arch.feature_channels)
        else:
            self.encode = None

    def forward(
        self, img0: torch.Tensor, img1: torch.Tensor, timestep: torch.Tensor, scale: float = 1.0
    ) -> torch.Tensor:
        """The frame at ``timestep`` between ``img0`` (t=0) and ``img1`` (t=1).

        Args:
            img0, img1: ``(N, 3, H, W)`` in 0..1; H and W multiples of ``arch.pad_multiple / scale``
                (at least ``arch.pad_multiple``).
            timestep: ``(N, 1, H, W)`` (or broadcastable ``(N, 1, 1, 1)``), the time of each sample.
            scale: the resolution the flow is estimated at (0.5 for 4K frames).

        Returns:
            ``(N, 3, H, W)``, not clamped.
        """
        n, _, height, width = img0.shape
        time = timestep.to(img0.dtype).expand(n, 1, height, width)
        feats0 = feats1 = None
        if self.encode is not None:
            feats0, feats1 = self.encode(img0), self.encode(img1)
        flow: torch.Tensor | None = None
        mask = features = img0[:, :0]  # empty until the first block answers
        warped0, warped1 = img0, img1
        for index, block in enumerate(self.blocks):
            level = self.arch.scales[index] / scale
            parts = [warped0, warped1]
            if feats0 is not None and feats1 is not None:
                if flow is None:
                    parts += [feats0, feats1]
                else:
                    parts += [warp(feats0, flow[:, :2]), warp(feats1, flow[:, 2:4])]
            parts.append(time)
            if flow is None:
                flow, mask, features = block(torch.cat(parts, 1), None, level)
            else:
                parts.append(mask)
                if self.arch.carries_features:
                    parts.append(features)
                delta, new_mask, features = block(torch.cat(parts, 1), flow, level)
                flow = flow + delta
                mask = mask + new_mask if self.arch.accumulates_mask else new_mask
            warped0 = warp(img0, flow[:, :2])
            warped1 = warp(img1, flow[:, 2:4])
        weight = torch.sigmoid(mask)
        return warped0 * weight + warped1 * (1 - weight)


# --------------------------------------------------------------------------------------------- detection


class UnknownArchitecture(ValueError):
    """A state dict is not an IFNet of a family dreamreel runs; the message says what was found.

    ``refused_variant`` is True when it is a published release dreamreel knows and does not run
    (the message then says which and what to use instead).
    """

    def __init__(self, message: str, *, refused_variant: bool = False) -> None:
        super().__init__(message)
        self.refused_variant = refused_variant


def expected_shapes(arch: RifeArch) -> dict[str, tuple[int, ...]]:
    """Every tensor name of an :class:`IFNet` and its shape (built on the meta device: no memory)."""
    with torch.device("meta"):
        net = IFNet(arch)
    return {name: tuple(tensor.shape) for name, tensor in net.state_dict().items()}


def _shape(shapes: Mapping[str, tuple[int, ...]], name: str, index: int, default: int = 0) -> int:
    shape = shapes.get(name)
    return shape[index] if shape is not None and len(shape) > index else default


def _encoder_text(encoder: Encoder | None, channels: int, outputs: int) -> str:
    if encoder == "head":
        return f"a Head encoder {channels}->{outputs}"
    if encoder == "conv2":
        return f"a 2-layer encoder {channels}->{outputs}"
    return "no encoder" if encoder == "none" else "an encoder of another kind"


def _found(shapes: Mapping[str, tuple[int, ...]]) -> tuple[str, Encoder | None, int, int, tuple[int, ...]]:
    """(summary, encoder kind, encoder width, encoder outputs, block widths) of what a state dict holds."""
    blocks = 0
    while f"block{blocks}.conv0.1.0.weight" in shapes:
        blocks += 1
    widths = tuple(_shape(shapes, f"block{i}.conv0.1.0.weight", 0) for i in range(blocks))
    encoder: Encoder | None
    if "encode.cnn0.weight" in shapes and "encode.cnn3.weight" in shapes:
        encoder = "head"
        channels, outputs = _shape(shapes, "encode.cnn0.weight", 0), _shape(shapes, "encode.cnn3.weight", 1)
    elif "encode.0.weight" in shapes and "encode.1.weight" in shapes and "encode.2.weight" not in shapes:
        encoder = "conv2"
        channels, outputs = _shape(shapes, "encode.0.weight", 0), _shape(shapes, "encode.1.weight", 1)
    elif not any(name.startswith("encode.") for name in shapes):
        encoder, channels, outputs = "none", 0, 0
    else:
        encoder, channels, outputs = None, 0, 0
    parts = [f"{blocks} blocks (widths {'/'.join(map(str, widths))})" if blocks else "no IFNet blocks (block0...)"]
    parts.append(_encoder_text(encoder, channels, outputs))
    if blocks:
        last = _shape(shapes, "block0.lastconv.0.weight", 1)
        parts.append(f"block outputs {last // 4 if last else '?'} channels")
    others = sorted({name.split(".")[0] for name in shapes if not name.startswith(("block", "encode."))})
    if others:
        parts.append("also " + ", ".join(others))
    return ", ".join(parts), encoder, channels, outputs, widths


def _mismatches(shapes: Mapping[str, tuple[int, ...]], arch: RifeArch) -> list[str]:
    expected = expected_shapes(arch)
    wrong = [
        f"{name} is {tuple(shapes[name])}, expected {shape}"
        for name, shape in expected.items()
        if name in shapes and tuple(shapes[name]) != shape
    ]
    wrong += [f"{name} missing" for name in expected if name not in shapes]
    wrong += [f"unexpected {name}" for name in shapes if name not in expected and name.startswith(_NETWORK)]
    return wrong


def detect_arch(shapes: Mapping[str, tuple[int, ...]], version: str | None = None) -> RifeArch:
    """The :class:`RifeArch` of a state dict (names without ``module.``, shapes as tuples).

    Args:
        shapes: tensor name -> shape.
        version: a release to insist on (``"4.9"``); None to detect it.

    Returns:
        The architecture, with the widths and encoder size read from the file; ``variant`` names the
        published release whose shapes it has, or is ``"custom"``.

    Raises:
        UnknownArchitecture: the tensors are not those of a family dreamreel runs (or not those of
            ``version``); the message describes what was found.
    """
    summary, encoder, channels, outputs, widths = _found(shapes)
    families = [normalize_version(version)] if version is not None else list(FAMILIES)
    reasons: list[str] = []
    for family in families:
        base = FAMILIES[family]
        if encoder != base.encoder or len(widths) != len(base.widths):
            needs = _encoder_text(base.encoder, base.encoder_channels, base.feature_channels)
            reasons.append(f"{family} has {len(base.widths)} blocks and {needs}")
            continue
        try:
            arch = family_arch(family, widths=widths, encoder=(channels, outputs))
        except ValueError as exc:
            reasons.append(f"{family} differs: {exc}")
            continue
        refused = _REFUSED.get((arch.family, arch.encoder_channels, arch.feature_channels, arch.widths))
        if refused:
            raise UnknownArchitecture(f"it is {refused}", refused_variant=True)
        wrong = _mismatches(shapes, arch)
        if not wrong:
            return arch
        more = f" and {len(wrong) - 3} more" if len(wrong) > 3 else ""
        reasons.append(f"{family} differs: {'; '.join(wrong[:3])}{more}")
    wanted = f"RIFE {version}" if version is not None else "a RIFE version dreamreel runs"
    raise UnknownArchitecture(f"it is not {wanted}: it holds {summary} (dreamreel knows: {' | '.join(reasons)})")
