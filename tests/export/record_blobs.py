"""A pytest plugin that saves every byte string handed to `chipq.formats.reader.from_bytes`.

`test_c_model_hostile` runs tests/formats/test_reader_hostile.py with it (`-p record_blobs`), so the
C reader is fed exactly the blobs the Python reader's hostile tests make. Files go to the folder in
$CHIPQ_RECORD_BLOBS, named by their SHA-1 (duplicates collapse).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import chipq.formats.reader as reader

_original = reader.from_bytes
_folder = Path(os.environ["CHIPQ_RECORD_BLOBS"])


def _recording(data):
    raw = bytes(data)
    (_folder / (hashlib.sha1(raw).hexdigest() + ".blob")).write_bytes(raw)
    return _original(data)


# Patched when the plugin loads, before the test module is imported: its `from ... import from_bytes`
# then binds the recording function, and read_blob (which looks the name up in `reader`) uses it too.
reader.from_bytes = _recording
