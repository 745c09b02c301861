"""A self-contained HTML page of retrieval results: queries, their top-k, scores, relevant ones marked.

One file, nothing fetched: thumbnails are inline base64 JPEG (``data:`` URLs), the style sheet is
inline, there is no script, and a Content-Security-Policy forbids loading anything else. Every
name shown is HTML-escaped. Images are decoded with `chipq.images.load_image` (JPEG/PNG only,
size checked before decoding), so a hostile file gives a placeholder, not a crash.

Layout: one block per query — the query's thumbnail, then one panel per descriptor set (e.g. float
model and chip, side by side), each with its label, a summary (an AP) and its ranked hits. A hit
known to be relevant has a green frame and a check mark, a hit known to be irrelevant a grey
frame; without a ground truth nothing is marked.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from chipq.images import ImageError, load_image

THUMB_PX = 112
JPEG_QUALITY = 80


@dataclass
class Hit:
    """One retrieved image."""

    name: str
    score: float
    relevant: bool | None = None  # None: unknown (no ground truth)
    image: Path | None = None
    detail: str = ""  # e.g. "hamming 130"


@dataclass
class Panel:
    """One descriptor set's answer to a query."""

    label: str
    hits: list[Hit]
    summary: str = ""


@dataclass
class QueryRow:
    name: str
    image: Path | None
    panels: list[Panel] = field(default_factory=list)
    note: str = ""


