"""Hand-off to a chip team: `chipq export BLOB --format F -o DIR`.

`FORMATS` maps each `--format` name to an `ExportFormat`; `export_blob` checks the blob, lets the
format write into a fresh staging folder and puts that folder in place of DIR in one rename.
A new format is one more entry in `FORMATS` (see `registry`).
"""

from __future__ import annotations

from chipq.export.registry import FORMATS, MANIFEST, ExportFailed, ExportFormat, export_blob

__all__ = ["FORMATS", "MANIFEST", "ExportFailed", "ExportFormat", "export_blob"]
