"""Stand-ins shared by the model tests: a tiny backbone and the tiny config, so the model is testable on CPU
without the real backbones or any data."""
import os

import torch
from torch import nn

from configs.defaults import get_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class StandInBackbone(nn.Module):
    """Two strided convolutions (stride 8) exposing one feature map under ``name``."""

    def __init__(self, name: str = "p5", channels: int = 32):
        super().__init__()
        self.name = name
        self.channels = channels
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=4, padding=1), nn.ReLU(), nn.Conv2d(16, channels, 3, stride=2, padding=1)
        )

    def output_shape(self):
        return {self.name: (self.channels, 8)}

    def forward(self, x):
        return {self.name: self.body(x)}


def tiny_cfg(**overrides):
    """``configs/tiny_cpu.yaml`` with optional ``KEY=value`` overrides (dots as ``__``)."""
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs", "tiny_cpu.yaml"))
    for key, value in overrides.items():
        node = cfg
        parts = key.split("__")
        for part in parts[:-1]:
            node = getattr(node, part)
        setattr(node, parts[-1], value)
    return cfg


def batch_item(image: torch.Tensor, boxes, labels, relations, original_size=None) -> dict:
    """A batch item in the data contract's layout (boxes in resized-image pixels)."""
    height, width = original_size or image.shape[1:]
    return {
        "image": image,
        "height": int(height),
        "width": int(width),
        "image_id": 0,
        "instances": {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "relations": torch.tensor(relations, dtype=torch.int64).reshape(-1, 3),
        },
    }
