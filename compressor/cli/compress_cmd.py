"""`chipq compress`: a float VGG-style model in, a chip blob (format v1) out."""

from __future__ import annotations

import json
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
from chipq.cli.options import flag, parse_size
from chipq.cli.progress import ProgressLog, Status
from chipq.errors import UsageError
from chipq.formats.constants import CHIP_INPUT_HW
from chipq.quant import PROBE
from chipq.quant.plan import PAPER_PLAN
from chipq.reports.planner import SensitivityProbe
from chipq.retrain.config import RetrainConfig, StepStats

COSINE_WINDOW = 20  # steps averaged for the descriptor cosine shown on the progress bar

_HELP = "\n\n".join(
    [
        "Quantize a float VGG-style model (PyTorch .pt state dict / TorchScript, or ONNX) into a chip "
        "blob: every 3x3 kernel becomes alpha * M (8-bit alpha, 1-5-bit mask M), with a 4-bit weight "
        "shift per layer, 12-bit biases and 8-bit activations whose shifts are calibrated on real images.",
        "PLAN gives the mask bits of each conv layer: runs `3x7,1x6` (3 bits on the first 7 convs, 1 on "
        "the next 6 — the paper's plan), a per-layer list `3,3,3,3,3,3,3,1,1,1,1,1,1`, or names "
        "`conv1_1=3,...,conv5_3=1` covering every conv layer. A setting BITS[aALPHA][kKEEP] also sets "
        "the layer's alpha width and the share of its 3x3 kernels kept (chip format v2): `3x7,1a5k40x6` "
        "= 3-bit masks on the first 7 convs, then 1-bit masks, 5-bit alpha and 40 % of the kernels. "
        "The kernels are removed by their effect on the layer's output on the calibration photos "
        "(the rest refitted), and retraining prunes the trained layers gradually (--prune-from).",
        "The blob is written atomically: it appears whole or not at all. The same model, plan and "
        "calibration images give byte-identical blobs, whether the model comes as .pt or .onnx.",
        "By default compress runs Algorithm 1 (the paper's retraining with the fixed-point constraint): "
        "the quantized network (float shadow weights, Eq. 1 rebuilt every step, straight-through "
        "gradients) is trained to reproduce the float model's conv5_3 maps and NIP region descriptors "
        "on crops of the --images photos (no labels needed). --no-retrain gives the post-training path "
        "only (seconds instead of minutes, lower fidelity). --images DIR replaces the photo set that "
        "ships with chipq (97 licensed real photos) for calibration and training alike.",
        "Layers from the first one with the plan's fewest mask bits on are trained (--train-from to "
        "change it). Progress: a bar in a terminal, plain lines (at least every 10 s) in a pipe or log. "
        "The training state is saved in BLOB.ckpt every minute, on Ctrl-C and on a crash; --resume "
        "continues from it (same model, plan, images and settings; --steps may grow). It is deleted "
        "once the blob is written. The same model, plan, images and seed give byte-identical blobs "
        "(torch deterministic algorithms, 2 threads).",
        "--budget B (without --plan; the old spelling --plan auto --budget B still works) chooses the "
        "plan first, as `chipq plan MODEL --budget B` does: each layer's mask bits, alpha width and kept "
        "kernels (chip format v2) from the measured per-layer sensitivity of the layers as post-training "
        "compress reconstructs them, on 16 calibration photos after the 32 they are fitted on (about 4 "
        "minutes for VGG-16 on 2 cores the first time, then cached; --probe exact: about 15), by an "
        "exact search under B bytes; "
        "then compresses it as any plan (retrained by default).",
        "Example: chipq compress vgg16.pt --plan 3x7,1x6 -o vgg16.blob",
        "Example: chipq compress vgg16.pt --budget 2000000 -o vgg16.blob",
        "Example: chipq compress vgg16.pt --plan 3x7,1x6 --no-retrain -o fast.blob",
        "Example: chipq compress vgg16.pt --plan 3x2,2a6k60x5,1a4k45x6 -o small.blob",
        "Example: chipq compress vgg16.pt --plan 3x7,1x6 --images my_photos --steps 600 -o vgg16.blob",
    ]
)


