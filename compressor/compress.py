"""Compression: a float stack, a plan and calibration images in, a chip model out.

`compress` is post-training quantization; `compress_retrained` adds Algorithm 1 (retraining with
the fixed-point constraint, `chipq.retrain`) on a folder of unlabelled images. `calibration_batch`
reads a folder of images. The CLI (`chipq compress`) adds the model file, the progress bar and the
atomic write.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from .calibrate import choose_fracs
from .errors import ChipqError
from .float_ref import FloatReference
from .floatmodel import FloatConv, FloatStack
from .formats.model import ChipModel
from .images import ImageError, list_images, load_image, resize
from .quant.reconstruct import ReconstructConfig, reconstruct
from .quantize import LayerReport, quantize_stack
from .retrain import RetrainConfig, Retrainer, RetrainHooks, StepStats, load_checkpoint, run_training, torch_settings

DEFAULT_INPUT = (224, 224)
MAX_CALIB_IMAGES = 64  # enough for stable shifts; the first N in sorted order, so runs repeat
FINAL_COSINE_STEPS = 20  # the reported training cosine is the mean over this many last steps


class EmptyCalibration(ChipqError):
    """The calibration source holds no image chipq can decode."""


@dataclass(frozen=True)
class CompressResult:
    """A compressed model with what it took to make it."""

    model: ChipModel
    reports: list[LayerReport]
    act_fracs: list[int]
    calib_count: int
    retrain: dict | None = None  # what retraining did (`compress_retrained`), None without it


def default_calib_dir() -> Path:
    """The photos shipped in `samples/photos` of a source checkout."""
    return Path(__file__).resolve().parent.parent / "samples" / "photos"


def calibration_batch(
    source: Path, size: tuple[int, int] = DEFAULT_INPUT, limit: int = MAX_CALIB_IMAGES
) -> np.ndarray:
    """The calibration images of a folder or list file, resized to the chip input.

    Undecodable files are skipped; an empty result is an error.

    Returns:
        uint8 (N, 3, H, W), RGB.
    """
    return calibration_images(source, size, limit)[0]


def calibration_images(
    source: Path, size: tuple[int, int] = DEFAULT_INPUT, limit: int = MAX_CALIB_IMAGES
) -> tuple[np.ndarray, list[str]]:
    """`calibration_batch` and the file name of each image in it (skipped files left out)."""
    images, names = [], []
    for path in list_images(Path(source)):
        if len(images) == limit:
            break
        try:
            images.append(resize(load_image(path), size).transpose(2, 0, 1))
        except ImageError:
            continue
        names.append(path.name)
    if not images:
        raise EmptyCalibration(f"calibration source {source}: no decodable JPEG or PNG image")
    return np.ascontiguousarray(np.stack(images)), names


def conv_outputs(stack: FloatStack, images: np.ndarray) -> list[np.ndarray]:
    """The float model's output of every conv layer (after ReLU) on `images`, in order."""
    taps = FloatReference(stack, batch=4).run(images, taps=True)
    return [taps[layer.name] for layer in stack.layers if isinstance(layer, FloatConv)]


def calibrate(stack: FloatStack, calib: np.ndarray) -> list[int]:
    """Each conv layer's output fraction bits from the float model on `calib` (README, "Calibration")."""
    return choose_fracs(conv_outputs(stack.without_trailing_pool(), calib))


