"""What `compress` and `plan` refuse before any work starts, without loading PyTorch.

PyTorch takes about two seconds to import. A request that cannot run should fail in well under a
second with its one-line error. This covers a model file that is missing or not a model, a photo
folder that lists no photo, an output that would replace an input, and a checkpoint that is in the
way. So these checks import only the format sniffing, the file checks and the photo listing. The
CLI runs them before it imports a pipeline. The pipelines run them again as their first step, for
callers of the Python API.

What needs the model's layers (the plan against its convs, the budget, the memory) is checked once
the model is loaded (`chipq.pipeline.compress`, `chipq.pipeline.plan`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from chipq.errors import UsageError
from chipq.floatnet.model import FloatStack
from chipq.images import EmptyCalibration, list_images
from chipq.retrain.config import RetrainConfig


def checkpoint_path(output: Path) -> Path:
    """Where a retraining run keeps its state: the blob's name + ``.ckpt``."""
    return output.with_name(output.name + ".ckpt")


def check_model_file(model: Path | FloatStack) -> None:
    """`model` is a readable file that starts like a PyTorch or ONNX model (a stack passes).

    Raises:
        ModelImportError: missing, not a regular file, empty, or neither format
            (`chipq.importers.detect_format`); its content is checked when it loads.
    """
    if isinstance(model, FloatStack):
        return
    from chipq.importers import detect_format

    detect_format(model)


def check_photo_folder(source: Path | None) -> None:
    """The photo folder or list file lists at least one photo (None: the set shipped with chipq).

    Raises:
        ImageListError: not a folder or a readable list file.
        EmptyCalibration: it lists no JPEG or PNG file. Whether they decode is found when they
            are read.
    """
    if source is not None and not list_images(Path(source)):
        raise EmptyCalibration(f"calibration source {source}: no JPEG or PNG image in it")


def check_request(
    output: Path | None, retrain: RetrainConfig | None, resume: bool, plan: str | Sequence[int], budget: str | None,
    inputs: Sequence[tuple[str, object]] = (),
) -> None:
    """Refuse what `chipq.pipeline.compress.compress` would refuse late. That is the plan form,
    the output (which must not be one of the `inputs`, given as (what, path)) and the checkpoint.

    Raises:
        UsageError: naming the option at fault.
    """
    if budget is not None and not is_auto(plan):
        raise UsageError("--budget chooses the plan: give --plan PLAN or --budget B, not both")
    if is_auto(plan) and budget is None:
        raise UsageError("--plan auto needs --budget B (or give --budget B alone)")
    if retrain is None and resume:
        raise UsageError("--resume is a retraining setting: drop --no-retrain to use it")
    if output is None:
        if resume:
            raise ValueError("resume needs an output (the checkpoint lives beside it)")
        return
    from chipq.formats.fileio import check_output

    check_output(output, "blob", "--output", inputs=inputs)
    if retrain is not None:
        check_output(checkpoint_path(output), "checkpoint", "--output", inputs=inputs)
        _check_checkpoint(output, resume)


def check_inputs(model: Path | FloatStack, images: Path | None) -> None:
    """The model file and the photo folder of a `compress` or `plan` run (`check_model_file`,
    `check_photo_folder`)."""
    check_model_file(model)
    check_photo_folder(images)


def check_plan_inputs(model: Path | FloatStack, images: Path | None, eval_dir: Path | None) -> None:
    """`check_inputs` of a `plan` run, and its held-out folder (`eval_dir`, None: none given) is a
    folder or list file."""
    check_inputs(model, images)
    if eval_dir is not None:
        list_images(Path(eval_dir))


def request_inputs(model: Path | FloatStack, images: Path | None) -> list[tuple[str, object]]:
    """What a compress run reads from files, for the output checks (`check_request`)."""
    return [("model", None if isinstance(model, FloatStack) else model), ("photo folder", images)]


def is_auto(plan: str | Sequence[int]) -> bool:
    """``--plan auto``: the plan is chosen under the budget."""
    return isinstance(plan, str) and plan.strip().lower() == "auto"


def _check_checkpoint(output: Path, resume: bool) -> None:
    if not output.parent.is_dir():
        raise UsageError(f"--output {output}: folder {output.parent} does not exist")
    ckpt = checkpoint_path(output)
    if os.path.lexists(ckpt):
        from chipq.formats.fileio import check_output

        check_output(ckpt, "checkpoint", "--output")
    if resume and not ckpt.is_file():
        raise UsageError(f"--resume: no checkpoint {ckpt}")
    if not resume and ckpt.exists():
        raise UsageError(f"checkpoint {ckpt} exists: add --resume to continue it, or delete it")