@app.command("compress", help=_HELP, short_help='Quantize a float VGG-16 (.pt/.onnx) into a chip blob.')
def compress_command(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="Float model: .pt / .pth (state dict or TorchScript) or .onnx.", show_default=False),
    plan_text: Optional[str] = typer.Option(
        None, "--plan", "-p", metavar="PLAN", help=f"Setting of each conv layer: mask bits[, alpha width, kernels kept] (see above; default {PAPER_PLAN}), or auto with --budget.", show_default=False
    ),
    budget: Optional[str] = typer.Option(
        None, "--budget", metavar="B", help="Choose the plan under this many blob bytes (3914104, 2MB, 15x); instead of --plan.", show_default=False
    ),
    probe: Optional[SensitivityProbe] = typer.Option(
        None, "--probe", metavar="HOW", help=f"With --budget: how the planner measures each setting, as `chipq plan --probe` (default {PROBE}).", show_default=False
    ),
    output: Path = typer.Option(..., "--output", "-o", metavar="BLOB", help="Where to write the blob.", show_default=False),
    images_dir: Optional[Path] = typer.Option(
        None,
        "--images",
        metavar="DIR",
        help="Photos (folder, searched recursively, or a list file) for calibration and retraining. "
        "Default: the photo set shipped with chipq (97 photos).",
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
    steps: Optional[int] = typer.Option(None, "--steps", metavar="N", min=1, help=f"Training steps (default {RetrainConfig.steps}).", show_default=False),
    epochs: Optional[int] = typer.Option(None, "--epochs", metavar="N", min=1, help="Training epochs over the cached samples (instead of --steps).", show_default=False),
    lr: float = typer.Option(RetrainConfig.lr, "--lr", metavar="LR", callback=lambda value: _between_0_and_1(value), help="Adam learning rate (between 0 and 1)."),
    seed: int = typer.Option(RetrainConfig.seed, "--seed", metavar="N", min=0, help="Seed of the crops and the batch order."),
    samples: int = typer.Option(RetrainConfig.samples, "--samples", metavar="N", min=1, help="Augmented crops cached for training."),
    train_from: Optional[str] = typer.Option(
        None, "--train-from", metavar="LAYER", help="First conv layer to train (default: the first with the plan's fewest mask bits).", show_default=False
    ),
    prune_from: Optional[int] = typer.Option(
        None, "--prune-from", metavar="POINTS", min=0, max=100,
        help=f"Trained pruning: the trained pruned layers start with POINTS percentage points more kernels and are pruned to the plan's share over the first half of the steps (default {RetrainConfig.prune_from}).",
        show_default=False,
    ),  # fmt: skip
    resume: bool = flag("--resume", help="Continue the retraining saved in BLOB.ckpt."),
    checkpoint_seconds: float = typer.Option(60.0, "--checkpoint-seconds", min=0, hidden=True, help="Seconds between retraining checkpoints (tests)."),
) -> None:
    """Compress a model; see `_HELP`."""
    from chipq.pipeline.checks import check_inputs, check_request, request_inputs

    if probe is not None and budget is None:
        raise UsageError("--probe says how --budget's plan is measured: give --budget B too")
    if plan_text is None:  # --budget alone means --plan auto
        plan_text = "auto" if budget is not None else PAPER_PLAN
    input_hw = parse_size(input_size) if input_size else CHIP_INPUT_HW
    image_dir = _photo_folder(images_dir, calib, retrain, no_retrain)
    config = None
    if no_retrain:
        _refuse_without_retrain(steps=steps, epochs=epochs, train_from=train_from, resume=resume or None, prune_from=prune_from)
    else:
        config = _retrain_config(steps, epochs, lr, seed, samples, train_from, min(input_hw), prune_from)
    check_request(output, config, resume, plan_text, budget, request_inputs(model_path, image_dir))
    check_inputs(model_path, image_dir)
    # PyTorch loads here, once the request is known to be sound (a bad one is refused in under a second)
    from chipq.pipeline.compress import compress
    from chipq.reports.compress import compress_summary

    with _Display(as_json, config) as display, _deferred_interrupt(display.retraining) as stop:
        compressed = compress(
            model_path, plan_text, budget=budget, images=image_dir, input_hw=input_hw, retrain=config, output=output,
            resume=resume, status=display.update, hooks=display.hooks(stop), save_every=checkpoint_seconds,
            probe=probe.probe() if probe else None,
        )  # fmt: skip
    summary = compress_summary(compressed.result, output.stat().st_size, model_path, output, compressed.plan)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    _render(summary)


def _between_0_and_1(value: float) -> float:
    if not 0 < value < 1:
        raise typer.BadParameter(f"{value} must be between 0 and 1")
    return value


def _photo_folder(images_dir: Path | None, calib: Path | None, retrain: Path | None, no_retrain: bool) -> Path | None:
    """The one photo set of `--images` and its old names (`--calib`, `--retrain DIR`)."""
    sources = [path for path in (images_dir, calib, retrain) if path is not None]
    if len(set(sources)) > 1:
        raise UsageError(
            "--images, --calib and --retrain all name the one photo set for calibration and training; "
            f"they name different folders here ({', '.join(sorted(map(str, set(sources))))}): give one"
        )
    if no_retrain and retrain is not None:
        raise UsageError("--no-retrain and --retrain: give one of them")
    return sources[0] if sources else None


