"""VoVNetV2 (Lee & Park, CenterMask, CVPR 2020): One-Shot-Aggregation stages with residuals and effective SE.

Layout and module names follow the released vovnet-detectron2/centermask2 weights, so a checkpoint loads by a plain
key rename (``modeling.weight_conversion``):

* stem: three 3x3 conv-norm-ReLU (``stem.stem_1/conv``, ``stem.stem_1/norm`` ... ``stem_3``), strides 2, 1, 2;
* ``stage2`` ... ``stage5`` (strides 4, 8, 16, 32); stages 3-5 begin with a 3x3/2 max-pool (``ceil_mode``);
* an OSA module ``stageS.OSAS_M``: a chain of 3x3 conv-norm-ReLU ``layers.i.OSAS_M_i/conv``, **one** concatenation
  of the module input and every layer output, a 1x1 conv-norm-ReLU ``concat.OSAS_M_concat/conv`` to the stage width,
  effective SE ``ese.fc`` in **every** module (unlike timm's ``ese_vovnet``, which has it only in a stage's last
  module), then an identity shortcut in all but the first module of a stage;
* the ``-dw`` specs use depthwise-separable 3x3 layers (``/dw_conv3x3`` + ``/pw_conv1x1`` + ``/pw_norm``) and,
  when the module input is wider than the layers, a 1x1 reduction ``conv_reduction.OSAS_M_reduction_0/conv``.
"""
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .norm import build_norm, freeze
from .shape_spec import ShapeSpec


@dataclass(frozen=True)
class VoVNetSpec:
    """Widths and depths of one VoVNet variant."""

    stem_channels: Tuple[int, int, int]
    layer_channels: Tuple[int, int, int, int]  # width of the 3x3 layers of stages 2-5
    out_channels: Tuple[int, int, int, int]  # width after the 1x1 aggregation of stages 2-5
    layers_per_module: int
    modules_per_stage: Tuple[int, int, int, int]
    depthwise: bool = False


_WIDE = dict(layer_channels=(128, 160, 192, 224), out_channels=(256, 512, 768, 1024))
_SLIM = dict(layer_channels=(64, 80, 96, 112), out_channels=(112, 256, 384, 512))
VOVNET_SPECS = {
    "V-19-slim-dw-eSE": VoVNetSpec((64, 64, 64), **_SLIM, layers_per_module=3, modules_per_stage=(1, 1, 1, 1),
                                   depthwise=True),
    "V-19-slim-eSE": VoVNetSpec((64, 64, 128), **_SLIM, layers_per_module=3, modules_per_stage=(1, 1, 1, 1)),
    "V-19-eSE": VoVNetSpec((64, 64, 128), **_WIDE, layers_per_module=3, modules_per_stage=(1, 1, 1, 1)),
    "V-39-eSE": VoVNetSpec((64, 64, 128), **_WIDE, layers_per_module=5, modules_per_stage=(1, 1, 2, 2)),
    "V-57-eSE": VoVNetSpec((64, 64, 128), **_WIDE, layers_per_module=5, modules_per_stage=(1, 1, 4, 3)),
    "V-99-eSE": VoVNetSpec((64, 64, 128), **_WIDE, layers_per_module=5, modules_per_stage=(1, 3, 9, 3)),
}
STAGE_NAMES = ("stage2", "stage3", "stage4", "stage5")
STAGE_STRIDES = (4, 8, 16, 32)
NORM_KEY = "MODEL.VOVNET.NORM"


def conv_norm_relu(in_channels: int, out_channels: int, name: str, norm: str, stride: int = 1,
                   kernel_size: int = 3) -> List[Tuple[str, nn.Module]]:
    """``name/conv`` (no bias), ``name/norm``, ``name/relu``: the named children of a Sequential."""
    return [
        (f"{name}/conv", nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)),
        (f"{name}/norm", build_norm(norm, out_channels, NORM_KEY)),
        (f"{name}/relu", nn.ReLU(inplace=True)),
    ]


def depthwise_separable(channels: int, name: str, norm: str, stride: int = 1) -> List[Tuple[str, nn.Module]]:
    """Depthwise 3x3 then pointwise 1x1 conv-norm-ReLU (no norm between them), width ``channels``."""
    return [
        (f"{name}/dw_conv3x3", nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False)),
        (f"{name}/pw_conv1x1", nn.Conv2d(channels, channels, 1, bias=False)),
        (f"{name}/pw_norm", build_norm(norm, channels, NORM_KEY)),
        (f"{name}/pw_relu", nn.ReLU(inplace=True)),
    ]


