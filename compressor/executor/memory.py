"""How much memory a run at a given input size needs, known from the sizes before anything runs.

The caps on a blob's input size (65535 a side) and on `--input` allow sizes that no machine can
run: VGG-16 at 4096x4096 needs tens of GiB of activations. `check_fits` estimates the activation
memory of one network call from the layer chain, the input size and the batch, and refuses the
run with a message when it exceeds the memory this process can get (`available_bytes`: the
smaller of the system's available memory and what the address-space limit leaves), instead of
letting a 17 GB allocation fail halfway (or the kernel kill the process).

The estimate is an order of magnitude, not a measurement: the widest layer's input and output
maps as 4-byte values, twice (a temporary each), times the batch; for calibration every conv map of
every image. It is meant to catch the runs that need ten or a hundred times the memory there is,
before they start; a run near the limit may still be refused or fail. `check_input_size` refuses sizes too small for the chain's max-pools.
"""

from __future__ import annotations

import ctypes
import os
import resource
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from chipq.errors import ChipqError

BYTES_PER_VALUE = 4  # float32 / int32 maps of the fast executor and the float model
TAPS = 9  # weights per 3x3 kernel
COPIES = 2  # a temporary per map of the widest layer (input and output counted separately)
RESERVE_BYTES = 256 << 20  # left free for the interpreter, libraries and the images themselves


class NotEnoughMemory(ChipqError):
    """The run needs more memory than this process can get."""


class InputTooSmall(ChipqError):
    """The input size leaves a map smaller than 2x2 before a max-pool."""


def _chain(layers: Iterable) -> list[tuple[str, int]]:
    """('conv', out_channels) or ('pool', 0) per layer of a ChipModel or a FloatStack."""
    chain = []
    for layer in layers:
        if hasattr(layer, "weight") or hasattr(layer, "mask"):
            chain.append(("conv", int(layer.out_channels)))
        else:
            chain.append(("pool", 0))
    return chain


def check_input_size(layers: Iterable, hw: tuple[int, int], what: str) -> None:
    """Refuse an input (height, width) that a max-pool of the chain cannot halve (a map under 2x2).

    Raises:
        InputTooSmall: naming `what` (the option or file that set the size) and the smallest size.
    """
    pools = sum(1 for kind, _ in _chain(layers) if kind == "pool")
    smallest = 2**pools
    height, width = hw
    if height < smallest or width < smallest:
        raise InputTooSmall(
            f"{what}: input {width}x{height} is too small: the model's {pools} max-pools need at least "
            f"{smallest}x{smallest} pixels"
        )


def activation_bytes(layers: Iterable, hw: tuple[int, int], batch: int, in_channels: int = 3) -> int:
    """Generous activation memory of one call on `batch` inputs of (height, width) (module docstring)."""
    height, width = hw
    channels, peak = in_channels, 0
    for kind, out in _chain(layers):
        if kind == "pool":
            height, width = height // 2, width // 2
            continue
        peak = max(peak, (channels + out) * height * width)
        channels = out
    return peak * BYTES_PER_VALUE * COPIES * max(1, batch)


BATCH_ACTIVATION_BYTES = 512 << 20  # what one executor call's activations may take (`fitting_batch`)


