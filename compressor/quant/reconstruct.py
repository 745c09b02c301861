"""Data-driven post-training quantization: each layer's α·M chosen for its output, not its weights.

`chipq.quantize` picks, per 3x3 kernel, the α and M closest to the float weights. What retrieval
needs is the layer *output* close to the float model's, on the inputs the quantized network really
gives the layer. `reconstruct` goes through the conv layers in order; for each it has, on
calibration images, the quantized network's own input to the layer (X_q, the chip's 8-bit grid) and
the float model's output of the layer (Y, before ReLU). Then:

1. **Target weights.** The least-squares weights V (and bias) that best map X_q to Y, pulled
   towards the float weights W: ``V = (Y Z^T + λ W)(Z Z^T + λ I)^-1`` with Z the 3x3 patches of X_q
   (and a constant 1 for the bias) at sampled positions. This corrects, at each layer, what the
   layers before it lost (the error does not pile up along the network). A 512-channel layer has
   4609 weights per output and a few thousand sampled positions: without the pull towards W the
   solve overfits the calibration images (`bench/recipe.py` on the evaluation set: the start of
   retraining at descriptor cosine 0.74 with a pull towards zero, `git show ac4f6d1:bench/results/recipe_at_ccba125.json`,
   0.95 towards W, `bench/results/recipe.json`).
2. **Quantization with error feedback** (GPTQ, Frantar et al. 2023, with one α per 3x3 kernel):
   the columns of V (input channel, tap) are quantized one at a time; a kernel's α is chosen (least
   squares on the weights, rounded to the layer's 8-bit grid) when its first tap comes up; each
   column's rounding error is pushed onto the columns not yet quantized through the inverse of
   H = Z Z^T, so the layer output error, not the weight error, is what is minimised. The bias,
   unquantized until the end, takes up the output's mean error (bias correction).
   Then, masks kept, all α's of the layer and its bias are solved jointly for the output
   (`refit_alphas`): GPTQ picks each α greedily when its kernel comes up.
3. **Activation shift.** The layer's output fraction bits are chosen again, by the calibration
   rule (`chipq.calibrate.choose_frac`), on the quantized layer's own output.

The result is a float stack whose weights are exactly ``α·M·2^-s`` per kernel (the dequantized
chip weights) and the chosen fraction bits: `chipq.quantize.quantize_stack` of it gives the chip
model, and retraining can start from it (its shadow weights are these, the teacher stays the
original float model).

Determinism: the sampled positions come from a generator seeded by ``seed``; torch runs float32
solves and products with a fixed thread count (`threads`), deterministic algorithms on.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch.nn import functional as F

from chipq.executor.memory import large_blocks_mapped, release_freed_memory
from chipq.floatnet.model import FloatConv, FloatPool, FloatStack
from chipq.formats import constants as C
from chipq.quant import SALIENCIES, SALIENCY
from chipq.quant.calibrate import RunningSample, choose_frac
from chipq.quant.chipnet import ChipConv, activations, chip_input, pool2x2
from chipq.quant.fold import InputFold
from chipq.quant.plan import LayerSpec
from chipq.quant.quantize import (
    as_spec,
    dequantized_bias,
    fit_kernels,
    layer_shift,
    nearest_level,
    quantize_conv,
    round_alpha,
)

TAPS = C.KERNEL_TAPS

CHUNK = 8  # calibration images per forward pass
GPTQ_BLOCK = 16  # kernels per lazy-update block of the error feedback
SOLVE = torch.float32  # the statistics and solves (damped: float32 is enough, and twice as fast)


@dataclass(frozen=True)
class ReconstructConfig:
    """Settings of `reconstruct`.

    Attributes:
        positions: sampled output positions per layer for the statistics (Z Z^T costs
            positions x (9·in + 1)^2 multiply-adds).
        damp: λ as a share of the mean diagonal of Z Z^T (regularises the solve and the feedback).
        refit_fracs: choose each output's fraction bits on the quantized output (step 3).
        least_squares_target: step 1 (False: quantize the float weights themselves with feedback).
        error_feedback: step 2's feedback (False: each kernel rounded on its own, as `quantize`).
        float_prior: step 1's ridge pulls towards the float weights (False: towards zero);
            with fewer sampled positions than weights per output the solve is underdetermined,
            and the float weights are the better guess.
        refit_alphas: after step 2, all α's of the layer solved jointly for its output, the masks
            kept (`refit_alphas`).
        alpha_ridge: that solve's regularisation, a share of its mean diagonal.
        saliency: how a pruned layer chooses the kernels it removes (`kernel_saliency`): "obs"
            (its OBS group saliency) or "energy" (the kernel's output energy). On real VGG-16 layers
            (conv2_2, conv3_2; 8 photos, held-out positions, 2k50 / 1a4k50 / 1a5k30) "energy" left
            1.5-3.5 % less relative output error of the layer alone, but the whole network
            retrieves better with "obs": the default retrained compress of the 2 MB plan of
            BENCHMARKS.md scored a mean descriptor cosine of 0.851 and mAP 0.864 with it against
            0.807 and 0.819 with "energy" (held-out set, `bench/retrain_sweep.py`).
        seed: seeds the position sampling.
        threads: torch intra-op threads.
    """

    positions: int = 8192
    damp: float = 0.3
    refit_fracs: bool = True
    least_squares_target: bool = True
    error_feedback: bool = True
    seed: int = 0
    threads: int = 2
    float_prior: bool = True
    refit_alphas: bool = True
    alpha_ridge: float = 1e-3
    saliency: str = SALIENCY  # "obs": the better held-out retrieval (above), though "energy" leaves a lower layer error


@dataclass
class LayerStat:
    """What reconstruction did to one layer (for reports and benches)."""

    name: str
    bits: int | LayerSpec
    frac: int
    float_frac: int
    rel_out_err: float  # ||Y_q - Y|| / ||Y|| before the ReLU, on the sampled positions
    seconds: float


def reconstruct(
    stack: FloatStack,
    plan: list[int] | list[LayerSpec],
    fracs: list[int] | None,
    calib: np.ndarray,
    config: ReconstructConfig = ReconstructConfig(),
    step: Callable[[str], None] | None = None,
) -> tuple[FloatStack, list[int], list[LayerStat]]:
    """Choose every conv layer's α·M, bias and output shift for its output on `calib` (module doc).

    Args:
        stack: the float model (a trailing max-pool is dropped).
        plan: each conv layer's setting (`LayerSpec`, or mask bits).
        fracs: output fraction bits from float calibration (kept where `refit_fracs` is off, and
            the starting point of each layer's choice otherwise); None: chosen by the calibration
            rule on the float model's outputs on `calib`, which this pass computes anyway (no
            separate calibration pass needed).
        calib: uint8 (N, 3, H, W) calibration images.
        config: the settings.
        step: called with a short text as each layer starts (progress display).

    Returns:
        (stack with the quantized weights, output fraction bits per conv, per-layer stats).
    """
    stack = stack.without_trailing_pool()
    convs = stack.conv_layers()
    if len(plan) != len(convs) or (fracs is not None and len(fracs) != len(convs)):
        raise ValueError(f"{len(plan)} bits and {len(fracs or [])} fracs for {len(convs)} conv layers")
    fold = InputFold.of(stack)
    with torch_settings(config.threads), torch.no_grad():
        return _run(stack, plan, fracs, calib, config, fold, step)


@contextmanager
def torch_settings(threads: int) -> Iterator[None]:
    """Deterministic algorithms and a fixed intra-op thread count, restored afterwards."""
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        deterministic_algorithms(old_det)


def deterministic_algorithms(mode: bool) -> None:
    """``torch.use_deterministic_algorithms(mode)`` without its import of ``torch._inductor``.

    Since torch 2.x that call imports the compiler stack (dynamo, inductor, sympy) to set inductor's
    flag too: 2.5 s on this project's machines, paid by every compress, plan and retraining run,
    and chipq never compiles. The eager flag is set the same way; inductor's is set as well when
    something has loaded inductor already (tests/quant/test_reconstruct.py checks both).
    """
    inductor = sys.modules.get("torch._inductor.config")
    if inductor is not None:
        inductor.deterministic = mode
    torch._C._set_deterministic_algorithms(mode)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Torch's intra-op thread count set to `count` inside the block (restored after).

    For loops of many small products (a (c, 9) x (9, n) product per row of `_alpha_grams`): two
    threads woken and joined for a few microseconds of work each time cost 40 times the CPU of one
    thread doing it on a busy machine; the GEMM splits its rows and columns across threads, never
    a sum, so the values are the same.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _run(stack, plan, fracs, calib, config, fold, step):
    """The layers in order (module docstring), the maps streamed through a spill folder (`_Maps`)."""
    with spill_folder() as spill, large_blocks_mapped():
        return _run_streamed(stack, plan, fracs, calib, config, fold, step, spill)


SPILL_PREFIX = "chipq-maps-"  # + the process id + "-" + tempfile's random part


@contextmanager
def spill_folder() -> Iterator[Path]:
    """A new spill folder ``chipq-maps-<pid>-<random>`` in the temporary folder, removed on the way out.

    The way out includes Ctrl-C (KeyboardInterrupt) and SIGTERM: while the folder exists, a SIGTERM
    in the main thread whose handler is the default one unwinds as ``SystemExit(143)`` (exit status
    143, as the default would give) instead of ending the process where it stands. A SIGKILL cannot
    be caught: its folder stays behind, and the next run removes it (`remove_stale_spills`: the
    process id in the name is no longer running).
    """
    remove_stale_spills()
    with _terminate_unwinds(), tempfile.TemporaryDirectory(prefix=f"{SPILL_PREFIX}{os.getpid()}-") as folder:
        yield Path(folder)


def remove_stale_spills(folder: Path | None = None) -> list[Path]:
    """Remove the spill folders (`spill_folder`) of this user whose process is no longer running;
    return them. Another user's folder, or one whose process id is running, is left alone."""
    base = Path(folder) if folder is not None else Path(tempfile.gettempdir())
    removed = []
    for path in base.glob(f"{SPILL_PREFIX}*-*"):
        match = re.fullmatch(rf"{re.escape(SPILL_PREFIX)}(\d+)-[^-/]+", path.name)
        try:
            mine = not path.is_symlink() and path.is_dir() and path.stat().st_uid == os.getuid()
        except OSError:
            continue
        if match and mine and not _running(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process (or an id that cannot be checked): not ours to judge
    return True


@contextmanager
def _terminate_unwinds() -> Iterator[None]:
    """SIGTERM raises ``SystemExit(128 + SIGTERM)`` inside the block (main thread, default handler only)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run_streamed(stack, plan, fracs, calib, config, fold, step, spill: Path):
    x_q = x_f = _Maps.pixels(calib, fold.mean_int)  # the chip input, real units; both networks' first input
    in_frac = 0
    out_layers: list[FloatConv | FloatPool] = []
    out_fracs: list[int] = []
    stats: list[LayerStat] = []
    rng = np.random.default_rng([config.seed, 7])
    index = 0
    for item in stack.layers:
        if isinstance(item, FloatPool):
            x_q, x_f = x_q.pooled(spill), x_f.pooled(spill)
            out_layers.append(item)
            continue
        start = time.monotonic()
        if step:
            step(f"reconstructing {item.name}")
        first = index == 0
        conv = fold.apply_numpy(item) if first else item  # work in the chip's input units
        bits = as_spec(plan[index])
        float_layer = ChipConv.of_float(conv, None)
        rows = _positions(x_q.shape, config.positions, rng)
        # the target: float output of the float input, pre-ReLU, at the sampled positions; the float
        # network's next input (its ReLU) goes to the spill folder chunk by chunk
        y_f = _Conv(x_f, float_layer.weight, float_layer.bias, rows)
        next_f = _Maps.floats(spill, y_f.shape)
        for part in y_f.chunks():
            next_f.append(F.relu(part, inplace=True))  # `chunks` is done with `part`
        target = y_f.at_rows()
        fit = _target_of(conv, *_statistics(x_q.patches(rows), target), config)  # step 1; the patches (P, 9C + 1) freed before the solve
        q_w, q_b = _quantize_target(fit, bits, config, last=True)  # step 2
        del fit
        q_conv = FloatConv(conv.name, q_w, q_b)
        float_frac = fracs[index] if fracs is not None else choose_frac(y_f.relu_sample())
        frac = float_frac
        layer = quantize_conv(q_conv, bits, in_frac, frac)
        chip = ChipConv.of_layer(layer, in_frac)
        y_q = _Conv(x_q, chip.weight, chip.bias, rows)
        pre_q = _Maps.floats(spill, y_q.shape)  # the quantized layer's output before its activation shift is final
        for part in y_q.chunks():
            pre_q.append(part)
        shift = None  # the bias change of the refit fraction bits, added to every output
        if config.refit_fracs:
            frac = choose_frac(y_q.relu_sample())
            layer = quantize_conv(q_conv, bits, in_frac, frac)
            new_b = torch.from_numpy(dequantized_bias(layer, in_frac).astype(np.float32))
            if not torch.equal(new_b, chip.bias):  # the bias is rounded at the new output scale
                shift = (new_b - chip.bias).reshape(1, -1, 1, 1)  # the same conv, the new bias
        frac = layer.out_frac(in_frac)  # what the chip can reach
        at_q = y_q.at_rows()
        if shift is not None:
            at_q = at_q + shift.reshape(1, -1)
        err = float(torch.linalg.vector_norm(at_q - target) / torch.linalg.vector_norm(target).clamp_min(1e-30))
        shadow = _unfold_first(q_conv, item, fold) if first else q_conv
        out_layers.append(shadow)
        out_fracs.append(frac)
        stats.append(LayerStat(item.name, bits, frac, float_frac, err, time.monotonic() - start))
        next_q = _Maps.grid(spill, y_q.shape, frac)
        for part in pre_q.chunks():
            next_q.append(activations(part if shift is None else part + shift, frac))
        pre_q.drop()
        x_q.drop()
        x_f.drop()
        x_q, x_f = next_q, next_f
        in_frac = frac
        index += 1
        release_freed_memory()  # the next layer's blocks differ in size: start from what is live
    x_q.drop()
    x_f.drop()
    return FloatStack(out_layers, stack.mean, stack.std, stack.source), out_fracs, stats


class _Maps:
    """One layer's maps of all N calibration images, read and written `CHUNK` images at a time.

    Reconstruction needs, at each layer, both networks' input maps of every calibration image
    (64 images of 64 x 224 x 224 float32 are 822 MB a map). They are kept in a spill folder, one
    file per chunk, so only a chunk is in memory at once: float maps as float32, the chip's
    activations as their uint8 codes ``k`` (the value is ``k·2^-frac``, exactly as
    `chipq.quant.chipnet.activations` makes it), the chip input as the uint8 pixels themselves.
    Every chunk is what the whole-batch computation held for those images, bit for bit, and each
    convolution runs on the same `CHUNK`-image batches as before, so the results do not change.
    """

    def __init__(self, shape: tuple[int, ...], kind: str, folder: Path | None, frac: int = 0, pixels=None, mean_int=()):
        self.shape, self.kind, self.folder, self.frac = tuple(shape), kind, folder, frac
        self.pixels, self.mean_int = pixels, mean_int
        self.files: list[Path] = []

    @classmethod
    def pixels(cls, calib: np.ndarray, mean_int: tuple[int, ...]) -> "_Maps":
        return cls(calib.shape, "pixels", None, pixels=calib, mean_int=mean_int)

    @classmethod
    def floats(cls, folder: Path, shape) -> "_Maps":
        return cls(shape, "float", folder)

    @classmethod
    def grid(cls, folder: Path, shape, frac: int) -> "_Maps":
        return cls(shape, "grid", folder, frac)

    def append(self, part: torch.Tensor) -> None:
        """Store the next chunk (float32 real values; a "grid" map stores their uint8 codes)."""
        if self.kind == "grid":
            codes = (part * 2.0**self.frac).round().to(torch.uint8)  # k·2^-frac -> k, exact
            array = codes.numpy()
        else:
            array = part.contiguous().numpy()
        path = self.folder / f"{id(self)}-{len(self.files)}.bin"
        array.tofile(path)
        self.files.append(path)

    def chunk_count(self) -> int:
        return -(-self.shape[0] // CHUNK)

    def chunk(self, i: int) -> torch.Tensor:
        """Images ``i·CHUNK ..`` as float32 real values (N_i, C, H, W)."""
        if self.kind == "pixels":
            return chip_input(self.pixels[i * CHUNK : (i + 1) * CHUNK], self.mean_int)
        dtype = np.uint8 if self.kind == "grid" else np.float32
        array = np.fromfile(self.files[i], dtype=dtype).reshape(-1, *self.shape[1:])
        if self.kind == "grid":
            return torch.from_numpy(array).float() * 2.0**-self.frac
        return torch.from_numpy(array)

    def chunks(self) -> Iterator[torch.Tensor]:
        for i in range(self.chunk_count()):
            yield self.chunk(i)

    def pooled(self, folder: Path) -> "_Maps":
        """The 2x2 max-pool of every map (exact: a maximum of stored values)."""
        n, c, h, w = self.shape
        out = _Maps((n, c, h // 2, w // 2), "grid" if self.kind == "grid" else "float", folder, self.frac)
        for part in self.chunks():
            out.append(pool2x2(part))
        self.drop()
        return out

    def patches(self, rows: np.ndarray) -> torch.Tensor:
        """`_patches` of the whole batch at the sorted flat positions `rows`, a chunk at a time."""
        n, c, h, w = self.shape
        z = torch.empty(len(rows), c * TAPS + 1)
        z[:, -1] = 1.0
        done = 0
        for i, mine in _rows_by_chunk(rows, h * w):
            part = _patch_columns(self.chunk(i), mine - i * CHUNK * h * w)
            z[done : done + len(mine), :-1] = part
            done += len(mine)
        return z

    def drop(self) -> None:
        """Delete the chunk files (the pixels are the caller's)."""
        for path in self.files:
            path.unlink(missing_ok=True)
        self.files = []


class _Conv:
    """A 3x3 convolution of a `_Maps`, chunk by chunk: its output chunks, and what the layer's fit
    keeps of them on the way (the output at the sampled positions, and the fixed-stride ReLU sample
    of `chipq.quant.calibrate.subsample` over the whole (N, O, H, W) output)."""

    def __init__(self, x: _Maps, weight: torch.Tensor, bias: torch.Tensor, rows: np.ndarray) -> None:
        n, _, h, w = x.shape
        self.x, self.weight, self.bias, self.rows = x, weight, bias, rows
        self.shape = (n, int(weight.shape[0]), h, w)
        self._at: list[torch.Tensor] = []
        self._sample: RunningSample | None = None

    def chunks(self) -> Iterator[torch.Tensor]:
        n, o, h, w = self.shape
        self._sample = RunningSample(n * o * h * w)  # `subsample`'s stride over the whole output
        wanted = dict(_rows_by_chunk(self.rows, h * w))
        for i in range(self.x.chunk_count()):
            part = F.conv2d(self.x.chunk(i), self.weight, self.bias, padding=1)
            if i in wanted:
                self._at.append(_at(part, wanted[i] - i * CHUNK * h * w))
            self._sample.add(part.numpy(), relu=True)
            yield part

    def at_rows(self) -> torch.Tensor:
        """The output at the sampled positions (P, O), after `chunks` ran."""
        return torch.cat(self._at) if self._at else torch.empty(0, self.shape[1])

    def relu_sample(self) -> np.ndarray:
        """`subsample(relu(output))`, after `chunks` ran."""
        return self._sample.values()


def _rows_by_chunk(rows: np.ndarray, per_image: int) -> Iterator[tuple[int, np.ndarray]]:
    """(chunk index, its sorted flat positions) for every chunk that has some."""
    chunk_of = rows // (per_image * CHUNK)
    for i in np.unique(chunk_of):
        yield int(i), rows[chunk_of == i]


@dataclass(frozen=True)
class Refitted:
    """The key of a `each_layer_candidates` candidate made with the joint α refit while the others are not."""

    setting: LayerSpec


def each_layer_candidates(
    stack: FloatStack,
    fracs: list[int],
    calib: np.ndarray,
    widths: tuple[int, ...],
    config: ReconstructConfig,
    progress: Callable[[int, int], None] | None = None,
    refitted: tuple[LayerSpec, ...] = (),
) -> Iterator[dict[int, FloatConv]]:
    """Each conv layer reconstructed alone at every width in `widths`, for sensitivity measurement,
    yielded one layer at a time, each candidate made when it is read (a consumer that keeps them
    compact holds one float32 candidate at a time, not every layer's: 0.75 GB for VGG-16's v2
    settings).

    Layer L's candidate at m bits is what `reconstruct` makes of L when every layer before it is
    float (with the chip's 8-bit activations at `fracs`): its α·M and bias fitted so that, on `calib`,
    its output from that input is close to the float model's. Step 1 (the target weights) is shared by
    the widths; only step 2 runs once per width. conv1's candidates act on the chip input
    ``p − mean_int`` (the normalisation folded in, as `chipq.quant.sensitivity` runs it).

    `refitted` given: every setting of `widths` is made without the joint α refit (`refit_alphas`,
    the costly part of step 2: O·K²·81 multiply-adds per setting, 10^10 on a 512-channel layer),
    and each setting of `refitted` also with it, under the key ``Refitted(setting)``
    (`chipq.quant.sensitivity`'s noise gain runs its tail passes on those).

    Yields:
        per layer in order, a mapping ``m -> FloatConv`` whose weights are exactly α·M·2^-s
        (`_Candidates`: reading a setting twice makes it twice). `progress` is called once the
        consumer asks for the next layer.
    """
    stack = stack.without_trailing_pool()
    convs = stack.conv_layers()
    if len(fracs) != len(convs):
        raise ValueError(f"{len(fracs)} fracs for {len(convs)} conv layers")
    fold = InputFold.of(stack)
    # the allocator as `reconstruct` runs it: large blocks mapped afresh, freed pages given back per layer
    with torch_settings(config.threads), torch.no_grad(), spill_folder() as spill, large_blocks_mapped():
        x_ref = x_f = _Maps.pixels(calib, fold.mean_int)  # streamed as `reconstruct` streams them (`_Maps`)
        rng = np.random.default_rng([config.seed, 7])
        index = 0
        for item in stack.layers:
            if isinstance(item, FloatPool):
                x_ref, x_f = x_ref.pooled(spill), x_f.pooled(spill)
                continue
            conv = fold.apply_numpy(item) if index == 0 else item
            chip = ChipConv.of_float(conv, int(fracs[index]))  # float weights, the chip's activations
            rows = _positions(x_ref.shape, config.positions, rng)
            y_f = _Conv(x_f, chip.weight, chip.bias, rows)
            next_f = _Maps.floats(spill, y_f.shape)
            for part in y_f.chunks():
                next_f.append(F.relu(part, inplace=True))  # `chunks` is done with `part`
            row = _Candidates(conv.name, _target(conv, x_ref.patches(rows), y_f.at_rows(), config), widths, config, refitted)
            y_ref = _Conv(x_ref, chip.weight, chip.bias, rows[:0])
            next_ref = _Maps.grid(spill, y_ref.shape, chip.frac)
            for part in y_ref.chunks():
                next_ref.append(activations(part, chip.frac))
            x_ref.drop()
            x_f.drop()
            x_ref, x_f = next_ref, next_f
            index += 1
            yield row  # its candidates are made as the consumer reads them
            del row
            if progress:
                progress(index, len(convs))
            release_freed_memory()
        x_ref.drop()
        x_f.drop()


class _Candidates(Mapping):
    """One layer's `each_layer_candidates`: ``setting -> FloatConv``, step 2 of the setting from the
    shared target (step 1), made each time it is read and not kept (a 512-channel layer's 13
    settings as float32 are 0.12 GB; the reader keeps what it needs in its own, compact form)."""

    def __init__(self, name: str, target: "_Target", widths: tuple, config: ReconstructConfig, refitted: tuple) -> None:
        if refitted and any(as_spec(s).keep < 100 for s in (*widths, *refitted)):
            target.inverse()  # made once here, shared with the copy below (pruning reads it; 0.5 s at 512 channels)
        plain = dataclasses.replace(target, raw=None) if refitted else target  # raw None: no joint α refit
        self._made = {m: (plain, m) for m in widths}
        self._made.update({Refitted(as_spec(s)): (target, s) for s in refitted})
        self._name, self._config = name, config

    def __getitem__(self, key) -> FloatConv:
        source, setting = self._made[key]
        return FloatConv(self._name, *_quantize_target(source, setting, self._config))

    def __contains__(self, key) -> bool:  # without making the candidate (Mapping's would)
        return key in self._made

    def __iter__(self) -> Iterator:
        return iter(self._made)

    def __len__(self) -> int:
        return len(self._made)


def _positions(shape: torch.Size, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` distinct (image, y, x) output positions as flat indices, sorted (deterministic)."""
    n, _, h, w = shape
    total = n * h * w
    if count >= total:
        return np.arange(total)
    return np.sort(rng.choice(total, size=count, replace=False))


def _patches(x: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """The 3x3 zero-padded patches of `x` at the flat positions `rows`, plus a constant 1: (P, 9C+1)."""
    return torch.cat([_patch_columns(x, rows), torch.ones(len(rows), 1)], dim=1)


def _patch_columns(x: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """`_patches` without the constant column: (P, 9C), channel-major, taps (dy, dx) inside."""
    n, c, h, w = x.shape
    img, rest = np.divmod(rows, h * w)
    yy, xx = np.divmod(rest, w)
    padded = F.pad(x, (1, 1, 1, 1))
    parts = []
    for dy in range(3):
        for dx in range(3):
            parts.append(padded[torch.from_numpy(img), :, torch.from_numpy(yy + dy), torch.from_numpy(xx + dx)])
    return torch.stack(parts, dim=2).reshape(len(rows), c * TAPS)


def _at(y: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    n, o, h, w = y.shape
    return y.permute(0, 2, 3, 1).reshape(n * h * w, o)[torch.from_numpy(rows)]


def _solve_layer(conv: FloatConv, bits: LayerSpec, z: torch.Tensor, target: torch.Tensor, config: ReconstructConfig):
    """Steps 1 and 2 of the module docstring for one layer: quantized weights (α·M·2^-s) and bias."""
    return _quantize_target(_target(conv, z, target, config), bits, config, last=True)


@dataclass
class _Target:
    """Step 1 of one layer, which does not depend on the mask width: what step 2 quantizes."""

    v: torch.Tensor  # (O, d+1) least-squares target weights, the bias last
    raw: torch.Tensor | None  # undamped Z^T Z (for `refit_alphas`)
    cross: torch.Tensor  # T^T Z
    damped: torch.Tensor | None  # Z^T Z + λ I: the quadratic form of the output error (with the ridge); None once let go
    u: torch.Tensor | None  # H^-1 = U^T U (error feedback, pruning); `inverse` makes it on demand
    out_ch: int
    in_ch: int

    def inverse(self) -> torch.Tensor:
        """U with ``U^T U = H^-1`` of the damped H (computed once)."""
        if self.u is None:
            self.u = inverse_factor(self.damped)
        return self.u


def _target(conv: FloatConv, z: torch.Tensor, target: torch.Tensor, config: ReconstructConfig) -> _Target:
    return _target_of(conv, *_statistics(z, target), config)


def _statistics(z: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Z^T Z`` (d+1, d+1) and ``T^T Z`` (O, d+1): all step 1 needs of the patches, so that the
    caller can free them (a 512-channel layer's are 0.3 GB) before the solve's own copies are made."""
    return gram(z), (target.T @ z).to(SOLVE)


def _target_of(conv: FloatConv, hessian: torch.Tensor, cross: torch.Tensor, config: ReconstructConfig) -> _Target:
    """Step 1 from the statistics (`_statistics`); `hessian` is damped in place."""
    out_ch, in_ch = conv.weight.shape[:2]
    d = in_ch * TAPS
    diag = torch.diagonal(hessian)
    dead = diag[:d] <= 0
    hessian[torch.arange(d)[dead], torch.arange(d)[dead]] = 1.0
    raw = hessian.clone() if config.refit_alphas else None
    lam = config.damp * float(diag.mean())
    # H + λI without the (d+1)^2 identity and its scaled copy (0.17 GB at 512 channels): adding 0.0
    # everywhere is what the identity's zeros did (-0.0 becomes 0.0), then λ on the diagonal
    hessian.add_(0.0)
    torch.diagonal(hessian).add_(lam)
    float_v = torch.cat(
        [torch.from_numpy(np.asarray(conv.weight, np.float32).reshape(out_ch, d)), torch.from_numpy(np.asarray(conv.bias, np.float32))[:, None]],
        dim=1,
    )
    u = inverse_factor(hessian) if config.error_feedback else None  # H^-1 = U^T U
    if config.least_squares_target:
        # ridge towards the float weights, not towards 0: (Y Z^T + λ W) (Z Z^T + λ I)^-1
        prior = float_v if config.float_prior else torch.zeros_like(float_v)
        right = cross + lam * prior
        if u is not None:
            v = (right @ u.T) @ u
        else:
            v = torch.cholesky_solve(right.T.contiguous(), torch.linalg.cholesky(hessian)).T
    else:
        v = float_v.clone()
    v[:, :d][:, dead] = 0.0
    return _Target(v, raw, cross, hessian, u, out_ch, in_ch)


def _quantize_target(t: _Target, setting: int | LayerSpec, config: ReconstructConfig, *, last: bool = False):
    """Step 2 of one layer at its setting: (weights (O, I, 3, 3), bias (O,)), float32.

    A pruned layer (``keep < 100``) first chooses its kept kernels for the output (`kept_for_output`);
    the removed kernels are set to zero with their error pushed onto the kernels after them
    (`_prune_with_feedback`, or inside `_gptq` with error feedback); then the kept kernels are
    quantized as a full layer's are, and their α's refitted jointly (`refit_alphas`).

    `last`: `t` is not used again, so its damped H and inverse factor (0.17 GB on a 512-channel
    layer) are let go before the refit, the step's largest allocation.
    """
    spec = as_spec(setting)
    bits, alpha_bits = spec.bits, spec.alpha_bits
    out_ch, in_ch, v = t.out_ch, t.in_ch, t.v
    d = in_ch * TAPS
    keep = None
    if spec.keep < 100:
        w = v[:, :d].reshape(out_ch, in_ch, TAPS)
        keep = kept_for_output(w, t.damped, t.inverse(), spec.kept(out_ch * in_ch), config.saliency)
        if not config.error_feedback:
            v = _prune_with_feedback(v, t.inverse(), keep)
    kept_v = v[:, :d] if keep is None else v[:, :d] * keep.repeat_interleave(TAPS, dim=1).to(v.dtype)
    # the layer's weight exponent, from the (kept) target weights' own least-squares fit
    alpha0, m0 = fit_kernels(kept_v.numpy().reshape(-1, TAPS), bits)
    shift = layer_shift(alpha0, m0, alpha_bits)
    scale = float(1 << shift)
    if config.error_feedback:
        q, masks = _gptq(v, t.inverse(), d, bits, scale, alpha_bits, keep)
    else:
        q = v.clone()
        rounded, levels = _round_kernels(kept_v.numpy().reshape(-1, TAPS), bits, scale, alpha_bits, alpha0)
        q[:, :d] = torch.from_numpy(rounded.reshape(out_ch, d)).to(q.dtype)
        masks = torch.from_numpy(levels.reshape(out_ch, d))
    if keep is not None:  # a removed kernel stays zero through the α refit
        masks = masks * keep.repeat_interleave(TAPS, dim=1).to(masks.dtype)
    if last:  # the refit reads only the undamped H and T^T Z
        t.damped = t.u = None
    if t.raw is not None and masks is not None:
        q = refit_alphas(masks.reshape(out_ch, in_ch, TAPS), t.raw, t.cross, config.alpha_ridge, alpha_bits)
    weight = q[:, :d].numpy().reshape(out_ch, in_ch, 3, 3).astype(np.float32)
    return weight, q[:, d].numpy().astype(np.float32)



def kernel_saliency(w: torch.Tensor, hessian: torch.Tensor, u: torch.Tensor | None, rule: str = "obs") -> torch.Tensor:
    """What removing each 3x3 kernel costs the layer's output on the calibration patches, (O, I).

    ``"obs"`` (Optimal Brain Surgeon for a group, Hassibi & Stork; SparseGPT's rule, per kernel):
    the output error added when kernel (o, i) is set to zero and the rest of row o re-fitted,
    ``w^T [(H^-1)_ii]^-1 w`` with ``(H^-1)_ii`` the 9x9 block of input channel i of the inverse
    Hessian (``H^-1 = U^T U``). ``"energy"``: the output energy of the kernel alone, ``w^T H_ii w``,
    with no re-fit. H is the damped ``Z^T Z + λ I`` (the objective the re-fit minimises).

    Args:
        w: (O, I, 9) target weights.
        hessian: H, (9I+1, 9I+1).
        u: the upper-triangular factor of H^-1 (`inverse_factor`); needed by "obs" only.
    """
    in_ch = w.shape[1]
    blocks = torch.empty(in_ch, TAPS, TAPS, dtype=hessian.dtype)
    for i in range(in_ch):
        span = slice(i * TAPS, (i + 1) * TAPS)
        if rule == "obs":  # (U^T U)_ii: U is upper, so only its rows up to the block reach it
            cols = u[: (i + 1) * TAPS, span]
            blocks[i] = cols.T @ cols
        elif rule == "energy":
            blocks[i] = hessian[span, span]
        else:
            raise ValueError(f"saliency {rule!r}: one of {', '.join(SALIENCIES)}")
    if rule == "obs":
        blocks = torch.linalg.inv(blocks.double()).to(hessian.dtype)
    return torch.einsum("oit,itu,oiu->oi", w, blocks, w)


def kept_for_output(w: torch.Tensor, hessian: torch.Tensor, u: torch.Tensor | None, count: int, rule: str = "obs") -> torch.Tensor:
    """The `count` kernels of the layer whose removal would cost the output most, bool (O, I).

    A layer-wide choice (`kernel_saliency` of every kernel, the largest kept): an output channel
    whose kernels matter more keeps more of them. Ties keep the earlier kernel (o-major).
    """
    saliency = kernel_saliency(w, hessian, u, rule).flatten().double()
    order = np.argsort(-saliency.numpy(), kind="stable")
    keep = np.zeros(saliency.numel(), dtype=bool)
    keep[order[:count]] = True
    return torch.from_numpy(keep.reshape(w.shape[:2]))


def _prune_with_feedback(v: torch.Tensor, u: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """`v` (O, 9I+1) with the removed kernels set to zero and the rest re-fitted for the output.

    Columns in order, each removed column's whole weight is the error pushed onto the later
    columns through U (``U^T U = H^-1``), as `_gptq` does with rounding errors (SparseGPT's
    compensation); a kept column is left as it is. A kept column fixed before a later removal
    does not see it, so this is the least-squares fit of the kept weights only where every removed
    kernel of a row precedes its kept ones (tests/quant/test_reconstruct_prune.py); in general it is
    the usual one-pass approximation, at the cost of one GPTQ pass. `refit_alphas` then solves the
    kept kernels' α's jointly and exactly.
    """
    w = v.clone()
    cut = ~keep.repeat_interleave(TAPS, dim=1)  # (O, d)
    d = cut.shape[1]
    block = GPTQ_BLOCK * TAPS
    for b0 in range(0, d, block):
        b1 = min(b0 + block, d)
        err1 = _block_errors(w[:, b0:b1], u[b0:b1, b0:b1], cut[:, b0:b1])
        w[:, b0:b1] = torch.where(cut[:, b0:b1], torch.zeros_like(err1), w[:, b0:b1] - err1 @ torch.triu(u[b0:b1, b0:b1], 1))
        w[:, b1:] -= err1 @ u[b0:b1, b1:]
    return w


def _block_errors(w1: torch.Tensor, u1: torch.Tensor, cut1: torch.Tensor) -> torch.Tensor:
    """The errors `e` (O, b) GPTQ's column loop would push from a block whose columns `cut1` are set to zero.

    Column j's error is ``e_j = (w_j - Σ_{k<j} e_k U_kj) / U_jj`` where cut, 0 where kept: on each
    row, the cut columns' errors solve the triangular system ``e_S U_SS = w_S`` by forward
    substitution, column by column for every row at once (a vector of O rows and one product with
    the columns before it per step), in numpy. Per-row triangular systems (b x b, b = 144) built and
    solved in batches made `_prune_with_feedback` take 0.85 s per pruned setting of a 512-channel
    layer (33 s of the planner's first run on VGG-16); with the substitution it takes 0.28 s.
    """
    w = w1.numpy()
    u = u1.numpy()
    cut = cut1.numpy()
    errors = np.zeros_like(w)
    for j in range(w.shape[1]):
        rows = cut[:, j]
        if not rows.any():
            continue
        rest = w[:, j] - errors[:, :j] @ u[:j, j]  # column 0: an empty product, zeros
        errors[:, j] = np.where(rows, rest / u[j, j], 0.0)
    return torch.from_numpy(errors)


def _round_kernels(
    w: np.ndarray, bits: int, scale: float, alpha_bits: int = C.ALPHA_BITS, fitted: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """α·M for each row (kernel) of `w`: least-squares α rounded to the layer's α grid (`round_alpha`), then M; and M.

    `fitted`: the least-squares α's of `w` when the caller has them (``fit_kernels(w, bits)[0]``).
    """
    alpha = fit_kernels(w, bits)[0] if fitted is None else fitted
    alpha = round_alpha(alpha, scale, alpha_bits) / scale
    m = nearest_level(w / np.where(alpha > 0, alpha, 1.0)[:, None], bits)
    return alpha[:, None] * m, m


def gram(z: torch.Tensor, block: int = 512) -> torch.Tensor:
    """``Z^T Z`` of `z` (P, d): the upper block rows only, mirrored (half the work).

    >>> z = torch.arange(12.0).reshape(4, 3)
    >>> bool(torch.equal(gram(z, block=2), z.T @ z))
    True
    """
    d = z.shape[1]
    out = torch.empty(d, d, dtype=z.dtype)
    for i0 in range(0, d, block):
        i1 = min(i0 + block, d)
        rows = z[:, i0:i1].T @ z[:, i0:]
        out[i0:i1, i0:] = rows
        out[i0:, i0:i1] = rows.T
    return out


def inverse_factor(hessian: torch.Tensor) -> torch.Tensor:
    """The upper-triangular U with ``U^T U = H^-1`` (H symmetric positive definite).

    One Cholesky factorisation and one triangular inverse: with J the order reversal,
    ``J H J = L L^T`` gives ``H^-1 = (J L^-T J)(J L^-1 J)``, and ``J L^-1 J`` is upper triangular.

    >>> h = torch.tensor([[4.0, 2.0], [2.0, 3.0]], dtype=torch.float64)
    >>> u = inverse_factor(h)
    >>> bool(torch.allclose(u.T @ u, torch.linalg.inv(h))), bool(torch.equal(u, torch.triu(u)))
    (True, True)
    """
    low = torch.linalg.cholesky(torch.flip(hessian, (0, 1)))
    eye = torch.eye(len(hessian), dtype=hessian.dtype)
    return torch.flip(torch.linalg.solve_triangular(low, eye, upper=False), (0, 1))


def _gptq(
    v: torch.Tensor,
    u: torch.Tensor,
    d: int,
    bits: int,
    scale: float,
    alpha_bits: int = C.ALPHA_BITS,
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize columns 0..d-1 of `v` (O, d+1) in order with error feedback; U^T U = H^-1 (U upper).

    `keep` (O, d/9) bool: the kernels kept; a removed kernel's columns are quantized to zero (its
    whole weight is the error pushed on), as SparseGPT prunes.

    Returns:
        (the quantized `v`, α·M in its first d columns; the mask levels M (O, d)).
    """
    w = v.clone()
    masks = torch.ones(v.shape[0], d, dtype=v.dtype)
    block = GPTQ_BLOCK * TAPS
    for b0 in range(0, d, block):
        b1 = min(b0 + block, d)
        kept = None if keep is None else keep[:, b0 // TAPS : -(-b1 // TAPS)].numpy()
        w1, err1, levels = _gptq_block(w[:, b0:b1].numpy(), u[b0:b1, b0:b1].numpy(), bits, scale, alpha_bits, kept)
        masks[:, b0:b1] = torch.from_numpy(levels)
        w[:, b0:b1] = torch.from_numpy(w1)
        w[:, b1:] -= torch.from_numpy(err1) @ u[b0:b1, b1:]
    return w, masks


def _gptq_block(w1: np.ndarray, u1: np.ndarray, bits: int, scale: float, alpha_bits: int, kept: np.ndarray | None):
    """`_gptq`'s column loop over one block: (the block quantized, its float32 errors, its levels).

    In numpy, not torch: every step is a vector of O values, and torch ran each of the ~15 small
    operations per column on its thread pool (two threads waking and waiting for 512 values, most
    of the reconstruction's time on a busy machine). The arithmetic is the same operation for
    operation (a float32 column divided by the float64 α, the float64 error, each update of the
    float32 weights computed in float64 and rounded back), so the bytes are the same.
    """
    w1 = w1.copy()
    err1 = np.zeros_like(w1)
    levels = np.empty_like(w1)
    for j in range(w1.shape[1]):
        if j % TAPS == 0:  # a new kernel: its α from the (already corrected) taps
            a, _ = fit_kernels(w1[:, j : j + TAPS], bits)
            alpha = round_alpha(a, scale, alpha_bits) / scale
            if kept is not None:
                alpha = np.where(kept[:, j // TAPS], alpha, 0.0)
            safe = np.where(alpha > 0, alpha, 1.0)
        col = w1[:, j]
        level = nearest_level(col / safe, bits)
        levels[:, j] = level
        qcol = alpha * level
        e = (col - qcol) / np.float64(u1[j, j])
        w1[:, j:] -= e[:, None] * u1[j, j:][None, :]
        w1[:, j] = qcol
        err1[:, j] = e
    return w1, err1, levels


REFIT_CHUNK = 64  # output channels per batched solve of `refit_alphas`
# output channels whose α Gram matrices are made at once (`_alpha_grams`): 64 x 512 x 512 float32
# (64 MB) on a 512-channel layer. Since the products run in numpy, 64 at once are no slower than 256
# (`refit_alphas` of a random 512-channel layer, machine otherwise idle: 2.8 and 2.5 s against 3.2
# and 2.9 s, the same bytes), and 256 held 0.2 GB more at the reconstruction's and the planner's peaks.
GRAM_CHUNK = REFIT_CHUNK


def refit_alphas(
    masks: torch.Tensor, hessian: torch.Tensor, cross: torch.Tensor, ridge: float, alpha_bits: int = C.ALPHA_BITS
) -> torch.Tensor:
    """Every α of a layer (and the bias) re-chosen jointly for the output, the masks kept.

    With the masks M fixed, output channel o is linear in its α's: ``y_o = Σ_k α_ok (M_ok · z_k) + b_o``,
    so the α's minimising ``||y_o - t_o||²`` on the sampled positions solve a (K+1)x(K+1) system
    whose matrix comes from the 9x9 blocks of ``H = Z^T Z``: ``G_kl = M_ok^T H_kl M_ol``. (GPTQ picks
    each α greedily when its kernel comes up; this solves them together.) A negative α flips its
    mask (the levels are symmetric); the α's are rounded to the 8-bit grid of the layer's new weight
    shift, and the bias is solved again for the rounded α's.

    Args:
        masks: (O, K, 9) mask levels.
        hessian: undamped ``Z^T Z`` (9K+1, 9K+1), the bias column last.
        cross: ``T^T Z`` (O, 9K+1).
        ridge: added to the α part of the diagonal, as a share of its mean.
        alpha_bits: the layer's α width (the grid the α's are rounded to, `round_alpha`).

    Returns:
        (O, 9K+1): α·M in the first 9K columns, the bias last.
    """
    out_ch, k, taps = masks.shape
    d = k * taps
    h32 = hessian[:d, :d]  # a view: the products read its rows in place (a copy was 85 MB at 512 channels)
    m32 = masks.to(hessian.dtype).contiguous()
    m = m32
    side = torch.einsum("oki,ki->ok", m, hessian[:d, d].reshape(k, taps))
    rhs = torch.einsum("oki,oki->ok", m, cross[:, :d].reshape(out_ch, k, taps))
    count = hessian[d, d]
    alphas = torch.empty(out_ch, k, dtype=hessian.dtype)
    idx = torch.arange(k)
    for o0 in range(0, out_ch, REFIT_CHUNK):
        o1 = min(o0 + REFIT_CHUNK, out_ch)
        c = o1 - o0
        system = torch.zeros(c, k + 1, k + 1, dtype=hessian.dtype)
        if o0 % GRAM_CHUNK == 0:
            grams = None  # freed before the next chunk's are made: one chunk's Gram matrices live at a time
            grams = _alpha_grams(m32[o0 : o0 + GRAM_CHUNK], h32)
        system[:, :k, :k] = grams[o0 % GRAM_CHUNK : o0 % GRAM_CHUNK + c]
        system[:, :k, k] = side[o0:o1]
        system[:, k, :k] = side[o0:o1]
        system[:, k, k] = count
        diag = torch.diagonal(system[:, :k, :k], dim1=1, dim2=2)
        system[:, idx, idx] += ridge * diag.mean(dim=1, keepdim=True).clamp_min(1e-30)
        right = torch.cat([rhs[o0:o1], cross[o0:o1, d : d + 1]], dim=1)[:, :, None].contiguous()
        solution = torch.cholesky_solve(right, torch.linalg.cholesky(system))  # symmetric positive definite
        alphas[o0:o1] = solution[:, :k, 0]
    masks = torch.where(alphas[:, :, None] < 0, -m, m)
    alphas = alphas.abs()
    scale = float(1 << layer_shift(alphas.numpy().ravel(), m.numpy().reshape(-1, taps), alpha_bits))
    alphas = torch.from_numpy(round_alpha(alphas.numpy(), scale, alpha_bits)).to(hessian.dtype) / scale
    weights = (alphas[:, :, None] * masks).reshape(out_ch, d)
    # the bias for the rounded α's: mean output error over the positions
    bias = (cross[:, d] - weights @ hessian[:d, d]) / count.clamp_min(1.0)
    return torch.cat([weights, bias[:, None]], dim=1)


def _alpha_grams(m32: torch.Tensor, h32: torch.Tensor) -> torch.Tensor:
    """``G_kl = M_ok^T H_kl M_ol`` for the outputs of `m32` (c, K, 9), from H's upper triangle only.

    Made for `GRAM_CHUNK` outputs at a time: all 512 outputs of a 512-channel layer at once are
    512 x 512 x 512 float32 (0.5 GB); each output's rows are computed alike either way (the same
    bytes, tests/quant/test_reconstruct_memory.py). Fewer outputs per call cost more calls.

    Row kk of every output is ``(M_ok H_k,kk: ) · M_o,kk:`` summed over the 9 taps. The products
    and the sum run in numpy (torch ran them on its thread pool, a third of the reconstruction's
    time), the taps added in the order torch's ``sum(dim=2)`` adds 9 float32 values on this
    project's machines (``(t0 + t8) + t1 + ... + t7``, `_tap_sum`), so the bytes are the ones the
    torch sum made (tests/quant/test_reconstruct_numpy_loops.py compares the two). The lower
    triangle is mirrored a block of rows at a time (a column at a time strides across the whole
    matrix). The products ``M_ok H_k,kk:`` run on one torch thread (`torch_threads`).
    """
    with torch_threads(1):
        return _alpha_grams_rows(m32, h32)


def _alpha_grams_rows(m32: torch.Tensor, h32: torch.Tensor) -> torch.Tensor:
    """`_alpha_grams`' loop over the rows, a block of `GRAM_MIRROR_ROWS` mirrored at a time."""
    out_ch, k, taps = m32.shape
    m_np = m32.numpy()
    grams = np.empty((out_ch, k, k), dtype=h32.numpy().dtype)  # float32 in the pipeline (`SOLVE`)
    for k0 in range(0, k, GRAM_MIRROR_ROWS):
        k1 = min(k0 + GRAM_MIRROR_ROWS, k)
        for kk in range(k0, k1):  # row kk of every output's Gram matrix, from column kk on
            part = (m32[:, kk, :] @ h32[kk * taps : (kk + 1) * taps, kk * taps :]).numpy()  # (c, 9(K-kk))
            _tap_sum(part.reshape(out_ch, k - kk, taps) * m_np[:, kk:, :], grams[:, kk, kk:])
        square = grams[:, k0:k1, k0:k1]
        square[...] = np.where(np.triu(np.ones((k1 - k0, k1 - k0), dtype=bool)), square, square.transpose(0, 2, 1))
        grams[:, k1:, k0:k1] = grams[:, k0:k1, k1:].transpose(0, 2, 1)
    return torch.from_numpy(grams)


GRAM_MIRROR_ROWS = 64  # rows of the α Gram matrices made before their mirror image is copied


def _tap_sum(products: np.ndarray, out: np.ndarray) -> None:
    """`out` = the sum over the last axis (9 taps) of `products`, in torch's order for float32:
    t0 + t8 first, then t1 .. t7 one after the other, in the arrays' own precision."""
    np.add(products[..., 0], products[..., 8], out=out)
    for tap in range(1, 8):
        out += products[..., tap]


def _unfold_first(q_conv: FloatConv, original: FloatConv, fold: InputFold) -> FloatConv:
    """conv1's shadow weights in the model's own input units (the inverse of the input fold)."""
    scale = 255.0 * np.asarray(fold.std, dtype=np.float64)
    weight = q_conv.weight.astype(np.float64) * scale[None, :, None, None]
    rest = np.asarray(fold.mean_int, dtype=np.float64) - 255.0 * np.asarray(fold.mean, dtype=np.float64)
    folded_w = q_conv.weight.astype(np.float64)
    bias = q_conv.bias.astype(np.float64) - (folded_w.sum(axis=(2, 3)) * rest[None, :]).sum(axis=1)
    return FloatConv(original.name, weight.astype(np.float32), bias.astype(np.float32))
