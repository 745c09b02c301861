"""The `chipq` command line: parse, call the library, render. No logic lives here."""

from __future__ import annotations

import os
import platform
import sys
import warnings

import typer
from rich.console import Console
from rich.markup import escape

from chipq import __version__
from chipq.cli.options import flag, show_help_as_flag, shown
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


# glibc maps every allocation above its mmap threshold afresh and unmaps it on free, and the trim
# threshold hands freed heap back at once; the long commands allocate and free tensors of hundreds of
# MB per layer, so each one pays for faulting in zeroed pages again (measured: `compress --no-retrain`
# of VGG-16 70 s -> 49 s with these settings). They can only be set before the process starts.
HEAVY_COMMANDS = {"compress", "plan", "demo", "verify", "extract"}
MALLOC_SETTINGS = {"MALLOC_MMAP_THRESHOLD_": str(1 << 33), "MALLOC_TRIM_THRESHOLD_": str(1 << 34), "MALLOC_TOP_PAD_": str(1 << 29)}


def _memory_limited() -> bool:
    import resource

    return any(resource.getrlimit(kind)[0] != resource.RLIM_INFINITY for kind in (resource.RLIMIT_AS, resource.RLIMIT_DATA))


def _with_allocator_settings() -> None:
    """Start again (same process, `os.execve`) with `MALLOC_SETTINGS` for a heavy command on glibc.

    Nothing happens when any of the settings is already in the environment (the user's own, or
    this very re-start), off glibc, under an address-space or data-size limit (the padding would
    spend it), or when ``CHIPQ_NO_MALLOC_TUNING`` is set.
    """
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
    if (
        command not in HEAVY_COMMANDS
        or sys.platform != "linux"
        or platform.libc_ver()[0] != "glibc"
        or os.environ.get("CHIPQ_NO_MALLOC_TUNING")
        or any(key in os.environ for key in MALLOC_SETTINGS)
        or not getattr(sys, "orig_argv", None)
        or _memory_limited()
    ):
        return
    try:
        os.execve(sys.executable, sys.orig_argv, {**os.environ, **MALLOC_SETTINGS})
    except OSError:
        return  # carry on untuned


def entry() -> None:
    """The `chipq` console script: `main` after the allocator settings (`_with_allocator_settings`)."""
    _with_allocator_settings()
    main()


def main() -> None:
    """The command line: one line on stderr and a non-zero exit for every failure.

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
        err_console.print(f"[bold red]error:[/] {shown(_one_line(str(exc)))}", highlight=False, soft_wrap=True)
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
            f"error: internal error ({type(exc).__name__}: {shown(_one_line(str(exc)))}); rerun with --debug",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(3)


MAX_ERROR_CHARS = 1000  # a message quoting a 5 MB name from a file is cut, not echoed whole


def _one_line(text: str) -> str:
    """Messages can quote file content or library text: never let them break the one-line rule,
    nor fill the terminal."""
    line = " ".join(text.split())
    return line if len(line) <= MAX_ERROR_CHARS else line[:MAX_ERROR_CHARS] + " …"
