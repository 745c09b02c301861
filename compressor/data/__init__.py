"""Data files that ship inside the chipq package.

`photos/`: the default training and calibration photo set of `chipq compress`, real photographs
with every file's source, licence and SHA-256 in `photos/LICENSES.md` (made by `make_photos.py`
in this folder, which is a build script, not imported by chipq).

`samples_dir()`: the retrieval sample set (`chipq.samples`, the checkout's `samples/`): 9 photos
that are not in `photos/`, 54 edited queries and their ground truth. It is what `chipq verify`
runs by default (fidelity is never measured on calibration photos); `chipq demo` cuts its 9 photos
into the look-alike retrieval set it scores (`chipq.pipeline.demo_set`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["default_photos_dir", "samples_dir"]


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


def samples_dir() -> Path:
    """The folder of the retrieval sample set (``photos/``, ``queries/``, ``groundtruth.json``), as a
    real path, from a checkout or any plain-files install.

    Raises:
        FileNotFoundError: the sample set is not installed.
    """
    path = Path(str(resources.files("chipq.samples")))
    if not (path / "photos").is_dir():
        raise FileNotFoundError(f"chipq's sample set is missing: {path} (reinstall chipq)")
    return path
