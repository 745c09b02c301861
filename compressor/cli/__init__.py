"""The `chipq` command line: parse, call the library, render. No logic lives here."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from chipq import __version__
from chipq.errors import ChipqError

app = typer.Typer(
    name="chipq",
    help=(
        "Put a VGG-16 image-retrieval descriptor extractor on a low-power integer chip.\n\n"
        "Typical run: `chipq fetch-vgg16` (real ImageNet weights, offline), then "
        "`chipq compress vgg16.pt --plan 3x7,1x6 -o vgg16.blob`, `chipq inspect vgg16.blob`, "
        "`chipq verify vgg16.blob`, `chipq extract IMAGES --blob vgg16.blob -o desc.npz`, "
        "`chipq eval desc.npz --gt GT.json`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        print(f"chipq {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show a traceback when a command fails."),
) -> None:
    _state["debug"] = debug


# Each command lives in its own module and registers itself on `app`.
from chipq.cli import commands  # noqa: E402,F401


def main() -> None:
    """Console entry point: one line on stderr and a non-zero exit for every failure."""
    try:
        app()  # standalone: click reports usage errors itself (exit 2) and exits
    except ChipqError as exc:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("error: interrupted", highlight=False)
        sys.exit(130)
    except Exception as exc:  # a bug: still one line unless --debug
        if _state["debug"]:
            raise
        err_console.print(
            f"error: internal error ({type(exc).__name__}: {escape(str(exc))}); rerun with --debug",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(3)