def compress(
    stack: FloatStack,
    plan: list[int],
    calib: np.ndarray,
    input_hw: tuple[int, int] = DEFAULT_INPUT,
    step: Callable[[str], None] | None = None,
    reconstruction: ReconstructConfig | None = ReconstructConfig(),
    reconstruct_images: int = RetrainConfig.init_images,
) -> CompressResult:
    """Quantize `stack` with mask widths `plan`, shifts calibrated on `calib`.

    By default each layer's α·M, bias and output shift are chosen for the layer's output on the
    first `reconstruct_images` calibration images (`chipq.quant.reconstruct`); with
    ``reconstruction=None`` every kernel is the least-squares fit of its float weights (the
    weight-only quantization of `quantize_stack`).

    Args:
        stack: the float model (a trailing max-pool is dropped).
        plan: mask bits per conv layer.
        calib: uint8 (N, 3, H, W) calibration images at the chip input size.
        input_hw: the chip's input buffer size stored in the blob.
        step: called with a short description as each stage starts (for progress display).
        reconstruction: settings of the data-driven reconstruction, None for weight-only.
        reconstruct_images: how many of the calibration images the reconstruction uses.

    Returns:
        The model, the per-layer weight error reports and the activation fraction bits.
    """
    stack = stack.without_trailing_pool()
    if step:
        step("calibrating activations")
    fracs = calibrate(stack, calib)
    quantized = stack
    if reconstruction is not None:
        quantized, fracs, _ = reconstruct(stack, plan, fracs, calib[:reconstruct_images], reconstruction, step)
    if step:
        step("quantizing weights")
    model, reports = quantize_stack(quantized, plan, fracs, input_hw)
    if reconstruction is not None:  # report the error against the float weights, not the shadow's
        reports = _weight_reports(stack, model)
    return CompressResult(model, reports, fracs, int(calib.shape[0]))


def _weight_reports(stack: FloatStack, model: ChipModel) -> list[LayerReport]:
    from .quantize import _report, fold_input_normalisation, input_mean_int

    convs = stack.conv_layers()
    first = fold_input_normalisation(convs[0], stack.mean, stack.std, input_mean_int(stack.mean))
    return [_report(first if i == 0 else conv, layer) for i, (conv, layer) in enumerate(zip(convs, model.conv_layers()))]


def reconstruct_config(config: RetrainConfig) -> ReconstructConfig:
    """The reconstruction settings a retraining configuration asks for."""
    return ReconstructConfig(positions=config.init_positions, seed=config.seed, threads=config.threads)


def compress_retrained(
    stack: FloatStack,
    plan: list[int],
    calib: np.ndarray,
    train_images: list[np.ndarray],
    config: RetrainConfig,
    *,
    input_hw: tuple[int, int] = DEFAULT_INPUT,
    checkpoint: Path | None = None,
    resume: bool = False,
    hooks: RetrainHooks | None = None,
) -> CompressResult:
    """Calibrate, retrain (Algorithm 1, distilling the float model) and quantize.

    The chip model is exactly ``quantize_stack`` of the retrained float stack with `plan` and the
    shifts calibrated on `calib` (calibration uses the float model, before retraining).

    Args:
        stack: the float model (a trailing max-pool is dropped).
        plan: mask bits per conv layer.
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

    def on_step(stats: StepStats) -> None:
        recent[:] = (recent + [stats.cosine])[-FINAL_COSINE_STEPS:]
        if hooks.step:
            hooks.step(stats)

    if resume and checkpoint is None:
        raise ValueError("resume needs a checkpoint path")
    stack = stack.without_trailing_pool()
    fracs = calibrate(stack, calib)
    init_start = time.monotonic()
    init = None
    if config.init == "reconstruct":
        init, fracs, _ = reconstruct(stack, plan, fracs, calib[: config.init_images], reconstruct_config(config))
    init_seconds = time.monotonic() - init_start
    trainer = Retrainer(stack, plan, fracs, config, input_hw, init=init)
    resumed_at = 0
    if resume:
        trainer.restore(load_checkpoint(checkpoint), str(checkpoint))
        resumed_at = trainer.step
    with torch_settings(config.threads):  # deterministic algorithms, fixed thread count
        cache_start = time.monotonic()
        trainer.build_cache(train_images, hooks)
        train_start = time.monotonic()
        run_training(trainer, checkpoint, replace(hooks, step=on_step))
        end = time.monotonic()
    model, reports = trainer.chip_model()
    summary = {
        "images": len(train_images),
        "samples": config.samples,
        "steps": trainer.step,
        "resumed_at_step": resumed_at,
        "trained_layers": list(trainer.net.weights.keys()),
        "init_seconds": init_seconds,
        "cache_seconds": train_start - cache_start,
        "train_seconds": end - train_start,
        "seconds_per_step": (end - train_start) / max(1, trainer.step - resumed_at),
        "final_cosine": float(np.mean(recent)) if recent else None,
        "config": asdict(config),
    }
    return CompressResult(model, reports, fracs, int(calib.shape[0]), retrain=summary)
