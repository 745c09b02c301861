"""`chipq compress`: a float VGG-style model in, a chip blob (format v1) out."""

from __future__ import annotations

import json
import os
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from chipq.cli import app, err_console
from chipq.cli.options import flag, format_size, parse_size
from chipq.cli.progress import ProgressLog, status
from chipq.errors import UsageError
from chipq.quant.plan import parse_plan
from chipq.retrain.config import RetrainConfig, StepStats

COSINE_WINDOW = 20  # steps averaged for the descriptor cosine shown on the progress bar

_HELP = "\n\n".join(
    [
        "Quantize a float VGG-style model (PyTorch .pt state dict / TorchScript, or ONNX) into a chip "
        "blob: every 3x3 kernel becomes alpha * M (8-bit alpha, 1-5-bit mask M), with a 4-bit weight "
        "shift per layer, 12-bit biases and 8-bit activations whose shifts are calibrated on real images.",
        "PLAN gives the mask bits of each conv layer: runs `3x7,1x6` (3 bits on the first 7 convs, 1 on "
        "the next 6 — the paper's plan), a per-layer list `3,3,3,3,3,3,3,1,1,1,1,1,1`, or names "
        "`conv1_1=3,...,conv5_3=1` covering every conv layer.",
        "The blob is written atomically: it appears whole or not at all. The same model, plan and "
        "calibration images give byte-identical blobs, whether the model comes as .pt or .onnx.",
        "By default compress runs Algorithm 1 (the paper's retraining with the fixed-point constraint): "
        "the quantized network (float shadow weights, Eq. 1 rebuilt every step, straight-through "
        "gradients) is trained to reproduce the float model's conv5_3 maps and NIP region descriptors "
        "on crops of the --images photos (no labels needed). --no-retrain gives the post-training path "
        "only (seconds instead of minutes, lower fidelity). --images DIR replaces the photo set that "
        "ships with chipq (106 licensed real photos) for calibration and training alike.",
        "Layers from the first one with the plan's fewest mask bits on are trained (--train-from to "
        "change it). Progress: a bar in a terminal, plain lines (at least every 10 s) in a pipe or log. "
        "The training state is saved in BLOB.ckpt every minute, on Ctrl-C and on a crash; --resume "
        "continues from it (same model, plan, images and settings; --steps may grow). It is deleted "
        "once the blob is written. The same model, plan, images and seed give byte-identical blobs "
        "(torch deterministic algorithms, 2 threads).",
        "--plan auto --budget B chooses the plan first, as `chipq plan MODEL --budget B` does (measured "
        "per-layer sensitivity of the layers as post-training compress reconstructs them, on 16 calibration "
        "photos after the 32 they are fitted on: about 10 minutes for VGG-16 on 2 cores the first time, "
        "then cached; an exact search under B bytes).",
        "Example: chipq compress vgg16.pt --plan 3x7,1x6 -o vgg16.blob",
        "Example: chipq compress vgg16.pt --plan auto --budget 4MB -o vgg16.blob",
        "Example: chipq compress vgg16.pt --plan 3x7,1x6 --no-retrain -o fast.blob",
        "Example: chipq compress vgg16.pt --plan 3x7,1x6 --images my_photos --steps 600 -o vgg16.blob",
    ]
)


