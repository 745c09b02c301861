"""Coverage-guided fuzzing of the blob reader with atheris (libFuzzer), outside the test suite.

Property under test, for every input:

1. `chipq.formats.reader.from_bytes` either returns a model or raises a `FormatError`; any other
   exception is a finding (atheris stops and writes the input as ``crash-*``).
2. An accepted input re-serialises to exactly the same bytes (`formats.writer.to_bytes`): the
   format has one encoding per model, so a reader that accepts two encodings is a bug.

The first input byte selects a mode: even -> the bytes as given, odd -> the rest with every CRC
and ``file_size`` recomputed (tests/formats/blobcraft.reseal), so the fuzzer gets past the CRCs to
the structural checks. The seed corpus is samples/tiny.blob in both modes.

Run (the figures of the last run are in tests/fuzz/README.md):

    .venv/bin/pip install atheris
    .venv/bin/python tests/fuzz/fuzz_reader.py -max_total_time=600 -rss_limit_mb=2048 \
        -print_final_stats=1 CORPUS_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "formats"))  # blobcraft

with atheris.instrument_imports():
    from chipq.formats import errors as E
    from chipq.formats.reader import from_bytes
    from chipq.formats.writer import to_bytes

from blobcraft import reseal  # noqa: E402  (not instrumented: it is the harness, not the target)


def prepare(data: bytes) -> bytes:
    """The blob a fuzz input stands for (module docstring: mode byte, then the bytes)."""
    if not data:
        return data
    mode, body = data[0], data[1:]
    if mode & 1 and len(body) >= 64:
        try:
            body = reseal(body)
        except Exception:  # the harness's own struct unpacking of a hopeless table
            pass
    return body


def one_input(data: bytes) -> None:
    blob = prepare(data)
    try:
        model = from_bytes(blob)
    except E.FormatError:
        return
    again = to_bytes(model)
    if again != blob:
        raise AssertionError(f"accepted a blob of {len(blob)} bytes that re-serialises differently")


def seed_corpus(folder: Path) -> None:
    """Write the seeds (tiny.blob as is and in reseal mode) into an empty corpus folder."""
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        return
    tiny = (HERE.parent.parent / "samples" / "tiny.blob").read_bytes()
    (folder / "tiny-raw").write_bytes(b"\x00" + tiny)
    (folder / "tiny-reseal").write_bytes(b"\x01" + tiny)


if __name__ == "__main__":
    corpora = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    for corpus in corpora:
        seed_corpus(Path(corpus))
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
