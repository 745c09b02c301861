"""Commands that need no PyTorch do not load it (it costs most of a second at start-up)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
sys.argv = ["chipq"] + sys.argv[1:]
from chipq.cli import main
try:
    main()
except SystemExit:
    pass
print("torch" in sys.modules)
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"], ["compress", "--help"], ["inspect", "BLOB"], ["eval", "--help"], ["verify", "BROKEN"],
        ["verify", "BLOB", "--vectors-hex"],
        ["compress", "MISSING", "-o", "OUT"], ["compress", "ONNX", "-o", "ONNX"], ["compress", "ONNX", "--images", "EMPTY", "-o", "OUT"],
        ["compress", "BLOB", "-o", "OUT"], ["plan", "MISSING", "--budget", "4MB"], ["plan", "ONNX", "--budget", "4MB", "--images", "EMPTY"],
        ["plan", "ONNX", "--budget", "4MB", "--eval", "MISSING"], ["fetch-vgg16", "-o", "BLOB"], ["demo", "--workdir", "BLOB"],
        ["demo", "--workdir", "OUT", "--gt", "MISSING"],
    ],
)  # fmt: skip
def test_command_does_not_import_torch(args, sample_blob_path, tmp_path):
    """`verify` refuses a bad blob or option before it loads PyTorch (the photos, executors and
    float model need it); `compress` and `plan` a missing or unknown model file (a blob), an output
    that is the model, a photo folder without photos and a missing held-out folder
    (`chipq.pipeline.checks`); `fetch-vgg16` and `demo` an output folder that is a file, `demo` a
    missing ground truth."""
    broken = tmp_path / "broken.blob"
    broken.write_bytes(sample_blob_path.read_bytes()[:-1])  # one byte short: refused as truncated
    (tmp_path / "empty").mkdir()
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07")  # an ONNX name: refused as a model only when it loads
    paths = {"BLOB": sample_blob_path, "BROKEN": broken, "MISSING": tmp_path / "missing.pt", "ONNX": tmp_path / "m.onnx",
             "EMPTY": tmp_path / "empty", "OUT": tmp_path / "out.blob"}  # fmt: skip
    args = [str(paths.get(a, a)) for a in args]
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "False", done.stdout + done.stderr
    if args[0] in ("compress", "plan", "fetch-vgg16", "demo") and "--help" not in args:
        assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not (tmp_path / "out.blob").exists()
