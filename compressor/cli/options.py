"""Option helpers shared by the commands."""

from __future__ import annotations

import re

import typer

from chipq.errors import UsageError
from chipq.formats import constants as C

_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX]\s*(\d{1,5})\s*$")

# typer 0.2x prints a flag's type (`--json <bool>`) unless it has a metavar; an empty one shows the
# flag alone, as `--json`, in every typer version.
FLAG_METAVAR = ""


def shown(text: str) -> str:
    """Text from a file or an argument, safe for the terminal and for Rich: markup escaped, and
    control characters (ESC, newline…) and bytes that are not UTF-8 written as visible escapes.

    >>> shown("a\\x1b[31mb [red]c")
    'a\\\\x1b[31mb \\\\[red]c'
    """
    import unicodedata

    from rich.markup import escape

    safe = "".join(
        ch.encode("unicode_escape", "backslashreplace").decode("ascii") if unicodedata.category(ch) in ("Cc", "Cs") else ch
        for ch in str(text)
    )
    return escape(safe)


def flag(*decls: str, help: str, **extra) -> typer.models.OptionInfo:
    """A boolean option that is off unless given, shown in --help as a bare flag."""
    return typer.Option(False, *decls, help=help, metavar=FLAG_METAVAR, **extra)


def one_of_two(value, name: str, old_value, old_name: str):
    """The value of an option given by its name or by its old (hidden) name; refused when both are.

    >>> one_of_two(None, "--image-root", "photos", "--images")
    'photos'
    """
    if value is not None and old_value is not None:
        raise UsageError(f"{old_name} is the old name of {name}: give one of them")
    return value if value is not None else old_value


def show_help_as_flag() -> None:
    """Give typer's own ``--help`` option the empty metavar too (typer 0.2x shows ``--help <bool>``).

    Typer makes that option itself, so it is patched where it is made; a typer that uses the click
    package (which never shows a flag's type) has nothing to patch.
    """
    try:
        from typer._click.core import Command
    except ImportError:
        return
    if getattr(Command.get_help_option, "_chipq", False):
        return
    original = Command.get_help_option

    def get_help_option(self, ctx):
        option = original(self, ctx)
        if option is not None and option.metavar is None:
            option.metavar = FLAG_METAVAR
        return option

    get_help_option._chipq = True
    Command.get_help_option = get_help_option


def parse_size(text: str, option: str = "--input") -> tuple[int, int]:
    """``"640x480"`` -> (480, 640): an image size written width x height, as (height, width).

    Each side 1..MAX_INPUT_SIDE.

    >>> parse_size("640x480")
    (480, 640)
    >>> parse_size("foo", "--size")
    Traceback (most recent call last):
    ...
    chipq.errors.UsageError: --size 'foo': expected WIDTHxHEIGHT in pixels, e.g. 640x480

    Raises:
        UsageError: anything else; the message names `option`.
    """
    match = _SIZE.match(text)
    if not match:
        raise UsageError(f"{option} {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 640x480")
    width, height = int(match.group(1)), int(match.group(2))
    for side in (height, width):
        if not 1 <= side <= C.MAX_INPUT_SIDE:
            raise UsageError(f"{option} {text}: each side must be 1..{C.MAX_INPUT_SIDE} pixels")
    return height, width


def format_size(hw: tuple[int, int]) -> str:
    """(height, width) as the WxH text every option and report uses: (480, 640) -> '640x480'."""
    return f"{hw[1]}x{hw[0]}"
