"""CIFAR ResNets: He et al. 2016 section 4.2 (depth 6n+2) and the unlearning literature's ResNet-18.

References:
    He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016, section 4.2:
    3x3 stem with 16 channels, three stages of n basic blocks with 16/32/64 channels, global
    average pooling, a linear classifier; downsampling shortcuts are parameter-free ("option A":
    subsample by 2, zero-pad the new channels).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from . import register_model
from .small import _normalize


class _Block(nn.Module):
    """Basic residual block; ``option`` "A" (zero-pad) or "B" (1x1 conv) downsampling shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, option: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = 0
        self.subsample = stride != 1 or cin != cout
        self.shortcut: nn.Module = nn.Identity()
        if self.subsample and option == "B":
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )
        elif self.subsample:
            self.pad = (cout - cin) // 2
            self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.subsample and isinstance(self.shortcut, nn.Identity):
            short = x[:, :, :: self.stride, :: self.stride]
            short = F.pad(short, (0, 0, 0, 0, self.pad, self.pad))
        else:
            short = self.shortcut(x)
        return F.relu(out + short)


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs: 3x3 stem (no max-pool), stages of basic blocks, linear head."""

    def __init__(
        self,
        widths: Sequence[int],
        blocks: Sequence[int],
        option: str,
        num_classes: int,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.normalize = _normalize(in_channels, mean, std)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        # Names follow the common public CIFAR ResNet code (conv1, bn1, layer1.., linear;
        # shortcut.0/.1 for 1x1 shortcuts) so their checkpoints load after a prefix strip.
        self.stages = len(widths)
        cin = widths[0]
        for i, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            stage = []
            for j in range(count):
                stage.append(_Block(cin, width, 2 if (j == 0 and i > 0) else 1, option))
                cin = width
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.linear = nn.Linear(cin, num_classes)
        self.init_weights()

    def init_weights(self) -> None:
        """Kaiming-normal convolutions and classifier, BatchNorm at identity (He et al.)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(
                    m.weight, mode="fan_out" if isinstance(m, nn.Conv2d) else "fan_in"
                )
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(self.normalize(x))))
        for i in range(self.stages):
            out = getattr(self, f"layer{i + 1}")(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def _depth_resnet(depth: int):
    n = (depth - 2) // 6

    def build(num_classes: int, in_channels: int = 3, **kwargs) -> nn.Module:
        return CifarResNet((16, 32, 64), (n, n, n), "A", num_classes, in_channels, **kwargs)

    build.__doc__ = f"CIFAR ResNet-{depth} (He et al. 2016, n={n}, option-A shortcuts)."
    return build


for _depth in (20, 32, 44, 56):
    register_model(f"resnet{_depth}")(_depth_resnet(_depth))


@register_model("resnet18_cifar")
def resnet18_cifar(num_classes: int, in_channels: int = 3, **kwargs) -> nn.Module:
    """ResNet-18 for CIFAR (3x3 stem, no max-pool, 1x1-conv shortcuts): the unlearning literature's."""
    return CifarResNet((64, 128, 256, 512), (2, 2, 2, 2), "B", num_classes, in_channels, **kwargs)
