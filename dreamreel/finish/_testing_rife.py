"""Small random-weight RIFE networks saved the way Practical-RIFE saves them, for tests and examples.

:func:`write_tiny_flownet` writes a ``flownet.pkl``: ``torch.save`` of the IFNet's state dict with
``module.``-prefixed names (Practical-RIFE saves the DistributedDataParallel wrapper's state dict).
Every tensor name is the published one; the block widths are small (:data:`TINY_WIDTHS`) unless
``published=True``, and everything the version is recognised by keeps its real shape: the number
of blocks, the encoder and its size, each block's input and output channels.

The weights are seeded random numbers, so the frames such a network makes mean nothing; with
``zero_flow=True`` every block's last layer is zero, so the flows and the mask are zero and the
output is exactly the half-and-half blend of the two (padded) frames at any time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from dreamreel.finish.rife_arch import FAMILIES, IFNet, ResidualConv, RifeArch, family_arch, normalize_version

__all__ = ["TINY_WIDTHS", "tiny_arch", "tiny_ifnet", "write_tiny_flownet"]

TINY_WIDTHS: dict[str, tuple[int, ...]] = {
    "4.6": (16, 16, 8, 8),
    "4.7": (16, 16, 8, 8),
    "4.22": (16, 16, 8, 8),
    "4.25": (16, 16, 8, 8, 8),
}
"""Block widths of the small networks, per family."""


def tiny_arch(version: str, *, published: bool = False, widths: Sequence[int] | None = None) -> RifeArch:
    """The architecture :func:`tiny_ifnet` builds: the release's, with small block widths unless ``published``."""
    family = normalize_version(version)
    if published:
        return FAMILIES[family]
    return family_arch(family, widths=widths if widths is not None else TINY_WIDTHS[family])


def tiny_ifnet(
    version: str,
    *,
    seed: int = 0,
    published: bool = False,
    widths: Sequence[int] | None = None,
    zero_flow: bool = False,
) -> IFNet:
    """An :class:`~dreamreel.finish.rife_arch.IFNet` of a release with seeded random weights (CPU, float32).

    Weights are normal with standard deviation ``0.5 / sqrt(fan_in)``, biases 0.01 times normal,
    the residual gains ``beta`` 0.5, so the flows stay a few pixels. ``zero_flow`` zeroes every
    block's ``lastconv`` (see the module docstring).
    """
    arch = tiny_arch(version, published=published, widths=widths)
    with torch.device("cpu"):
        net = IFNet(arch)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in net.named_modules():
            if isinstance(module, ResidualConv):
                module.beta.fill_(0.5)
            elif isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
                weight = module.weight
                if isinstance(module, nn.ConvTranspose2d):  # (inputs, outputs, k, k), stride 2
                    fan_in = weight.shape[0] * weight.shape[2] * weight.shape[3] // 4
                else:
                    fan_in = math.prod(weight.shape[1:])
                weight.copy_(torch.randn(weight.shape, generator=generator) * (0.5 / math.sqrt(fan_in)))
                if module.bias is not None:
                    module.bias.copy_(0.01 * torch.randn(module.bias.shape, generator=generator))
                if zero_flow and name.endswith("lastconv.0"):
                    weight.zero_()
                    if module.bias is not None:
                        module.bias.zero_()
    return net.eval()


def write_tiny_flownet(
    path: Path,
    version: str,
    *,
    seed: int = 0,
    published: bool = False,
    widths: Sequence[int] | None = None,
    zero_flow: bool = False,
) -> Path:
    """Write a random-weight ``flownet.pkl`` of a release (``"4.6"``, ``"4.9"``, ``"4.22"``, ``"4.26"``, ...).

    Args:
        path: the file to write (its folder is created).
        version: the release; the file holds that release's family network.
        seed: the weights' seed.
        published: the published block widths (a 21-37 MB file) instead of :data:`TINY_WIDTHS`.
        widths: other block widths (even numbers, one per block).
        zero_flow: zero every block's last layer, so the network blends the frames half and half.

    Returns:
        ``path``.
    """
    net = tiny_ifnet(version, seed=seed, published=published, widths=widths, zero_flow=zero_flow)
    state = {f"module.{name}": tensor.detach().clone() for name, tensor in net.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path