@app.command("compress", help=_HELP, short_help='Quantize a float VGG-16 (.pt/.onnx) into a chip blob.')
def compress_command(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="Float model: .pt / .pth (state dict or TorchScript) or .onnx.", show_default=False),
    plan_text: str = typer.Option("3x7,1x6", "--plan", "-p", metavar="PLAN", help="Mask bits per conv layer (see above), or auto with --budget."),
    budget: Optional[str] = typer.Option(None, "--budget", metavar="B", help="With --plan auto: most blob bytes (3914104, 4MB, 15x).", show_default=False),
    output: Path = typer.Option(..., "--output", "-o", metavar="BLOB", help="Where to write the blob.", show_default=False),
    images_dir: Optional[Path] = typer.Option(
        None,
        "--images",
        metavar="DIR",
        help="Photos (folder, searched recursively, or a list file) for calibration and retraining. "
        "Default: the photo set shipped with chipq.",
        show_default=False,
    ),
    no_retrain: bool = flag("--no-retrain", help="Post-training quantization only: no Algorithm 1 retraining."),
    calib: Optional[Path] = typer.Option(None, "--calib", metavar="DIR", hidden=True, help="Old name of --images."),
    input_size: str = typer.Option(
        "224x224", "--input", metavar="WxH", help="The chip's input buffer, width x height; calibration images are resized to it."
    ),
    as_json: bool = flag("--json", help="Print the summary as one JSON object."),
    retrain: Optional[Path] = typer.Option(
        None, "--retrain", metavar="DIR", hidden=True, help="Old spelling: retrain on DIR (now the default; same as --images DIR).", show_default=False
    ),
    steps: Optional[str] = typer.Option(None, "--steps", metavar="N", help=f"Training steps (default {RetrainConfig.steps}).", show_default=False),
    epochs: Optional[str] = typer.Option(None, "--epochs", metavar="N", help="Training epochs over the cached samples (instead of --steps).", show_default=False),
    lr: str = typer.Option(str(RetrainConfig.lr), "--lr", metavar="LR", help="Adam learning rate."),
    seed: str = typer.Option(str(RetrainConfig.seed), "--seed", metavar="N", help="Seed of the crops and the batch order."),
    samples: str = typer.Option(str(RetrainConfig.samples), "--samples", metavar="N", help="Augmented crops cached for training."),
    train_from: Optional[str] = typer.Option(
        None, "--train-from", metavar="LAYER", help="First conv layer to train (default: the first with the plan's fewest mask bits).", show_default=False
    ),
    resume: bool = flag("--resume", help="Continue the retraining saved in BLOB.ckpt."),
    checkpoint_seconds: float = typer.Option(60.0, "--checkpoint-seconds", min=0, hidden=True, help="Seconds between retraining checkpoints (tests)."),
) -> None:
    """Compress a model; see `_HELP`."""
    # PyTorch loads here, not when the CLI starts (other commands do not pay for it)
    from chipq.executor.memory import check_fits, check_input_size
    from chipq.formats.fileio import check_output
    from chipq.formats.writer import write_blob
    from chipq.images import list_images
    from chipq.importers import load_model
    from chipq.quant.compress import DEFAULT_INPUT, MAX_CALIB_IMAGES, calibration_batch, compress, default_calib_dir
    from chipq.quant.quantize import QuantizationError
    from chipq.retrain.trainer import load_training_images

    input_hw = parse_size(input_size) if input_size else DEFAULT_INPUT
    auto = plan_text.strip().lower() == "auto"
    if auto != (budget is not None):
        raise UsageError("--budget goes with --plan auto (and --plan auto needs --budget)")
    sources = [path for path in (images_dir, calib, retrain) if path is not None]
    if len(set(sources)) > 1:
        raise UsageError(
            "--images, --calib and --retrain all name the one photo set for calibration and training; "
            f"they name different folders here ({', '.join(sorted(map(str, set(sources))))}): give one"
        )
    if no_retrain and retrain is not None:
        raise UsageError("--no-retrain and --retrain: give one of them")
    image_dir = sources[0] if sources else default_calib_dir()
    # Everything that can be refused is refused before the work starts.
    check_output(output, "blob", "--output")
    config = None
    if not no_retrain:
        config = _retrain_config(steps, epochs, lr, seed, samples, train_from, min(input_hw))
        _check_checkpoint(output, resume)
    else:
        _refuse_without_retrain(steps=steps, epochs=epochs, train_from=train_from, resume=resume or None)
    with status("compress", err_console, quiet=as_json) as shown:
        shown.update("loading model")
        stack = load_model(model_path).without_trailing_pool()
        if not auto:
            bits = parse_plan(plan_text, [layer.name for layer in stack.conv_layers()])
        what = f"--input {format_size(input_hw)}"
        check_input_size(stack.layers, input_hw, what)
        listed = len(list_images(image_dir))
        check_fits(stack.layers, input_hw, 4, what, keep_maps=min(listed, MAX_CALIB_IMAGES))
        shown.update("reading calibration images")
        images = calibration_batch(image_dir, input_hw)
        if auto:
            from chipq.reports.planner import make_plan

            chosen = make_plan(stack, budget, images, [], status=lambda stage, done=None, total=None: shown.update(stage, done, total))
            bits, plan_text = chosen.bits, chosen.plan
        try:
            if config is None:
                result = compress(stack, bits, images, input_hw, step=lambda text: shown.update(text))
            else:
                shown.update("reading training images")
                train_images = load_training_images(image_dir)
        except QuantizationError as exc:
            raise QuantizationError(f"{model_path}: {exc}") from None
    if config is not None:
        result = _retrain(stack, bits, images, train_images, config, input_hw, output, resume, as_json, checkpoint_seconds)
    with err_console.status("writing blob"):
        write_blob(result.model, output)  # validates, proves the accumulator bound, then renames
    if config is not None:
        from chipq.formats.fileio import remove_stale_temps

        checkpoint_path(output).unlink(missing_ok=True)
        remove_stale_temps(checkpoint_path(output))  # a checkpoint write that a kill -9 cut short
    summary = _summary(result, output.stat().st_size, model_path, output, plan_text)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    _render(summary)


