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
    "args", [["--help"], ["compress", "--help"], ["inspect", "BLOB"], ["eval", "--help"], ["verify", "BROKEN"], ["verify", "BLOB", "--vectors-hex"]]
)
def test_command_does_not_import_torch(args, sample_blob_path, tmp_path):
    """`verify` refuses a bad blob or option before it loads PyTorch (the photos, executors and float model need it)."""
    broken = tmp_path / "broken.blob"
    broken.write_bytes(sample_blob_path.read_bytes()[:-1])  # one byte short: refused as truncated
    args = [{"BLOB": str(sample_blob_path), "BROKEN": str(broken)}.get(a, a) for a in args]
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "False", done.stdout + done.stderr
