"""Compression: a float stack, a plan and calibration images in, a chip model out.

`compress` is the post-training quantization step; `chipq.retrain.pipeline.compress_retrained` is
Algorithm 1 (retraining with the fixed-point constraint); both start with `fit_layers`.
`chipq.quant.calibrate.calibration_batch` reads a folder of images. `chipq.pipeline.compress` sequences every route
(model file, checks, images, plan, this step or retraining, the atomic write).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from chipq.executor.memory import CALIB_CHUNK
from chipq.floatnet.model import FloatConv, FloatStack
from chipq.floatnet.reference import FloatReference
from chipq.formats import constants as C
from chipq.formats.model import ChipModel
from chipq.quant import FAST_RECONSTRUCT_IMAGES
from chipq.quant.calibrate import RunningSample, choose_frac
from chipq.quant.plan import LayerSpec
from chipq.quant.quantize import LayerReport, quantize_stack
from chipq.quant.reconstruct import ReconstructConfig, reconstruct

DEFAULT_INPUT = C.CHIP_INPUT_HW
# the post-training reconstruction: no error feedback. On the real VGG-16, 3x7,1x6, the 520 held-out
# photos of bench/evalset.py, the feedback raised the mean descriptor cosine 0.918 -> 0.938 but
# lowered mAP 0.9137 -> 0.9016 (paired 95 % interval -0.026..+0.001; AMD EPYC, 2026-12-07)
FAST_RECONSTRUCTION = ReconstructConfig(error_feedback=False)


@dataclass(frozen=True)
class CompressResult:
    """A compressed model with what it took to make it."""

    model: ChipModel
    reports: list[LayerReport]
    act_fracs: list[int]
    calib_count: int
    retrain: dict | None = None  # what retraining did (`chipq.retrain.trainer.pipeline`), None without it


def conv_outputs(stack: FloatStack, images: np.ndarray) -> list[np.ndarray]:
    """The float model's output of every conv layer (after ReLU) on `images`, in order."""
    taps = FloatReference(stack, batch=4).run(images, taps=True)
    return [taps[layer.name] for layer in stack.layers if isinstance(layer, FloatConv)]


def calibrate(stack: FloatStack, calib: np.ndarray) -> list[int]:
    """Each conv layer's output fraction bits from the float model on `calib` (docs/compress.md, "Calibration and reconstruction").

    The images go through the float model `CALIB_CHUNK` at a time and only the fixed-stride sample
    of each conv output is kept (`RunningSample`): the same fraction bits as `choose_fracs` of
    `conv_outputs` (every conv map of every image at once: 3.5 GB for 64 VGG-16 images).
    """
    stack = stack.without_trailing_pool()
    reference = FloatReference(stack, batch=CALIB_CHUNK)
    names = [layer.name for layer in stack.layers if isinstance(layer, FloatConv)]
    samples: list[RunningSample] = []
    for start in range(0, len(calib), CALIB_CHUNK):
        taps = reference.run(calib[start : start + CALIB_CHUNK], taps=True)
        if not samples:
            samples = [RunningSample(len(calib) * taps[name][0].size) for name in names]
        for sample, name in zip(samples, names):
            sample.add(taps[name])
    return [choose_frac(sample.values()) for sample in samples]


def compress(
    stack: FloatStack,
    plan: list[int] | list[LayerSpec],
    calib: np.ndarray,
    input_hw: tuple[int, int] = DEFAULT_INPUT,
    step: Callable[[str], None] | None = None,
    reconstruction: ReconstructConfig | None = FAST_RECONSTRUCTION,
    reconstruct_images: int = FAST_RECONSTRUCT_IMAGES,
) -> CompressResult:
    """Quantize `stack` with mask widths `plan`, shifts calibrated on `calib`.

    By default each layer's α·M, bias and output shift are chosen for the layer's output on the
    first `reconstruct_images` calibration images (`chipq.quant.reconstruct`, which calibrates the
    float shifts on the same images in the same pass); with
    ``reconstruction=None`` every kernel is the least-squares fit of its float weights (the
    weight-only quantization of `quantize_stack`).

    Args:
        stack: the float model (a trailing max-pool is dropped).
        plan: each conv layer's setting (`LayerSpec`: mask bits, α width, kernels kept), or mask bits.
        calib: uint8 (N, 3, H, W) calibration images at the chip input size.
        input_hw: the chip's input buffer size stored in the blob.
        step: called with a short description as each stage starts (for progress display).
        reconstruction: settings of the data-driven reconstruction, None for weight-only.
        reconstruct_images: how many of the calibration images the reconstruction uses.

    Returns:
        The model, the per-layer weight error reports and the activation fraction bits.
    """
    stack = stack.without_trailing_pool()
    fitted, fracs, used = fit_layers(stack, plan, calib, reconstruction, reconstruct_images, step)
    if step:
        step("quantizing weights")
    model, reports = quantize_stack(stack if fitted is None else fitted, plan, fracs, input_hw)
    if fitted is not None:  # report the error against the float weights, not the shadow's
        reports = weight_reports(stack, model)
    return CompressResult(model, reports, fracs, used)


def fit_layers(
    stack: FloatStack,
    plan: list[int] | list[LayerSpec],
    calib: np.ndarray,
    reconstruction: ReconstructConfig | None,
    images: int,
    step: Callable[[str], None] | None = None,
) -> tuple[FloatStack | None, list[int], int]:
    """The first step of every compression route: the activation shifts, and the reconstructed
    float weights when `reconstruction` is given.

    With `reconstruction`, each layer is fitted for its output on the first `images` calibration
    images (`chipq.quant.reconstruct`, whose float pass calibrates the shifts on the same images);
    without, the shifts are calibrated on all of `calib` and the weights stay the float ones.

    Returns:
        (the reconstructed stack or None, each conv layer's output fraction bits, the number of
        calibration images used).
    """
    if reconstruction is not None:  # its float pass calibrates the shifts too
        fitted, fracs, _ = reconstruct(stack, plan, None, calib[:images], reconstruction, step)
        return fitted, fracs, int(calib[:images].shape[0])
    if step:
        step("calibrating activations")
    return None, calibrate(stack, calib), int(calib.shape[0])


def weight_reports(stack: FloatStack, model: ChipModel) -> list[LayerReport]:
    """Each conv layer's weight error of `model` against the float `stack` (conv1 input-folded)."""
    from chipq.quant.quantize import _report, fold_input_normalisation, input_mean_int

    convs = stack.conv_layers()
    first = fold_input_normalisation(convs[0], stack.mean, stack.std, input_mean_int(stack.mean))
    return [_report(first if i == 0 else conv, layer) for i, (conv, layer) in enumerate(zip(convs, model.conv_layers()))]
