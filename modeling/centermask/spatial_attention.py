"""CenterMask's spatial attention module (SAM) for RoI features."""
import torch
from torch import Tensor, nn


class SpatialAttention(nn.Module):
    """Reweights every cell of a RoI feature map by how salient it is (CenterMask, Lee & Park 2020, §3.3).

    Channel-wise average and max pooling give two (N, 1, R, R) descriptors; a 3×3 convolution (2 -> 1 channels,
    no bias: 18 parameters, as in centermask2) and a sigmoid turn them into an attention map that multiplies the
    features, so the cells of the object count more than the background the box also covers.
    """

    def __init__(self, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (N, C, R, R) -> same shape."""
        descriptors = torch.cat((x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)), dim=1)
        return x * torch.sigmoid(self.conv(descriptors))
