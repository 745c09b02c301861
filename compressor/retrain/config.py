"""Retraining settings and per-step statistics: what the CLI needs before any training starts.

Kept apart from `chipq.retrain.trainer` so that reading them (option defaults, checkpoints' settings) does not
import PyTorch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from chipq.errors import ChipqError
from chipq.quant import RECONSTRUCT_IMAGES, SALIENCIES, SALIENCY
from chipq.quant.plan import LayerSpec

INITS = ("reconstruct", "weights")
INIT_FEEDBACK = ("auto", "on", "off")
HOLD_SHIFT = ("auto", "on", "off")


class RetrainConfigError(ChipqError):
    """A retraining setting out of range, or a checkpoint made with other settings."""


@dataclass(frozen=True)
class RetrainConfig:
    """Retraining settings; every field is recorded in the checkpoint."""

    steps: int = 40  # bench/retrain_sweep.py: the 5-minute budget on 2 cores (64-photo reconstruction start, 2.3 s a step)
    batch: int = 8
    crop: int = 224
    samples: int = 256
    lr: float = 1e-4
    seed: int = 0
    train_from: str = ""  # first conv to train; "" = the first conv with the plan's fewest bits
    map_weight: float = 1.0
    desc_weight: float = 1.0
    desc_center: bool = False  # descriptor term on descriptors minus the cache's mean teacher descriptor
    threads: int = 2
    init: str = "reconstruct"  # where training starts: "reconstruct" (chipq.quant.reconstruct) or "weights"
    init_images: int = RECONSTRUCT_IMAGES  # calibration images the reconstruction uses (the first N)
    init_positions: int = 16384  # sampled positions per layer for the reconstruction's statistics (bench/retrain_sweep.py)
    # the start's error feedback (GPTQ, `ReconstructConfig.error_feedback`): "auto" = on for a plan of
    # v1 settings only (on VGG-16 3x7,1x6 it is the better start), off as soon as a layer uses a v2
    # setting (narrower alpha, pruning): on the 2 MB plan 3x2,2a6x5,1a4k50x6 the feedback start
    # scored 0.769 mean NIP cosine against 0.812 without (32 evaluation photos); retrained, on 153
    # evaluation photos, cosine 0.815 either way, mAP 0.915 with feedback, 0.934 without
    # (the post-training blob that scored 0.829, 0.944 chose its pruned kernels by OBS saliency, the
    # reconstruction's default then and again now, after a time of output energy; it remakes it
    # byte for byte. Today the start alone scores 0.814 / 0.934, training ends where it starts, and
    # the post-training settings, 32 photos and 8192 positions, score 0.800 / 0.910: the start keeps
    # init_images/init_positions)
    init_feedback: str = "auto"
    # how the start's pruned layers choose the kernels they remove (`ReconstructConfig.saliency`,
    # whose default and its measurement this is)
    init_saliency: str = SALIENCY
    # trained pruning (chip format v2, a plan with kKEEP): the reconstruction start keeps prune_from
    # percentage points more of each trained pruned layer, and training removes them on a cubic
    # schedule over the first prune_share of the steps (0: the start is pruned to the target and
    # training only keeps the removed kernels at zero)
    prune_from: int = 0
    prune_share: float = 0.5
    # hold each trained layer's weight shift (its alpha grid) where training starts: after every step
    # a kernel whose fitted alpha grew past the start's largest is scaled back to it
    # (`QatNet.cap_alphas`), so the layer shift never drops. "auto" = on as soon as a layer uses a v2
    # setting: at 4-bit alpha most kernels sit on codes 0-3 of 15 (the shift is set by the one
    # largest alpha), so one kernel growing past the top halves the whole layer's grid; one step
    # lower costs that much (conv5_1 of 3x2,2a6x5,1a4k50x6, two reconstructions: shift 10, 5 % of
    # its kernels at alpha 0; shift 9, 17 %). With the default lr no shift moved in 40 steps on that
    # plan (training changed no 4-bit alpha code at all), so this guards longer or faster training
    # (tests/retrain/test_hold_shift.py: the drop at lr 3e-2). Off for v1 plans (8-bit alpha: a
    # halved grid costs little, and the default v1 blob stays byte-identical)
    hold_shift: str = "auto"

    def check(self) -> None:
        if self.init not in INITS:
            raise RetrainConfigError(f"retraining init {self.init!r}: one of {', '.join(INITS)}")
        if self.init_feedback not in INIT_FEEDBACK:
            raise RetrainConfigError(f"retraining init_feedback {self.init_feedback!r}: one of {', '.join(INIT_FEEDBACK)}")
        if self.init_saliency not in SALIENCIES:
            raise RetrainConfigError(f"retraining init_saliency {self.init_saliency!r}: one of {', '.join(SALIENCIES)}")
        if self.hold_shift not in HOLD_SHIFT:
            raise RetrainConfigError(f"retraining hold_shift {self.hold_shift!r}: one of {', '.join(HOLD_SHIFT)}")
        if self.init_images < 1 or self.init_positions < 1:
            raise RetrainConfigError("retraining init_images and init_positions must be at least 1")
        for name in ("steps", "batch", "crop", "samples", "threads"):
            least = 0 if name == "steps" else 1
            if getattr(self, name) < least:
                raise RetrainConfigError(f"retraining {name} {getattr(self, name)}: must be at least {least}")
        if self.crop < 32:
            raise RetrainConfigError(f"retraining crop {self.crop} px: at least 32 (the map of 5 pools)")
        if not 0 <= self.prune_from <= 100:
            raise RetrainConfigError(f"retraining prune_from {self.prune_from}: percentage points in 0..100")
        if not 0 < self.prune_share <= 1:
            raise RetrainConfigError(f"retraining prune_share {self.prune_share}: a share of the steps in (0, 1]")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise RetrainConfigError(f"retraining learning rate {self.lr} must be a positive number")

    def feedback_for(self, plan: Sequence[LayerSpec]) -> bool:
        """Whether the reconstruction start of `plan` uses error feedback (`init_feedback`).

        >>> RetrainConfig().feedback_for([LayerSpec(3), LayerSpec(1)]), RetrainConfig().feedback_for([LayerSpec(1, 4)])
        (True, False)
        """
        if self.init_feedback != "auto":
            return self.init_feedback == "on"
        return not any(spec.uses_v2 for spec in plan)

    def holds_shift(self, plan: Sequence[LayerSpec]) -> bool:
        """Whether training holds the trained layers' weight shifts (`hold_shift`).

        >>> RetrainConfig().holds_shift([LayerSpec(3), LayerSpec(1)]), RetrainConfig().holds_shift([LayerSpec(1, 4)])
        (False, True)
        """
        if self.hold_shift != "auto":
            return self.hold_shift == "on"
        return any(spec.uses_v2 for spec in plan)

    def steps_per_epoch(self) -> int:
        return math.ceil(self.samples / self.batch)

    def kept_at(self, start: int, target: int, step: int) -> int:
        """Kernels a pruned layer keeps during step `step` (0-based): `start` at step 0, falling
        as a cube (Zhu & Gupta's gradual pruning) to `target` at ``prune_share * steps`` and after.

        >>> config = RetrainConfig(steps=10, prune_share=0.5)
        >>> [config.kept_at(100, 20, step) for step in (0, 1, 2, 4, 5, 9)]
        [100, 61, 38, 21, 20, 20]
        """
        span = max(1, round(self.prune_share * self.steps))
        left = max(0.0, 1.0 - step / span)
        return target + math.ceil((start - target) * left**3)


@dataclass
class StepStats:
    """One training step: the loss and the mean descriptor cosine of its batch to the teacher, and
    the kernels `hold_shift` scaled back after it."""

    step: int
    loss: float
    cosine: float
    capped: int = 0