def fitting_batch(layers: Iterable, hw: tuple[int, int], batch: int, budget: int | None = None) -> int:
    """The batch an executor runs: `batch`, or fewer inputs (at least 1) when the activations of one
    call (`activation_bytes`) would pass `budget` (default `BATCH_ACTIVATION_BYTES`). At 224x224 VGG-16 keeps its batch of 8; at 640x480
    one input is 0.3 GB and 8 are 2.5 GB, so it runs one at a time. Each input's maps are computed
    alike in any batch (convolutions do not mix the inputs), so the results do not change.

    >>> from chipq.floatnet.model import FloatConv
    >>> import numpy as np
    >>> conv = FloatConv("c", np.zeros((64, 3, 3, 3), np.float32), np.zeros(64, np.float32))
    >>> fitting_batch([conv], (224, 224), 8), fitting_batch([conv], (2000, 2000), 8)
    (8, 1)
    """
    budget = BATCH_ACTIVATION_BYTES if budget is None else budget
    per_input = activation_bytes(list(layers), hw, 1)
    return max(1, min(int(batch), budget // max(1, per_input)))


def kept_maps_bytes(layers: Iterable, hw: tuple[int, int], images: int) -> int:
    """Memory of every conv map of `images` inputs kept at once as float32 (calibration taps)."""
    height, width = hw
    total = 0
    for kind, out in _chain(layers):
        if kind == "pool":
            height, width = height // 2, width // 2
        else:
            total += out * height * width * 4
    return total * images + images * 3 * hw[0] * hw[1]


def available_bytes() -> int | None:
    """Memory this process can still get: MemAvailable, and what RLIMIT_AS leaves; None if unknown."""
    limits = []
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limits.append(max(0, soft - _address_space_in_use()))
    return min(limits) if limits else None


def _address_space_in_use() -> int:
    try:
        with open(f"/proc/{os.getpid()}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def check_fits(layers: Iterable, hw: tuple[int, int], batch: int, what: str, keep_maps: int = 0) -> int:
    """Refuse a run whose estimated activation memory exceeds what is available; return the estimate.

    `keep_maps` images have all their conv maps kept at once (calibration) on top of one call.

    Raises:
        NotEnoughMemory: naming `what` (the option or file that set the size), the estimate and
            what is available.
    """
    layers = list(layers)
    need = activation_bytes(layers, hw, batch) + kept_maps_bytes(layers, hw, keep_maps)
    have = available_bytes()
    if have is not None and need + RESERVE_BYTES > have:
        raise NotEnoughMemory(
            f"{what}: a {hw[1]}x{hw[0]} input needs about {_gib(need)} of activation memory "
            f"({f'{keep_maps} calibration images' if keep_maps else f'batch {batch}'}), {_gib(max(0, have - RESERVE_BYTES))} is available; use a smaller input size"
            + (" or --batch" if batch > 1 else "")
        )
    return need


def release_freed_memory() -> None:
    """Give the pages of freed memory back to the system (glibc ``malloc_trim(0)``); no-op elsewhere.

    The heavy commands run with glibc settings that keep freed memory for reuse (`chipq.cli`'s
    ``MALLOC_SETTINGS``, `chipq.executor.int8.keep_freed_memory`): no page faults inside a stage, but
    what one stage freed stays resident, and a later stage whose blocks do not fit those holes
    grows the heap on top of them (measured: compress's retraining at 2.7 GB after a 1.8 GB
    reconstruction, though training alone needs 1.1 GB). Called between stages and between the
    reconstruction's layers, the peak resident set is what one stage needs, not the sum.
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter (malloc.h)
MAPPED_BLOCK_BYTES = 64 << 20  # blocks from this size up get pages of their own inside `large_blocks_mapped`


@contextmanager
def large_blocks_mapped() -> Iterator[None]:
    """Inside the block, glibc maps every allocation of `MAPPED_BLOCK_BYTES` or more afresh and unmaps
    it on free; afterwards the threshold the process started with (``MALLOC_MMAP_THRESHOLD_``) is back.

    The reconstruction streams maps of 50-100 MB a chunk while it keeps small pieces (the sampled
    outputs, the activation sample) between them: with the heavy commands' allocator settings
    (every block from the heap, `chipq.cli`'s ``MALLOC_SETTINGS``) the freed chunks could not be
    joined and the heap grew chunk after chunk (measured, VGG-16 conv1_1..conv2_2 on 64 photos: 2.4 GB
    at conv1_2, 1.4 GB with blocks from 64 MB mapped, 1.3 GB from 32 MB). The cost is the page
    faults of those blocks (there: 3 s -> 13 s of system time).
    """
    libc = _libc()
    if libc is None:
        yield
        return
    libc.mallopt(M_MMAP_THRESHOLD, MAPPED_BLOCK_BYTES)
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_THRESHOLD, started_mmap_threshold())


C_INT_MAX = (1 << 31) - 1


def started_mmap_threshold() -> int:
    """The mmap threshold the process started with, as `mallopt` takes it: a C ``int``.

    ``MALLOC_MMAP_THRESHOLD_`` when set (the heavy commands set 8 GiB), else glibc's 128 KiB. A value
    past the int range is capped: passed whole, only its low 32 bits arrive, and for 8 GiB that is
    0, which maps every block afresh. Every reconstruction left the process that way until
    2026-12-07. Retraining after it made 600,000 mmap/munmap pairs on the 8-conv test model
    (a 5 s compress took 8.5 s to 19 s).
    """
    try:
        value = int(os.environ.get("MALLOC_MMAP_THRESHOLD_", 128 << 10))
    except ValueError:
        value = 128 << 10
    return max(0, min(value, C_INT_MAX))


def _libc():
    """glibc, for `mallopt` and `malloc_trim`; None elsewhere (the calls are then no-ops)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # glibc only
        return libc
    except (OSError, AttributeError):
        return None


def _gib(n: int) -> str:
    if n >= 1 << 40:
        return f"{n / (1 << 40):,.1f} TiB"
    return f"{n / (1 << 30):.1f} GiB"


# --- compress: every stage's memory, from the sizes and settings --------------------------------------

RECONSTRUCT_CHUNK = 8  # images per chunk of `chipq.quant.reconstruct` (its CHUNK)
GRAM_OUTPUTS = 64  # output channels whose α Gram matrices `chipq.quant.reconstruct` makes at once (its GRAM_CHUNK)
REFIT_OUTPUTS = 64  # output channels per batched α solve (its REFIT_CHUNK)
CALIB_CHUNK = 4  # images per float pass of calibration and of the retraining cache (both read it from here)
ACTIVATION_SAMPLE = 1 << 20  # values kept per layer to choose its fraction bits (`chipq.quant.calibrate`)
RUNTIME_BYTES = 450 << 20  # the interpreter, torch and numpy loaded, before any data (measured: 0.4 GB)


def conv_maps(layers: Iterable, hw: tuple[int, int], in_channels: int = 3) -> list[tuple[int, int, int, int]]:
    """(input channels, output channels, height, width) of every conv layer of the chain at input `hw`."""
    height, width = hw
    channels, out = in_channels, []
    for kind, count in _chain(layers):
        if kind == "pool":
            height, width = height // 2, width // 2
            continue
        out.append((channels, count, height, width))
        channels = count
    return out


def reconstruction_bytes(layers: Iterable, hw: tuple[int, int], positions: int) -> int:
    """Peak memory of `chipq.quant.reconstruct` beyond the runtime: one chunk of maps, the sampled
    patches and the layer's statistics (Z^T Z, its damped copy, its inverse factor; float32); then,
    the patches freed, the α refit's Gram matrices (`GRAM_OUTPUTS` outputs' K x K) and its systems.

    The maps of all calibration images live in a spill folder (`spill_bytes`), not in memory.
    """
    peak = 0
    for cin, cout, h, w in conv_maps(layers, hw):
        chunk = RECONSTRUCT_CHUNK * h * w * BYTES_PER_VALUE * (2 * cin + 3 * cout)  # inputs (+ padding), output, ReLU, store
        d = TAPS * cin + 1
        patches = 2 * positions * d * BYTES_PER_VALUE  # Z and its pieces while it is gathered
        stats = 5 * d * d * BYTES_PER_VALUE + 4 * cout * d * BYTES_PER_VALUE + 3 * positions * cout * BYTES_PER_VALUE
        refit = (min(GRAM_OUTPUTS, cout) + 2 * min(REFIT_OUTPUTS, cout)) * (cin + 1) ** 2 * BYTES_PER_VALUE
        peak = max(peak, chunk + patches + stats, stats + refit)
    return peak + 3 * ACTIVATION_SAMPLE * 8


STORED_KERNEL_BYTES = 10  # a kernel as the chip stores it (`ConvLayer`): an α byte and 9 mask codes


def sensitivity_bytes(layers: Iterable, hw: tuple[int, int], positions: int, settings: int, inputs: int) -> int:
    """`chipq plan`'s sensitivity beyond the runtime: each layer's candidates made as the reconstruction
    makes a layer (`reconstruction_bytes`), `settings` of every layer kept as the chip stores them,
    then the tail passes of `inputs` network inputs at a time (the float model's and the chip's maps).
    """
    layers = list(layers)
    stored = sum(cin * cout * settings * STORED_KERNEL_BYTES for cin, cout, _, _ in conv_maps(layers, hw))
    return stored + max(reconstruction_bytes(layers, hw, positions), 2 * activation_bytes(layers, hw, inputs))


def spill_bytes(layers: Iterable, hw: tuple[int, int], images: int) -> int:
    """Disk the reconstruction's spill folder holds at once: both networks' maps of all images."""
    return max((images * h * w * (4 * cin + 4 * cout + cin + cout + 4 * cout) for cin, cout, h, w in conv_maps(layers, hw)), default=0)


def calibration_bytes(layers: Iterable, hw: tuple[int, int]) -> int:
    """A float pass of `CALIB_CHUNK` images with every conv map kept (the activation sample's pass)."""
    return kept_maps_bytes(layers, hw, CALIB_CHUNK) + activation_bytes(layers, hw, CALIB_CHUNK)


def training_bytes(layers: Iterable, crop: int, samples: int, batch: int, first_trained: int) -> int:
    """Retraining's sample cache (the frozen prefix's uint8 output and the teacher's last float map
    per sample) and one training step (the trained layers' maps, kept for the backward pass)."""
    maps = conv_maps(layers, (crop, crop))
    cin, _, h, w = maps[first_trained]
    last = maps[-1]
    per_sample = cin * h * w + last[1] * last[2] * last[3] * BYTES_PER_VALUE + 3 * crop * crop
    step = batch * sum(c_out * hh * ww for _, c_out, hh, ww in maps[first_trained:]) * BYTES_PER_VALUE * 6
    return samples * per_sample + step


def check_stages(stages: list[tuple[str, int, str, str]], fixed: int = 0) -> int:
    """Refuse a run whose largest stage does not fit; return the largest need.

    Args:
        stages: per stage: what it is, its bytes, the options that set its size (the line's
            subject), and what lowers it.
        fixed: bytes held through every stage (the model, the images).

    Raises:
        NotEnoughMemory: one line: the options, the stage, how much it needs, what is available,
            what lowers it.
    """
    what, need, subject, lower = max(stages, key=lambda stage: stage[1])
    need += fixed + RUNTIME_BYTES
    have = available_bytes()
    if have is not None and need > have:
        raise NotEnoughMemory(f"{subject}: {what} needs about {_gib(need)} of memory, {_gib(have)} is available; {lower}")
    return need


class NotEnoughDisk(ChipqError):
    """The run's spill folder needs more disk than the temporary folder has."""


def check_spill(layers: Iterable, hw: tuple[int, int], images: int, what: str) -> int:
    """Refuse a reconstruction whose spill folder (`spill_bytes`) does not fit the temporary folder."""
    import shutil
    import tempfile

    need = spill_bytes(layers, hw, images)
    folder = tempfile.gettempdir()
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return need
    if need > free:
        raise NotEnoughDisk(
            f"{what}: the reconstruction keeps about {_gib(need)} of maps in {folder}, {_gib(free)} is free there; "
            "set TMPDIR to a folder with more room or use a smaller input size"
        )
    return need
