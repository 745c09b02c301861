"""The retraining step of compression (Algorithm 1): fit, retrain with the fixed-point constraint, quantize.

`chipq.pipeline.compress` sequences it with the model file, the checks, the images and the write.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from chipq.floatnet.model import FloatStack
from chipq.quant.compress import DEFAULT_INPUT, CompressResult, fit_layers, weight_reports
from chipq.quant.plan import LayerSpec
from chipq.quant.quantize import as_spec
from chipq.quant.reconstruct import ReconstructConfig
from chipq.retrain.config import RetrainConfig, StepStats
from chipq.retrain.trainer import (
    SAVE_EVERY_SECONDS,
    Retrainer,
    RetrainHooks,
    first_trained,
    load_checkpoint,
    run_training,
    start_plan,
    torch_settings,
)

FINAL_COSINE_STEPS = 20  # the reported training cosine is the mean over this many last steps


def reconstruct_config(config: RetrainConfig, plan: Sequence[LayerSpec] = ()) -> ReconstructConfig:
    """The reconstruction settings a retraining configuration asks for, for the start of `plan`
    (its error feedback: `RetrainConfig.feedback_for`; no plan: a v1 one)."""
    return ReconstructConfig(
        positions=config.init_positions, seed=config.seed, threads=config.threads, error_feedback=config.feedback_for(plan),
        saliency=config.init_saliency,
    )


def compress_retrained(
    stack: FloatStack,
    plan: list[int] | list[LayerSpec],
    calib: np.ndarray,
    train_images: list[np.ndarray],
    config: RetrainConfig,
    *,
    input_hw: tuple[int, int] = DEFAULT_INPUT,
    checkpoint: Path | None = None,
    resume: bool = False,
    hooks: RetrainHooks | None = None,
    save_every: float = SAVE_EVERY_SECONDS,
) -> CompressResult:
    """Calibrate, retrain (Algorithm 1, distilling the float model) and quantize.

    The chip model is exactly ``quantize_stack`` of the retrained float stack with `plan` and the
    shifts calibrated on `calib` (calibration uses the float model, before retraining).

    Args:
        stack: the float model (a trailing max-pool is dropped).
        plan: the setting of each conv layer (`LayerSpec` or mask bits). A pruned layer that is
            trained is reconstructed with ``config.prune_from`` points more kernels and pruned to
            its share during training (trained pruning, `chipq.retrain.trainer.Retrainer.prune`).
        calib: uint8 (N, 3, H, W) calibration images at the chip input size.
        train_images: uint8 (H, W, 3) images to cut training samples from
            (`chipq.retrain.load_training_images`).
        config: retraining settings.
        input_hw: the chip's input buffer size stored in the blob.
        checkpoint: where the training state is saved (periodically, on a stop request or a crash);
            None: never.
        resume: continue from `checkpoint` (same settings, model and images; more steps allowed).
        hooks: progress callbacks and the stop request.

    Raises:
        Interrupted: `hooks.stop` asked to stop; `checkpoint` holds the last finished step.
        CheckpointError, RetrainConfigError: an unusable checkpoint or settings.
    """
    hooks = hooks or RetrainHooks()
    recent: list[float] = []
    capped = [0]

    def on_step(stats: StepStats) -> None:
        recent[:] = (recent + [stats.cosine])[-FINAL_COSINE_STEPS:]
        capped[0] += stats.capped
        if hooks.step:
            hooks.step(stats)

    if resume and checkpoint is None:
        raise ValueError("resume needs a checkpoint path")
    stack = stack.without_trailing_pool()
    # refused before the reconstruction, not minutes later: bad settings, an unreadable checkpoint
    config.check()
    plan = [as_spec(item) for item in plan]
    first = first_trained([c.name for c in stack.conv_layers()], plan, config.train_from)
    state = load_checkpoint(checkpoint) if resume else None
    clock = {"init": time.monotonic()}
    reconstruction = reconstruct_config(config, plan) if config.init == "reconstruct" else None
    init, fracs, used = fit_layers(stack, start_plan(plan, first, config), calib, reconstruction, config.init_images, hooks.stage)
    clock["init_end"] = time.monotonic()
    trainer = Retrainer(stack, plan, fracs, config, input_hw, init=init)
    del init  # the trainer keeps what it needs of it (the frozen layers; the trained ones as its own copies)
    resumed_at = 0
    if resume:
        trainer.restore(state, str(checkpoint))
        resumed_at = trainer.step
    with torch_settings(config.threads):  # deterministic algorithms, fixed thread count
        clock["cache"] = time.monotonic()
        trainer.build_cache(train_images, hooks)
        clock["train"] = time.monotonic()
        run_training(trainer, checkpoint, replace(hooks, step=on_step), save_every=save_every)
        clock["end"] = time.monotonic()
    model, _ = trainer.chip_model()  # its reports compare with the shadow weights: report against float
    reports = weight_reports(stack, model)
    summary = _summary(trainer, config, len(train_images), resumed_at, clock, recent, capped[0])
    return CompressResult(model, reports, fracs, used, retrain=summary)


def _summary(
    trainer: Retrainer, config: RetrainConfig, images: int, resumed_at: int, clock: dict, recent: list[float], capped: int
) -> dict:
    """What retraining did: the ``retrain`` object of `chipq compress --json`."""
    return {
        "images": images,
        "samples": config.samples,
        "steps": trainer.step,
        "resumed_at_step": resumed_at,
        "trained_layers": list(trainer.net.weights.keys()),
        "init_seconds": clock["init_end"] - clock["init"],
        "cache_seconds": clock["train"] - clock["cache"],
        "train_seconds": clock["end"] - clock["train"],
        "seconds_per_step": (clock["end"] - clock["train"]) / max(1, trainer.step - resumed_at),
        "final_cosine": float(np.mean(recent)) if recent else None,
        "capped_kernels": capped,  # kernels `hold_shift` scaled back, summed over this run's steps
        "config": asdict(config),
    }