def checkpoint_path(output: Path) -> Path:
    """Where a retraining run keeps its state: the blob's name + ``.ckpt``."""
    return output.with_name(output.name + ".ckpt")


def _positive_int(text: str | None, option: str, default: int, minimum: int = 1) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected a whole number") from None
    if value < minimum:
        raise UsageError(f"{option} {value}: must be at least {minimum}")
    return value


def _retrain_config(
    steps: str | None, epochs: str | None, lr: str, seed: str, samples: str, train_from: str | None, crop: int
) -> RetrainConfig:
    if steps is not None and epochs is not None:
        raise UsageError("--steps and --epochs: give one of them")
    try:
        rate = float(lr)
    except ValueError:
        raise UsageError(f"--lr {lr!r}: expected a number such as 1e-4") from None
    if not 0 < rate < 1:
        raise UsageError(f"--lr {lr}: must be between 0 and 1")
    config = RetrainConfig(
        lr=rate,
        seed=_positive_int(seed, "--seed", 0, minimum=0),
        samples=_positive_int(samples, "--samples", RetrainConfig.samples),
        crop=crop,
        train_from=train_from or "",
    )
    if epochs is not None:
        return RetrainConfig(**{**vars(config), "steps": _positive_int(epochs, "--epochs", 1) * config.steps_per_epoch()})
    return RetrainConfig(**{**vars(config), "steps": _positive_int(steps, "--steps", RetrainConfig.steps)})


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


def _refuse_without_retrain(**options) -> None:
    for name, value in options.items():
        if value is not None:
            raise UsageError(f"--{name.replace('_', '-')} is a retraining setting: drop --no-retrain to use it")


@contextmanager
def _deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """Ctrl-C asks the run to stop after the current step (a second Ctrl-C stops at once)."""
    hit = {"count": 0}

    def handler(signum, frame):
        hit["count"] += 1
        if hit["count"] > 1:
            raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
        yield lambda: False
        return
    try:
        yield lambda: hit["count"] > 0
    finally:
        signal.signal(signal.SIGINT, previous)


