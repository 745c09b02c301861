"""Data files that ship inside the chipq package.

`photos/`: the default training and calibration photo set of `chipq compress`, real photographs
with every file's source, licence and SHA-256 in `photos/LICENSES.md` (made by `make_photos.py`
in this folder, which is a build script, not imported by chipq).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["default_photos_dir"]


def default_photos_dir() -> Path:
    """The folder of the photo set shipped with chipq, as a real path (works from any install).

    chipq is installed as plain files (a wheel or `pip install .`, editable or not), so the
    resource is a folder on disk; a zipped install is refused rather than silently unpacked.
    """
    folder = resources.files(__name__) / "photos"
    path = Path(str(folder))
    if not path.is_dir():
        raise FileNotFoundError(f"chipq's photo set is missing: {path} (reinstall chipq)")
    return path