def _retrain_config(
    steps: int | None, epochs: int | None, lr: float, seed: int, samples: int, train_from: str | None, crop: int,
    prune_from: int | None = None,
) -> RetrainConfig:
    if steps is not None and epochs is not None:
        raise UsageError("--steps and --epochs: give one of them")
    config = RetrainConfig(lr=lr, seed=seed, samples=samples, crop=crop, train_from=train_from or "")
    if prune_from is not None:
        config = RetrainConfig(**{**vars(config), "prune_from": prune_from})
    if epochs is not None:
        return RetrainConfig(**{**vars(config), "steps": epochs * config.steps_per_epoch()})
    return RetrainConfig(**{**vars(config), "steps": RetrainConfig.steps if steps is None else steps})


def _refuse_without_retrain(**options) -> None:
    for name, value in options.items():
        if value is not None:
            raise UsageError(f"--{name.replace('_', '-')} is a retraining setting: drop --no-retrain to use it")


@contextmanager
def _deferred_interrupt(armed: Callable[[], bool] = lambda: True) -> Iterator[Callable[[], bool]]:
    """Once `armed()` (retraining started), Ctrl-C asks the run to stop after the current step (a
    second Ctrl-C stops at once); before that, Ctrl-C stops at once."""
    hit = {"count": 0}

    def handler(signum, frame):
        hit["count"] += 1
        if hit["count"] > 1 or not armed():
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


class _Display:
    """compress's progress on stderr: a status line (or log lines) while the model and photos load,
    then, once retraining starts, bars for caching and training (or log lines)."""

    def __init__(self, quiet: bool, config: RetrainConfig | None) -> None:
        self.quiet, self.config = quiet, config
        self.status = Status("compress", err_console, quiet)
        self.progress: Progress | None = None
        self.log: ProgressLog | None = None

    def __enter__(self) -> "_Display":
        self.status.start()
        return self

    def __exit__(self, *exc) -> None:
        self.status.stop()
        if self.progress is not None:
            self.progress.stop()
        if self.log is not None:
            self.log.close()

    def update(self, stage: str, done: int | None = None, total: int | None = None) -> None:
        if self.progress is None:
            self.status.update(stage, done, total)
        elif self.log is not None:  # after retraining: "writing blob"
            self.log.update(stage, done, total)

    def retraining(self) -> bool:
        """Whether retraining has started (from then on Ctrl-C stops after the current step)."""
        return self.progress is not None

    def hooks(self, stop: Callable[[], bool]):
        """Retraining callbacks; the first one swaps the status line for the bars."""
        if self.config is None:
            return None
        from chipq.retrain.trainer import RetrainHooks

        return RetrainHooks(cache=self._on_cache, step=self._on_step, stop=stop, stage=self._on_stage)

    def _bars(self) -> Progress:
        if self.progress is None:
            # Started on the first callback, so a refusal before any work (a bad checkpoint, a bad
            # --train-from) is the only thing on stderr.
            self.status.stop()
            columns = [
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  cos {task.fields[cos]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            ]
            self.log = None if err_console.is_terminal or self.quiet else ProgressLog("compress", err_console)
            self.progress = Progress(*columns, console=err_console, transient=self.quiet, disable=self.log is not None)
            self.cache = self.progress.add_task("caching samples", total=self.config.samples, loss="-", cos="-")
            self.train = self.progress.add_task("retraining", total=self.config.steps, loss="-", cos="-", start=False)
            self.recent: list[float] = []
            self.progress.start()
        return self.progress

    def _on_cache(self, done: int, total: int) -> None:
        self._bars().update(self.cache, completed=done, description="caching samples")
        if self.log:
            self.log.update("caching training samples", done, total)

    def _on_stage(self, text: str) -> None:
        self._bars().update(self.cache, description=text)
        if self.log:
            self.log.update(text)

    def _on_step(self, stats: StepStats) -> None:
        progress = self._bars()
        self.recent.append(stats.cosine)
        del self.recent[:-COSINE_WINDOW]
        cosine = sum(self.recent) / len(self.recent)
        progress.start_task(self.train)
        progress.update(self.train, completed=stats.step, loss=f"{stats.loss:.4f}", cos=f"{cosine:.4f}")
        if self.log:
            self.log.update("retraining", stats.step, self.config.steps, extra=f"loss {stats.loss:.4f} cos {cosine:.4f}")


def _render(summary: dict) -> None:
    table = Table(title=f"chipq compress {escape(summary['model'])} → {escape(summary['blob'])}")
    for column in ("layer", "shape", "bits", "α bits", "kept", "w shift", "act frac", "rel L2", "SQNR dB", "weight bytes", "ratio"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for row in summary["layers"]:
        table.add_row(
            escape(row["name"]),
            "x".join(str(v) for v in row["shape"]),
            str(row["mask_bits"]),
            str(row["alpha_bits"]),
            f"{row['kept_kernels'] / row['kernels']:.0%}",
            str(row["weight_shift"]),
            str(row["act_frac"]),
            f"{row['rel_l2']:.3f}",
            f"{row['sqnr_db']:.1f}",
            f"{row['presence_bytes'] + row['mask_alpha_bytes']:,.0f}",
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
