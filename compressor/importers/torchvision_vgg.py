"""torchvision's ``VGG`` module rebuilt without torchvision, to write model files in its layout.

chipq itself never runs this class: the test suite and the benchmarks use it to make VGG state dicts
with torchvision's parameter names (``features.N.*``, ``classifier.*``).
"""

from __future__ import annotations

import torch
from torch import nn

from chipq.importers.torchvision_layout import POOL, VGG_CFGS


def make_features(cfg: list[int | str], batch_norm: bool = False, in_channels: int = 3) -> nn.Sequential:
    """torchvision's ``VGG.features`` for `cfg`, same module order hence same parameter names."""
    layers: list[nn.Module] = []
    for value in cfg:
        if value == POOL:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(in_channels, int(value), kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(int(value)))
        layers.append(nn.ReLU(inplace=True))
        in_channels = int(value)
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """torchvision's VGG: ``features`` and, optionally, ``avgpool`` + ``classifier``.

    Args:
        cfg: a configuration name ("A", "B", "D", "E") or a list as in `VGG_CFGS`.
        batch_norm: the ``vgg*_bn`` variant.
        classifier: add torchvision's three-layer classifier head.
        num_classes: classifier outputs.
        hidden: width of the two hidden classifier layers (torchvision: 4096).
        pool_size: side of the adaptive average pool before the classifier (torchvision: 7).
    """

    def __init__(
        self,
        cfg: str | list[int | str] = "D",
        batch_norm: bool = False,
        classifier: bool = False,
        num_classes: int = 1000,
        hidden: int = 4096,
        pool_size: int = 7,
    ) -> None:
        super().__init__()
        cfg_list = VGG_CFGS[cfg] if isinstance(cfg, str) else list(cfg)
        self.features = make_features(cfg_list, batch_norm)
        self.has_classifier = classifier
        if classifier:
            last = [v for v in cfg_list if v != POOL][-1]
            self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size))
            self.classifier = nn.Sequential(
                nn.Linear(int(last) * pool_size * pool_size, hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(),
                nn.Linear(hidden, hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(),
                nn.Linear(hidden, num_classes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if self.has_classifier:
            x = self.classifier(torch.flatten(self.avgpool(x), 1))
        return x
