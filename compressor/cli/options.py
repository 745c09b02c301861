"""Option parsers shared by several commands: one rule each, errors naming the option used."""

from __future__ import annotations

import re

from chipq.errors import UsageError
from chipq.formats import constants as C

_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX]\s*(\d{1,5})\s*$")


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