class EffectiveSE(nn.Module):
    """Effective squeeze-excitation: global average pool, one 1x1 conv C->C with bias, hard sigmoid, rescale."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.fc(x.mean(dim=(2, 3), keepdim=True))
        return x * (F.relu6(gate + 3.0) / 6.0)


class OSAModule(nn.Module):
    """One-Shot Aggregation module ``name`` (e.g. ``OSA4_3``), see the file docstring."""

    def __init__(self, in_channels: int, layer_channels: int, out_channels: int, num_layers: int, name: str,
                 norm: str, identity: bool, depthwise: bool):
        super().__init__()
        if identity and in_channels != out_channels:
            raise ValueError(f"{name}: an identity shortcut needs in_channels == out_channels")
        self.identity = identity
        self.conv_reduction = None
        if depthwise and in_channels != layer_channels:
            self.conv_reduction = nn.Sequential(OrderedDict(
                conv_norm_relu(in_channels, layer_channels, f"{name}_reduction_0", norm, kernel_size=1)))
        self.layers = nn.ModuleList()
        channels = in_channels
        for index in range(num_layers):
            if depthwise:
                layer = depthwise_separable(layer_channels, f"{name}_{index}", norm)
            else:
                layer = conv_norm_relu(channels, layer_channels, f"{name}_{index}", norm)
            self.layers.append(nn.Sequential(OrderedDict(layer)))
            channels = layer_channels
        aggregated = in_channels + num_layers * layer_channels
        self.concat = nn.Sequential(OrderedDict(
            conv_norm_relu(aggregated, out_channels, f"{name}_concat", norm, kernel_size=1)))
        self.ese = EffectiveSE(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        outputs = [x]
        y = x if self.conv_reduction is None else self.conv_reduction(x)
        for layer in self.layers:
            y = layer(y)
            outputs.append(y)
        y = self.ese(self.concat(torch.cat(outputs, dim=1)))
        return y + x if self.identity else y


def build_stage(stage: int, in_channels: int, layer_channels: int, out_channels: int, num_modules: int,
                num_layers: int, norm: str, depthwise: bool) -> nn.Sequential:
    """``stageN``: an optional ``Pooling`` max-pool (stages 3-5) then modules ``OSAN_1`` ... ``OSAN_k``."""
    children = []
    if stage > 2:
        children.append(("Pooling", nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)))
    for index in range(1, num_modules + 1):
        name = f"OSA{stage}_{index}"
        module_in = in_channels if index == 1 else out_channels
        children.append((name, OSAModule(module_in, layer_channels, out_channels, num_layers, name, norm,
                                         identity=index > 1, depthwise=depthwise)))
    return nn.Sequential(OrderedDict(children))


class VoVNet(nn.Module):
    """VoVNetV2 trunk returning ``out_features`` among ``stage2`` ... ``stage5``.

    Args:
        conv_body: a key of :data:`VOVNET_SPECS`.
        norm: "FrozenBN", "BN", "SyncBN" or "GN".
        freeze_at: number of leading stages frozen (0 none, 1 stem, 2 stem + stage2, ..., 5 everything).
        out_features: the stages returned by ``forward``.
    """

    def __init__(self, conv_body: str = "V-99-eSE", norm: str = "FrozenBN", freeze_at: int = 2,
                 out_features: Sequence[str] = ("stage3", "stage4", "stage5")):
        super().__init__()
        if conv_body not in VOVNET_SPECS:
            raise ValueError(f"MODEL.VOVNET.CONV_BODY must be one of {list(VOVNET_SPECS)}, got {conv_body!r}")
        unknown = [name for name in out_features if name not in STAGE_NAMES]
        if unknown or not out_features:
            raise ValueError(f"VoVNet out_features must be a non-empty subset of {STAGE_NAMES}, got {out_features}")
        if not 0 <= freeze_at <= 1 + len(STAGE_NAMES):
            raise ValueError(f"MODEL.BACKBONE.FREEZE_AT must be in [0, {1 + len(STAGE_NAMES)}], got {freeze_at}")
        spec = VOVNET_SPECS[conv_body]
        self.spec = spec
        self.out_features = tuple(name for name in STAGE_NAMES if name in out_features)

        stem_1, stem_2, stem_3 = spec.stem_channels
        stem = conv_norm_relu(3, stem_1, "stem_1", norm, stride=2)
        if spec.depthwise:
            if not stem_1 == stem_2 == stem_3:
                raise ValueError(f"{conv_body}: a depthwise stem keeps its width, got {spec.stem_channels}")
            stem += depthwise_separable(stem_2, "stem_2", norm) + depthwise_separable(stem_3, "stem_3", norm, 2)
        else:
            stem += conv_norm_relu(stem_1, stem_2, "stem_2", norm) + conv_norm_relu(stem_2, stem_3, "stem_3", norm, 2)
        self.stem = nn.Sequential(OrderedDict(stem))

        in_channels = stem_3
        for index, name in enumerate(STAGE_NAMES):
            self.add_module(name, build_stage(
                index + 2, in_channels, spec.layer_channels[index], spec.out_channels[index],
                spec.modules_per_stage[index], spec.layers_per_module, norm, spec.depthwise))
            in_channels = spec.out_channels[index]
        self._init_weights()
        for name in (["stem"] + list(STAGE_NAMES))[:freeze_at]:
            setattr(self, name, freeze(getattr(self, name)))

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module.bias is None:  # every conv but eSE's, which keeps torch's
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """``x`` (B, 3, H, W) normalised image -> the requested ``stageN`` maps (stride 4, 8, 16, 32)."""
        x = self.stem(x)
        outputs = {}
        for name in STAGE_NAMES:
            x = getattr(self, name)(x)
            if name in self.out_features:
                outputs[name] = x
            if name == self.out_features[-1]:
                break
        return outputs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {name: ShapeSpec(self.spec.out_channels[STAGE_NAMES.index(name)],
                                STAGE_STRIDES[STAGE_NAMES.index(name)]) for name in self.out_features}