class Thumbnails:
    """JPEG data URLs of images, each decoded once."""

    def __init__(self, size: int = THUMB_PX) -> None:
        self.size = size
        self._cache: dict[str, str | None] = {}

    def get(self, path: Path | None) -> str | None:
        if path is None:
            return None
        key = os.fspath(path)
        if key not in self._cache:
            self._cache[key] = self._make(Path(path))
        return self._cache[key]

    def _make(self, path: Path) -> str | None:
        try:
            img = Image.fromarray(load_image(path))
        except (ImageError, OSError, ValueError):
            return None
        img.thumbnail((self.size, self.size), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_CSS = """
body{font:14px/1.35 system-ui,sans-serif;margin:16px;background:#fafafa;color:#222}
h1{font-size:20px;margin:0 0 4px} .sub{color:#555;margin:0 0 14px}
.q{display:flex;gap:14px;align-items:flex-start;background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px;margin:0 0 12px}
.qimg{flex:0 0 auto;text-align:center;width:THUMBpx}
.panels{display:flex;gap:14px;flex:1 1 auto;flex-wrap:wrap}
.panel{flex:1 1 0;min-width:300px;border-left:3px solid #36c;padding-left:10px}
.panel h2{font-size:14px;margin:0 0 6px} .panel h2 span{font-weight:normal;color:#555}
.hits{display:flex;flex-wrap:wrap;gap:6px}
.hit{width:THUMBpx;font-size:11px;text-align:center;border:3px solid transparent;border-radius:4px;padding:2px;background:#f3f3f3}
.hit.rel{border-color:#1a9c3a;background:#e6f6ea} .hit.irr{border-color:#bbb}
.hit .mark{color:#1a9c3a;font-weight:bold}
img,.ph{width:THUMBpx;height:THUMBpx;object-fit:contain;background:#ddd;display:block}
.ph{display:flex;align-items:center;justify-content:center;color:#777;font-size:11px}
.name{word-break:break-all} .score{font-variant-numeric:tabular-nums}
.legend span{display:inline-block;padding:1px 6px;margin-right:8px;border:3px solid #1a9c3a;background:#e6f6ea}
"""


def _img(uri: str | None, alt: str) -> str:
    if uri is None:
        return f'<div class="ph" title="{html.escape(alt)}">no image</div>'
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def render_report(title: str, rows: Sequence[QueryRow], *, subtitle: str = "", thumb: int = THUMB_PX) -> str:
    """The page as a string."""
    thumbs = Thumbnails(thumb)
    css = _CSS.replace("THUMB", str(thumb))
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">",
        f"<title>{html.escape(title)}</title><style>{css}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if subtitle:
        out.append(f'<p class="sub">{html.escape(subtitle)}</p>')
    if any(hit.relevant is not None for row in rows for panel in row.panels for hit in panel.hits):
        out.append('<p class="legend"><span>&#10003; relevant</span> grey frame: not relevant</p>')
    for row in rows:
        out.append('<div class="q">')
        out.append(f'<div class="qimg">{_img(thumbs.get(row.image), row.name)}<div class="name"><b>{html.escape(row.name)}</b></div>')
        if row.note:
            out.append(f"<div>{html.escape(row.note)}</div>")
        out.append('</div><div class="panels">')
        for panel in row.panels:
            summary = f" <span>{html.escape(panel.summary)}</span>" if panel.summary else ""
            out.append(f'<div class="panel"><h2>{html.escape(panel.label)}{summary}</h2><div class="hits">')
            for rank, hit in enumerate(panel.hits, start=1):
                cls = {True: " rel", False: " irr", None: ""}[hit.relevant]
                mark = '<span class="mark">&#10003;</span> ' if hit.relevant else ""
                detail = f"<br>{html.escape(hit.detail)}" if hit.detail else ""
                out.append(
                    f'<div class="hit{cls}">{_img(thumbs.get(hit.image), hit.name)}'
                    f'<div>{mark}#{rank} <span class="score">{hit.score:.4f}</span>{detail}</div>'
                    f'<div class="name">{html.escape(hit.name)}</div></div>'
                )
            if not panel.hits:
                out.append("<div>no results</div>")
            out.append("</div></div>")
        out.append("</div></div>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(path: Path, page: str) -> None:
    """Write the page atomically (`chipq.formats.fileio.atomic_write`: checked, umask mode, no temp left)."""
    from chipq.formats.fileio import atomic_write

    atomic_write(Path(path), page.encode("utf-8"), what="HTML page")


def resolve_image(root: Path | None, name: str) -> Path | None:
    """Where the image named `name` (a descriptor name: a path relative to the extraction folder) is."""
    if root is None:
        return None
    candidate = Path(root) / name
    try:
        candidate.resolve().relative_to(Path(root).resolve())
    except ValueError:  # a name like ../../etc/x from a hostile file: not shown
        return None
    return candidate if candidate.is_file() else None


def evaluation_rows(sets, ground_truth, *, exclude_queries: bool, images_dir: Path | None, k: int) -> list[QueryRow]:
    """The rows of an evaluation page: per evaluated query, each set's top-k and AP.

    Args:
        sets: (label, DescriptorSet, Evaluation) per descriptor set, the first one's queries shown.
        ground_truth: the ground truth the evaluations used.
        exclude_queries: as for `evaluate` (the top-k comes from the same database).
        images_dir: where the images are (names are paths relative to it).
        k: hits per panel.
    """
    import numpy as np

    from chipq.retrieval.descriptors import DescriptorSet
    from chipq.retrieval.index import SearchIndex
    from chipq.retrieval.scoring import _Names, database_mask

    prepared = []
    for label, dset, evaluation in sets:
        mask = database_mask(dset, ground_truth, exclude_queries=exclude_queries)
        rows = np.flatnonzero(mask)
        sub = DescriptorSet([dset.names[i] for i in rows], dset.codes[rows], dset.kind, dset.dim, dset.metadata)
        aps = {r.query: r.ap for r in evaluation.results}
        prepared.append((label, dset, SearchIndex(sub, "flat"), rows, _Names(dset.names), aps))
    out = []
    for result in sets[0][2].results:
        query = result.query
        first_dset, first_lookup = prepared[0][1], prepared[0][4]
        qrow = first_lookup.find(query)
        row = QueryRow(query, resolve_image(images_dir, first_dset.names[qrow]) if qrow is not None else None)
        for label, dset, index, rows, lookup, aps in prepared:
            at = lookup.find(query)
            if at is None:
                row.panels.append(Panel(label, [], "no descriptor"))
                continue
            positives = {lookup.find(p) for p in ground_truth[query]} - {None}
            scores, ids = index.search(dset.codes[at : at + 1], k + 1)
            hits = []
            for score, i in zip(scores[0], ids[0]):
                if i < 0 or rows[i] == at or len(hits) == k:
                    continue
                name = dset.names[rows[i]]
                detail = f"hamming {int(index.hamming(np.array([score]))[0])}" if dset.kind.value == "bit" else ""
                hits.append(Hit(name, float(score), bool(rows[i] in positives), resolve_image(images_dir, name), detail))
            ap = aps.get(query)
            row.panels.append(Panel(label, hits, f"AP {ap:.4f}" if ap is not None else ""))
        out.append(row)
    return out