def _retrain(stack, bits, images, train_images, config, input_hw, output, resume, quiet, save_every):
    from chipq.retrain.pipeline import compress_retrained
    from chipq.retrain.trainer import RetrainHooks

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  cos {task.fields[cos]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    recent: list[float] = []
    log = None if err_console.is_terminal or quiet else ProgressLog("compress", err_console)
    # Started on the first callback, so a refusal before any work (a bad checkpoint, a bad
    # --train-from) is the only thing on stderr.
    progress = Progress(*columns, console=err_console, transient=quiet, disable=log is not None)
    cache = progress.add_task("caching samples", total=config.samples, loss="-", cos="-")
    train = progress.add_task("retraining", total=config.steps, loss="-", cos="-", start=False)

    def show() -> None:
        if not progress.live.is_started:
            progress.start()

    def on_cache(done: int, total: int) -> None:
        show()
        progress.update(cache, completed=done, description="caching samples")
        if log:
            log.update("caching training samples", done, total)

    def on_stage(text: str) -> None:
        show()
        progress.update(cache, description=text)
        if log:
            log.update(text)

    def on_step(stats: StepStats) -> None:
        show()
        recent.append(stats.cosine)
        del recent[:-COSINE_WINDOW]
        cosine = sum(recent) / len(recent)
        progress.start_task(train)
        progress.update(train, completed=stats.step, loss=f"{stats.loss:.4f}", cos=f"{cosine:.4f}")
        if log:
            log.update("retraining", stats.step, config.steps, extra=f"loss {stats.loss:.4f} cos {cosine:.4f}")

    try:
        with _deferred_interrupt() as stop:
            hooks = RetrainHooks(cache=on_cache, step=on_step, stop=stop, stage=on_stage)
            return compress_retrained(
                stack, bits, images, train_images, config,
                input_hw=input_hw, checkpoint=checkpoint_path(output), resume=resume, hooks=hooks, save_every=save_every,
            )  # fmt: skip
    finally:
        progress.stop()
        if log:
            log.close()


def _summary(result, blob_bytes: int, model_path: Path, output: Path, plan: str) -> dict:
    from chipq.reports.inspect import summarize

    sizes = summarize(result.model, blob_bytes, crc_ok=True)
    rows = [row for row in sizes["layers"] if row["kind"] == "conv"]
    layers = []
    for row, layer, report, frac in zip(rows, result.model.conv_layers(), result.reports, result.act_fracs):
        packed = row["mask_alpha_bits"] / 8  # masks + alphas at the paper's 9m + 8 bits per kernel
        layers.append(
            {
                "name": layer.name,
                "shape": row["shape"],
                "mask_bits": layer.mask_bits,
                "weight_shift": layer.weight_shift,
                "act_frac": frac,
                "rel_l2": report.rel_l2,
                "sqnr_db": report.sqnr_db,
                "mask_alpha_bytes": packed,
                "ratio": row["fp32_bytes"] / packed,
            }
        )
    return {
        "model": str(model_path),
        "blob": str(output),
        "plan": plan,
        "calibration_images": result.calib_count,
        "layers": layers,
        "fp32_weight_bytes": sizes["totals"]["fp32_weight_bytes"],
        "blob_bytes": blob_bytes,
        "ratio": sizes["totals"]["ratio"],
        "retrain": result.retrain,
    }


def _render(summary: dict) -> None:
    table = Table(title=f"chipq compress {escape(summary['model'])} → {escape(summary['blob'])}")
    for column in ("layer", "shape", "bits", "w shift", "act frac", "rel L2", "SQNR dB", "mask+α bytes", "ratio"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for row in summary["layers"]:
        table.add_row(
            escape(row["name"]),
            "x".join(str(v) for v in row["shape"]),
            str(row["mask_bits"]),
            str(row["weight_shift"]),
            str(row["act_frac"]),
            f"{row['rel_l2']:.3f}",
            f"{row['sqnr_db']:.1f}",
            f"{row['mask_alpha_bytes']:,.0f}",
            f"{row['ratio']:.2f}x",
        )
    console = Console() if Console().is_terminal else Console(width=120)
    console.print(table)
    console.print(
        f"fp32 conv weights {summary['fp32_weight_bytes']:,} B → blob {summary['blob_bytes']:,} B: "
        f"[bold]{summary['ratio']:.2f}x[/]  (plan {escape(summary['plan'])}, "
        f"{summary['calibration_images']} calibration images)"
    )
    retrain = summary.get("retrain")
    if retrain:
        console.print(
            f"retrained {', '.join(retrain['trained_layers'])}: {retrain['steps']} steps on "
            f"{retrain['samples']} crops of {retrain['images']} images, "
            f"{retrain['train_seconds'] / 60:.1f} min training ({retrain['seconds_per_step']:.2f} s/step) "
            f"+ {retrain['cache_seconds'] / 60:.1f} min caching; final descriptor cosine to float "
            f"{retrain['final_cosine'] or 0:.4f} (training crops, last steps)"
        )
