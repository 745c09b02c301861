"""The torch twin of `chipq.retrieval.pooling`, differentiable, for retraining losses.

Same regions and the same square-root pooling as `pooling.nip_rotation_vector`, on a batch of maps;
`tests/retrieval/test_pooling.py` checks the two agree. The only difference is `ROI_EPS` inside the
square root, which keeps the gradient of an all-zero region finite.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from chipq.retrieval.pooling import NIP_LEVELS
from chipq.retrieval.rois import rmac_regions

ROI_EPS = 1e-12


def region_descriptors(maps: torch.Tensor) -> torch.Tensor:
    """Per map, NIP steps 1, 2 and 4 (R-MAC regions, sqrt-mean-square, mean, L2): (N, C)."""
    regions = rmac_regions(maps.shape[3], maps.shape[2], NIP_LEVELS)
    pooled = [
        torch.sqrt(maps[:, :, b.y : b.y + b.h, b.x : b.x + b.w].square().mean(dim=(2, 3)) + ROI_EPS)
        for b in regions
    ]
    return F.normalize(torch.stack(pooled).mean(dim=0), dim=1)
