"""Normalisation layers of the backbones and the freezing of their first stages.

The backbones take their norm by name, as detectron2 does: ``"FrozenBN"`` (torchvision's
:class:`~torchvision.ops.misc.FrozenBatchNorm2d`: the affine parameters and statistics are buffers, so they are
neither trained nor counted as parameters), ``"BN"``, ``"SyncBN"`` or ``"GN"`` (32 groups).

Freezing a stage sets ``requires_grad=False`` on its parameters *and* turns its (Sync)BatchNorm layers into
FrozenBatchNorm2d; otherwise a "frozen" stage would still move its running statistics in training mode.
"""
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

NORM_NAMES = ("FrozenBN", "BN", "SyncBN", "GN")
GROUP_NORM_GROUPS = 32


def build_norm(name: str, channels: int, config_key: str = "NORM") -> nn.Module:
    """The normalisation layer ``name`` (one of :data:`NORM_NAMES`) over ``channels`` channels.

    ``config_key`` only names the configuration entry in error messages.
    """
    if name == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    if name == "BN":
        return nn.BatchNorm2d(channels)
    if name == "SyncBN":
        return nn.SyncBatchNorm(channels)
    if name == "GN":
        if channels % GROUP_NORM_GROUPS != 0:
            raise ValueError(
                f"{config_key} 'GN' uses {GROUP_NORM_GROUPS} groups, but a layer has {channels} channels "
                f"(not divisible); pick another norm for this architecture"
            )
        return nn.GroupNorm(GROUP_NORM_GROUPS, channels)
    raise ValueError(f"{config_key} must be one of {NORM_NAMES}, got {name!r}")


def convert_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Return ``module`` with every BatchNorm2d/SyncBatchNorm replaced by a FrozenBatchNorm2d holding its values.

    Works in place on children; the returned module is ``module`` itself unless ``module`` is a batch norm.
    """
    if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        with torch.no_grad():
            if module.affine:
                frozen.weight.copy_(module.weight)
                frozen.bias.copy_(module.bias)
            if module.track_running_stats:
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        converted = convert_frozen_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


def freeze(module: nn.Module) -> nn.Module:
    """Stop training ``module``: no gradients for its parameters, batch norms frozen.

    Returns the frozen module, which is a new object when ``module`` itself is a batch norm: assign it back.
    """
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return convert_frozen_batchnorm(module)
