"""One padded image batch: the single place where images are normalised, padded and masked (detectron2's
``ImageList.from_tensors``)."""
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch

__all__ = ["ImageList"]


class ImageList(NamedTuple):
    """A batch of differently sized images zero-padded into one tensor.

    Attributes:
        tensor: (B, 3, H, W) float, normalised images, zero in the padding.
        padding_mask: (B, H, W) bool, True where a pixel is padding.
        image_sizes: each image's unpadded (height, width).
    """

    tensor: torch.Tensor
    padding_mask: torch.Tensor
    image_sizes: List[Tuple[int, int]]

    @classmethod
    def from_tensors(cls, images: Sequence[torch.Tensor], size_divisibility: int, pixel_mean: torch.Tensor,
                     pixel_std: torch.Tensor, fixed_sizes: Optional[Sequence[Tuple[int, int]]] = None
                     ) -> "ImageList":
        """Normalise each (3, h, w) image with ``pixel_mean``/``pixel_std`` ((3, 1, 1), on the target device) and
        pad the batch to its largest height and width, rounded up to a multiple of ``size_divisibility``
        (1 = no rounding).  With ``fixed_sizes`` ((H, W) pairs, ``MODEL.STATIC_SHAPES``) the batch is padded to the
        smallest of them (by area) that holds every image instead, so a compiled model sees a few shapes only.
        Raises ``ValueError`` naming the batch item whose image is not (3, H, W), or when no fixed size fits."""
        device = pixel_mean.device
        images = [image.to(device, non_blocking=True) for image in images]
        for index, image in enumerate(images):
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"batch item {index}: 'image' must be (3, H, W), got {tuple(image.shape)}")
        sizes = [(int(image.shape[1]), int(image.shape[2])) for image in images]
        divisor = max(int(size_divisibility), 1)
        height = -(-max(h for h, _ in sizes) // divisor) * divisor
        width = -(-max(w for _, w in sizes) // divisor) * divisor
        if fixed_sizes:
            fitting = [(h, w) for h, w in fixed_sizes if h >= height and w >= width]
            if not fitting:
                raise ValueError(f"MODEL.STATIC_SHAPES: no fixed size of {list(fixed_sizes)} holds a batch of "
                                 f"images up to {height}x{width} (INPUT.MIN/MAX_SIZE_* larger than the sizes?)")
            height, width = min(fitting, key=lambda size: (size[0] * size[1], size))
        tensor = torch.zeros(len(images), 3, height, width, device=device)
        mask = torch.ones(len(images), height, width, dtype=torch.bool, device=device)
        for index, (image, (h, w)) in enumerate(zip(images, sizes)):
            tensor[index, :, :h, :w] = (image.float() - pixel_mean) / pixel_std
            mask[index, :h, :w] = False
        return cls(tensor, mask, sizes)
