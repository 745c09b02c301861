"""The `chipq` command line: parse, call the library, render. No logic lives here."""

from __future__ import annotations

import sys
import warnings

import typer
from rich.console import Console
from rich.markup import escape

from chipq import __version__
from chipq.cli.options import flag, show_help_as_flag
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
show_help_as_flag()
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        print(f"chipq {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = flag("--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = flag("--debug", help="Show a traceback when a command fails."),
) -> None:
    _state["debug"] = debug


# Each command lives in its own module and registers itself on `app`.
from chipq.cli import commands  # noqa: E402,F401


def _click_exceptions() -> tuple[type, type, type]:
    """(ClickException, Abort, NoArgsIsHelpError) of whichever click typer runs on (own copy or the package)."""
    try:
        from typer._click import exceptions
    except ImportError:  # typer before it carried its own click
        from click import exceptions
    no_args = getattr(exceptions, "NoArgsIsHelpError", None) or type("_Never", (Exception,), {})
    return exceptions.ClickException, getattr(typer, "Abort", getattr(exceptions, "Abort", None)), no_args


def _usage_line(exc) -> str:
    """A click usage error as one line: which command, what is wrong, where help is."""
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "chipq"
    return f"{command}: {exc.format_message()} (see {command} --help)"


def main() -> None:
    """Console entry point: one line on stderr and a non-zero exit for every failure.

    Usage errors (unknown option, missing argument, a value out of range) are click exceptions;
    they are caught here, not printed by click as a multi-line box. Library warnings (a torch
    pickle note, a numpy cast) never reach stderr: whatever they warn about is checked and
    reported as an error of its own. ``python -W`` options still apply.
    """
    click_error, abort, no_args_help = _click_exceptions()
    if not sys.warnoptions:
        warnings.simplefilter("ignore")
    try:
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except no_args_help as exc:
        exc.show()  # `chipq` alone: the help text, and click's exit code for it
        sys.exit(exc.exit_code)
    except click_error as exc:
        err_console.print(f"[bold red]error:[/] {escape(_usage_line(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except abort:
        err_console.print("error: aborted", highlight=False)
        sys.exit(1)
    except ChipqError as exc:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {escape(_one_line(str(exc)))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("error: interrupted", highlight=False)
        sys.exit(130)
    except MemoryError:
        if _state["debug"]:
            raise
        err_console.print("error: out of memory; use smaller inputs (--input, --batch) or a machine with more memory", highlight=False)
        sys.exit(2)
    except Exception as exc:  # a bug: still one line unless --debug
        if _state["debug"]:
            raise
        err_console.print(
            f"error: internal error ({type(exc).__name__}: {escape(_one_line(str(exc)))}); rerun with --debug",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(3)


def _one_line(text: str) -> str:
    """Messages can quote file content or library text: never let them break the one-line rule."""
    return " ".join(text.split())
