"""`verify`: is a blob sound, exact, and faithful to its float model? (`chipq.reports.verify` renders.)

`verify_blob` is `chipq verify`: read the blob (integrity), check the float model is the blob's,
read the photos (default: the sample photos shipped with chipq, never calibration photos), run
`verify` on them, and write the RTL test vectors when asked. `verify` is the same on a chip model
and images in memory.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from chipq.errors import UsageError
from chipq.executor import golden
from chipq.floatnet.model import FloatStack
from chipq.formats.fileio import atomic_write, check_output_dir, replace_dir
from chipq.formats.model import ChipModel, ConvLayer, layer_stem
from chipq.reports.verify import AgreementSums, VerifyReport, compare_exact
from chipq.retrieval.describe import quarter_turns
from chipq.retrieval.pooling import nip_from_maps

Progress = Callable[[str], None]


def default_photos() -> Path:
    """`chipq verify`'s photos when --images is not given: the 9 sample photos shipped with chipq
    (`chipq.data.samples_dir`), disjoint from the calibration and training photo set.

    Raises:
        UsageError: the sample set is not installed (asks for --images).
    """
    from chipq.data import samples_dir

    try:
        return samples_dir() / "photos"
    except FileNotFoundError:
        raise UsageError("no sample photos installed with chipq: give --images DIR (photos that are not calibration photos)") from None


def verify_blob(
    blob: Path,
    *,
    model: Path | None = None,
    images: Path | None = None,
    limit: int = 8,
    golden_count: int = 1,
    vectors: Path | None = None,
    vectors_hex: bool = False,
    min_cosine: float | None = None,
    progress: Progress | None = None,
) -> tuple[ChipModel, VerifyReport]:
    """`chipq verify BLOB`: the checks on the first `limit` photos of `images`.

    Args:
        blob: the chip blob (read with every check: integrity).
        model: the float model it came from, for the fidelity checks.
        images: photos (folder or list file), resized to the blob's input; default `default_photos`.
        limit: at most this many photos.
        golden_count: how many of them the golden executor checks.
        vectors: write per-layer test vectors for the first ``max(golden_count, 1)`` photos there.
        vectors_hex: with `vectors`, a $readmemh .hex beside every vector.
        min_cosine: a failure when the mean NIP descriptor cosine is below it (needs `model`).
        progress: called with a short text as each step starts.

    Returns:
        The chip model and the report (``failures`` empty: every check passed).
    """
    from chipq.executor.memory import check_fits
    from chipq.formats.reader import read_blob

    # PyTorch loads only once the options and the blob have passed their checks (a bad blob is
    # refused in a fraction of a second): the photos' reader, the fast executor and the float model
    if vectors_hex and vectors is None:
        raise UsageError("--vectors-hex needs --vectors")
    if min_cosine is not None and model is None:
        raise UsageError("--min-cosine needs --model")
    if min_cosine is not None and not -1.0 <= min_cosine <= 1.0:  # NaN fails this too: it passes every check
        raise UsageError(f"--min-cosine {min_cosine}: a cosine is a number from -1 to 1")
    if vectors is not None:
        check_vectors_target(vectors, inputs=[("blob", blob), ("model", model), ("photo folder", images or default_photos())])
    chip = read_blob(blob)  # integrity: raises a FormatError (exit 2) on any failed check
    hw = (chip.input_height, chip.input_width)
    check_fits(chip.layers, hw, 8, str(blob), keep_maps=limit if model is not None else 0)
    stack = None
    if model is not None:
        from chipq.importers import load_model

        stack = load_model(model)
        check_same_chain(chip, stack.without_trailing_pool(), blob, model)
    from chipq.quant.calibrate import calibration_images

    source = images if images is not None else default_photos()
    batch, names = calibration_images(source, hw, limit=limit)
    say = progress or (lambda text: None)
    report = verify(chip, batch, names, stack=stack, golden_count=golden_count, progress=say)
    if vectors is not None:
        say("writing test vectors")
        write_vectors(chip, batch[: max(golden_count, 1)], names[: max(golden_count, 1)], vectors, readmemh=vectors_hex)
    mean = float(np.mean(report.nip_cosines)) if report.nip_cosines else None
    if min_cosine is not None and mean is not None and mean < min_cosine:
        report.failures.append(f"mean NIP cosine {mean:.4f} < --min-cosine {min_cosine}")
    return chip, report


def check_same_chain(chip, stack, blob: Path, model: Path) -> None:
    """Refuse a float model whose layers are not the blob's (another model, or another plan's source).

    Raises:
        UsageError: naming both files and the first layer that differs.
    """
    def chain(layers) -> list[tuple[str, int, int]]:
        return [
            ("conv" if hasattr(layer, "weight") or hasattr(layer, "mask") else "pool", layer.in_channels, layer.out_channels)
            if hasattr(layer, "weight") or hasattr(layer, "mask") else ("pool", 0, 0)
            for layer in layers
        ]

    theirs, mine = chain(stack.layers), chain(chip.layers)
    if theirs == mine:
        return
    for index, (a, b) in enumerate(zip(theirs, mine)):
        if a != b:
            raise UsageError(
                f"--model {model}: layer {index} is {a[0]} {a[1]}->{a[2]}, {blob} has {b[0]} {b[1]}->{b[2]}: "
                "the blob was not made from this model"
            )
    raise UsageError(f"--model {model}: {len(theirs)} layers, {blob} has {len(mine)}: the blob was not made from this model")


def verify(
    model: ChipModel,
    images: np.ndarray,
    names: list[str],
    *,
    stack: FloatStack | None = None,
    golden_count: int = 1,
    progress: Progress | None = None,
) -> VerifyReport:
    """Run the checks on `images` (uint8 (N, 3, H, W) at the model's input size).

    Args:
        model: the chip model (already read, so integrity holds).
        images: the images; all go through the fast executor, the first `golden_count` also
            through the golden one.
        names: one name per image, for messages.
        stack: the float model, for the fidelity checks (skipped when None).
        golden_count: how many images the (slow) golden executor checks.
        progress: called with a short text as each step starts.
    """
    say = progress or (lambda text: None)
    convs = model.conv_layers()
    report = VerifyReport(
        images=len(images), golden_images=min(golden_count, len(images)), format_version=model.format_version(),
        kernels=sum(conv.out_channels * conv.in_channels for conv in convs),
        kept_kernels=sum(conv.kept_kernels() for conv in convs),
    )  # fmt: skip
    from chipq.executor.fast import FastExecutor

    fast = FastExecutor(model)
    report.fast_route = fast.route_label
    say("fast executor")
    fast_taps = fast.run(images, taps=True)
    peaks = [0] * len(model.conv_layers())
    reference_executor = golden.GoldenExecutor(model)
    for index in range(report.golden_images):
        say(f"golden executor, image {index + 1}/{report.golden_images}")
        image_peaks: list[int] = []
        gold = reference_executor.run(images[index : index + 1], taps=True, peaks=image_peaks)
        peaks = [max(a, b) for a, b in zip(peaks, image_peaks)]
        report.mismatches += compare_exact(model, [t[index] for t in fast_taps], [t[0] for t in gold], names[index])
    report.exact_layers = len(model.layers) if not report.mismatches else 0
    report.acc_peaks = {layer.name: peak for layer, peak in zip(model.conv_layers(), peaks)}
    if report.mismatches:
        report.failures.append(f"fast executor differs from golden: {report.mismatches[0]}")
    if stack is not None:
        say("float model")
        _fidelity(report, model, stack, images, fast_taps, fast)
    return report


def _fidelity(report, model, stack, images, fast_taps, fast) -> None:
    from chipq.floatnet.reference import FloatReference

    reference = FloatReference(stack)
    fracs = model.activation_fracs()
    convs = {layer.name: index for index, layer in enumerate(model.layers) if isinstance(layer, ConvLayer)}
    sums = {name: AgreementSums() for name in convs}
    for start in range(0, len(images), reference.batch):  # the float model's chunks, as `reference.run` makes them
        for name, out in reference.layer_outputs(images[start : start + reference.batch]):
            if name in convs:
                index = convs[name]
                sums[name].add(fast_taps[index][start : start + len(out)], fracs[index], out)
    seen = set(reference.net.layers.keys())
    for name in convs:
        if name not in seen:
            report.failures.append(f"layer {name}: not in the float model")
            continue
        report.agreement.append(sums[name].result(name))
    if model.input_height != model.input_width:
        return  # NIP rotations need a square buffer; per-layer agreement still stands
    last_frac = fracs[-1]
    for image in images:
        batch = quarter_turns(image)
        chip = fast.run(batch).astype(np.float32) * np.float32(2.0**-last_frac)
        ref = reference.run(batch)
        a, b = nip_from_maps(list(chip)), nip_from_maps(list(ref))
        report.nip_cosines.append(float(np.dot(a, b)))


def write_vectors(model: ChipModel, images: np.ndarray, names: list[str], out_dir: Path, *, readmemh: bool = False) -> Path:
    """Test vectors for an RTL simulation: every layer's integer input and output per image.

    Layout (docs/handoff.md, "Test vectors for RTL"): ``out_dir/manifest.json`` and, per image i and layer l,
    ``img<i>/<l:02d>_<name>_in.npy`` / ``_out.npy`` (uint8, or int16 for the conv1 input x0 =
    p − mean), (C, H, W) C-order. Written by the golden executor. With `readmemh`, each array is
    also written as a ``.hex`` beside it (`_save_hex`).
    """
    out_dir = Path(out_dir)
    check_vectors_target(out_dir)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:  # the whole set is written beside the target, then swapped in: never half a set
        _write_vectors(model, images, names, staging, readmemh)
        replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir / "manifest.json"


VECTORS_FORMAT = "chipq test vectors v1"


def check_vectors_target(out_dir: Path, inputs: Sequence[tuple[str, object]] = ()) -> None:
    """Refuse, before any work, a --vectors folder that is a link, an input, or holds other files
    than an earlier set of test vectors (which the new set replaces whole)."""
    check_output_dir(out_dir, "test-vector folder", "--vectors", inputs=inputs)
    if out_dir.is_symlink():
        raise UsageError(f"--vectors {out_dir}: a symbolic link; give the folder itself")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        try:
            earlier = json.loads((out_dir / "manifest.json").read_text(encoding="utf-8")).get("format")
        except (OSError, ValueError, AttributeError):
            earlier = None
        if earlier != VECTORS_FORMAT:
            raise UsageError(f"--vectors {out_dir}: holds other files than test vectors; give a new or empty folder")


def _write_vectors(model: ChipModel, images: np.ndarray, names: list[str], out_dir: Path, readmemh: bool) -> None:
    manifest = {"format": VECTORS_FORMAT, "input_mean": list(model.input_mean), "images": []}
    for index, (image, name) in enumerate(zip(images, names)):
        folder = out_dir / f"img{index}"
        folder.mkdir(exist_ok=True)
        outputs = golden.run(model, image, taps=True)
        x = golden.subtract_mean(image, model.input_mean).astype(np.int16)
        layers = []
        for number, (layer, out) in enumerate(zip(model.layers, outputs)):
            stem = layer_stem(number, layer.name)
            _save_npy(folder / f"{stem}_in.npy", x)
            _save_npy(folder / f"{stem}_out.npy", out)
            row = {"layer": layer.name, "input": f"img{index}/{stem}_in.npy", "output": f"img{index}/{stem}_out.npy"}
            if readmemh:
                _save_hex(folder / f"{stem}_in.hex", x)
                _save_hex(folder / f"{stem}_out.hex", out)
                row.update(input_hex=f"img{index}/{stem}_in.hex", output_hex=f"img{index}/{stem}_out.hex")
            layers.append(row)
            x = out
        _save_npy(folder / "pixels.npy", image)
        entry = {"name": name, "pixels": f"img{index}/pixels.npy", "layers": layers}
        if readmemh:
            _save_hex(folder / "pixels.hex", image)
            entry["pixels_hex"] = f"img{index}/pixels.hex"
        manifest["images"].append(entry)
    atomic_write(out_dir / "manifest.json", json.dumps(manifest, indent=2).encode(), what="test-vector manifest")


def _save_hex(path: Path, array: np.ndarray) -> None:
    """A `$readmemh` file: one element per line in C order (address ``(c*H + y)*W + x``); uint8 as
    2 hex digits, int16 (the conv1 input x0) as 4 digits of 16-bit two's complement."""
    width = {np.dtype(np.uint8): 8, np.dtype(np.int16): 16}[array.dtype]
    words = np.ascontiguousarray(array).reshape(-1).astype(np.int64) & ((1 << width) - 1)
    fmt = f"{{:0{width // 4}x}}".format
    comment = f"// chipq test vector: {width}-bit words, shape {'x'.join(map(str, array.shape))} (C, H, W), C order\n"
    text = comment + "\n".join(map(fmt, words.tolist())) + "\n"
    atomic_write(path, text.encode("ascii"), what="test vector")


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda handle: np.save(handle, np.ascontiguousarray(array), allow_pickle=False), what="test vector")
