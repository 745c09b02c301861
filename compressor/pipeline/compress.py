"""`compress`: a float model in, a chip model (and, when asked, the blob file) out — every route.

The one sequence that `chipq compress`, `chipq demo`, the planner's measured check and the
benches all run:

1. the model: loaded from a file (a trailing max-pool dropped), or a stack already in memory;
2. checks: the plan against the model's conv layers, the chip input size, the memory it needs;
3. calibration images (the first `MAX_CALIB_IMAGES` of a folder; default: the photo set shipped
   with chipq) and, when retraining, the training photos (the same folder);
4. with ``plan="auto"``: the plan under `budget` (`chipq.pipeline.plan.make_plan`);
5. the compression step itself: post-training (`chipq.quant.compress.compress`, ``retrain=None``)
   or Algorithm 1 (`chipq.retrain.pipeline.compress_retrained`, the default), checkpointed beside
   the output;
6. with `output`: the atomic write of the blob, then the checkpoint is removed.

Everything that can be refused without the model's layers (the output path, the checkpoint, the
settings, the model file's format, the photo folder) is refused before any work starts, and before
PyTorch loads (`chipq.pipeline.checks`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from chipq.floatnet.model import FloatStack
from chipq.formats.constants import CHIP_INPUT_HW
from chipq.pipeline.checks import check_inputs, check_request, checkpoint_path, is_auto, request_inputs
from chipq.quant import MAX_CALIB_IMAGES
from chipq.quant.calibrate import calibration_batch, default_calib_dir
from chipq.quant.plan import PAPER_PLAN, LayerSpec, parse_specs
from chipq.retrain.config import RetrainConfig

if TYPE_CHECKING:  # PyTorch loads with the compression step, not with this module (`chipq.pipeline.checks`)
    from chipq.quant.compress import CompressResult

DEFAULT_RETRAIN = RetrainConfig()  # `chipq compress` retrains by default

# stage, done, total: what the work is doing now (a status line or a log line)
Status = Callable[..., None]


@dataclass(frozen=True)
class Compressed:
    """What `compress` made: the chip model with its reports, and the plan it used."""

    result: CompressResult
    plan: str  # the plan as text: as given, or the one chosen under the budget
    specs: list[LayerSpec]  # each conv layer's setting (mask bits, alpha width, kernels kept)

    @property
    def bits(self) -> list[int]:
        """The mask bits of each conv layer."""
        return [spec.bits for spec in self.specs]

    @property
    def model(self):
        return self.result.model


def compress(
    model: Path | FloatStack,
    plan: str | Sequence[int | LayerSpec] | None = None,
    *,
    budget: str | None = None,
    images: Path | None = None,
    calib: np.ndarray | None = None,
    train_images: list[np.ndarray] | None = None,
    input_hw: tuple[int, int] = CHIP_INPUT_HW,
    retrain: RetrainConfig | None = DEFAULT_RETRAIN,
    output: Path | None = None,
    resume: bool = False,
    status: Status | None = None,
    hooks=None,
    save_every: float | None = None,
    probe=None,
) -> Compressed:
    """Compress `model` with `plan` by any route (module docstring).

    Args:
        model: a model file (.pt / .pth / .onnx) or a float stack.
        plan: plan text (`chipq.quant.plan.parse_specs`: v1 mask bits or v2 settings such as
            ``3x7,1a5k40x6``), ``"auto"`` with `budget`, or a setting (`LayerSpec` or mask bits) per
            conv layer; None: ``"auto"`` when `budget` is given, else `PAPER_PLAN`.
        budget: the most blob bytes (`chipq.quant.allocate.parse_budget`): the plan is chosen under
            it (`chipq.pipeline.plan.make_plan`, v2 settings included).
        images: the calibration and training photos (folder or list file); default: the photo set
            shipped with chipq.
        calib: calibration images already read (uint8 (N, 3, H, W) at `input_hw`), instead of
            reading `images`; the file checks (memory, input size) are then the caller's.
        train_images: training images already read (`chipq.retrain.trainer.load_training_images`).
        input_hw: the chip's input buffer (height, width).
        retrain: Algorithm 1 settings; None for post-training quantization only.
        output: write the blob there (atomically); a retraining run keeps its checkpoint beside it.
        resume: continue the retraining saved in the checkpoint.
        status: called with (stage, done=None, total=None) as each step starts.
        hooks: `chipq.retrain.trainer.RetrainHooks` (progress of retraining, the stop request).
        save_every: seconds between retraining checkpoints (default: the trainer's).
        probe: how the planner measures each setting under `budget` (`chipq.quant.sensitivity.Probe`;
            None: its default).

    Raises:
        UsageError, QuantizationError, EmptyCalibration, CheckpointError, Interrupted, ...: one
        ChipqError per failure, naming the file or option at fault.
    """
    say = status or (lambda stage, done=None, total=None: None)
    if plan is None:  # a budget alone means: choose the plan under it
        plan = "auto" if budget is not None else PAPER_PLAN
    check_request(output, retrain, resume, plan, budget, inputs=request_inputs(model, images))
    check_inputs(model, images if calib is None else None)
    say("loading model")
    stack = _load(model)
    auto = is_auto(plan)
    names = [layer.name for layer in stack.conv_layers()]
    specs = None if auto else _specs(plan, names)
    image_dir = images if images is not None else default_calib_dir()
    checked = calib is None  # given photos: the caller holds them and has checked
    if checked:
        _check_memory(stack, image_dir, input_hw, retrain, specs)
        say("reading calibration images")
        calib = calibration_batch(image_dir, input_hw)
    plan_text = plan if isinstance(plan, str) else ",".join(map(str, specs))
    if auto:
        from chipq.pipeline.plan import make_plan

        chosen = make_plan(stack, budget, calib, [], status=say, probe=probe)
        specs, plan_text = list(chosen.specs), chosen.plan
        if checked and retrain is not None:  # the retraining's need depends on the plan: checked now, before it
            _check_memory(stack, image_dir, input_hw, retrain, specs)
    if retrain is None:
        result = _post_training(stack, specs, calib, input_hw, model, say)
    else:
        if train_images is None:
            from chipq.retrain.trainer import load_training_images

            say("reading training images")
            train_images = load_training_images(image_dir)
        result = _retrained(stack, specs, calib, train_images, retrain, input_hw, output, resume, hooks, save_every)
    if output is not None:
        write(result, output, retrained=retrain is not None, status=say)
    return Compressed(result, plan_text, specs)


def _specs(plan: str | Sequence[int | LayerSpec], names: list[str]) -> list[LayerSpec]:
    """Each conv layer's setting from plan text or a list of settings (mask bits or `LayerSpec`)."""
    from chipq.quant.quantize import QuantizationError, as_spec

    if isinstance(plan, str):
        return parse_specs(plan, names)
    if len(plan) != len(names):
        raise QuantizationError(f"plan has {len(plan)} entries for {len(names)} conv layers")
    return [as_spec(item) for item in plan]


def _load(model: Path | FloatStack) -> FloatStack:
    if isinstance(model, FloatStack):
        return model.without_trailing_pool()
    from chipq.importers import load_model

    return load_model(Path(model)).without_trailing_pool()


def _check_memory(
    stack: FloatStack, image_dir: Path, input_hw: tuple[int, int], retrain: RetrainConfig | None, specs: list[LayerSpec] | None
) -> None:
    """The chip input fits the model, and every stage of the run fits in memory (and its spill
    folder on disk), refused before any work with the option that lowers the need
    (`chipq.executor.memory.check_stages`). `specs` None: the plan is yet to be chosen under a
    budget, so the planner's sensitivity is a stage and the retraining (whose need depends on the
    plan's first trained layer) is checked once the plan is known."""
    from chipq.executor import memory as mem
    from chipq.images import list_images
    from chipq.quant import FAST_RECONSTRUCT_IMAGES
    from chipq.quant.compress import FAST_RECONSTRUCTION

    what = f"--input {input_hw[1]}x{input_hw[0]}"
    mem.check_input_size(stack.layers, input_hw, what)
    listed = len(list_images(image_dir))
    calib = min(listed, MAX_CALIB_IMAGES)
    weights = sum(conv.weight.size + conv.bias.size for conv in stack.conv_layers())
    fixed = 3 * weights * 4 + calib * 3 * input_hw[0] * input_hw[1]  # float, shadow and fitted weights; the images
    positions = FAST_RECONSTRUCTION.positions if retrain is None else retrain.init_positions
    images = FAST_RECONSTRUCT_IMAGES if retrain is None else retrain.init_images
    stages = [
        ("calibration", mem.calibration_bytes(stack.layers, input_hw), what, "use a smaller input size"),
        ("the reconstruction", mem.reconstruction_bytes(stack.layers, input_hw, positions), what,
         "use a smaller input size" + (" or --no-retrain (a lighter reconstruction)" if retrain is not None else "")),
    ]
    if specs is None:
        from chipq.pipeline.plan import axes_for, sensitivity_stage

        stages.append(sensitivity_stage(stack, input_hw, axes_for(True), "or --plan PLAN (no sensitivity measured)"))
    elif retrain is not None:
        from chipq.retrain.trainer import MAX_SOURCE_SIDE, first_trained

        names = [conv.name for conv in stack.conv_layers()]
        first = first_trained(names, specs, retrain.train_from)
        photos = listed * MAX_SOURCE_SIDE * MAX_SOURCE_SIDE * 3  # the training photos, long side at most 1024
        cache = mem.training_bytes(stack.layers, retrain.crop, retrain.samples, retrain.batch, first)
        subject = f"--samples {retrain.samples} at {what}"
        stages.append((f"retraining's cache of {retrain.samples:,} samples", cache + photos, subject, "lower --samples or the input size"))
    mem.check_stages(stages, fixed)
    mem.check_spill(stack.layers, input_hw, min(images, calib), what)


def _post_training(stack, bits, calib, input_hw, model, say) -> CompressResult:
    from chipq.quant.compress import compress as quantize_post_training
    from chipq.quant.quantize import QuantizationError

    try:
        return quantize_post_training(stack, bits, calib, input_hw, step=lambda text: say(text))
    except QuantizationError as exc:
        if isinstance(model, FloatStack):
            raise
        raise QuantizationError(f"{model}: {exc}") from None


def _retrained(stack, bits, calib, train_images, config, input_hw, output, resume, hooks, save_every) -> CompressResult:
    from chipq.retrain.pipeline import compress_retrained
    from chipq.retrain.trainer import SAVE_EVERY_SECONDS

    return compress_retrained(
        stack, bits, calib, train_images, config, input_hw=input_hw,
        checkpoint=checkpoint_path(output) if output is not None else None, resume=resume, hooks=hooks,
        save_every=SAVE_EVERY_SECONDS if save_every is None else save_every,
    )  # fmt: skip


def write(result: CompressResult, output: Path, *, retrained: bool = False, status: Status | None = None) -> None:
    """Write the blob atomically (validated, the accumulator bound proved); after a retraining run,
    remove its checkpoint (and what a killed checkpoint write left)."""
    from chipq.formats.fileio import remove_stale_temps
    from chipq.formats.writer import write_blob

    if status:
        status("writing blob")
    write_blob(result.model, output)
    if retrained:
        checkpoint_path(output).unlink(missing_ok=True)
        remove_stale_temps(checkpoint_path(output))  # a checkpoint write that a kill -9 cut short
