"""What --help states as a fact is checked against the checkout: photo counts are the shipped ones.

A help text that counts photos ("the photo set that ships with chipq (N licensed real photos)", the
demo's "N original photos") must give the number of photos that actually ship, so a photo added
or removed without the help following fails here.
"""

from __future__ import annotations

import re

import typer
from helpers import SAMPLES
from typer.testing import CliRunner

from chipq.cli import app
from chipq.data import default_photos_dir
from chipq.images import list_images

COMMANDS = ["fetch-vgg16", "compress", "plan", "inspect", "verify", "extract", "index", "search", "eval", "demo", "export"]
# a count of the photo set inside the package, next to "ship": "the photo set that
# ships with chipq (97 licensed real photos)", "the 97 photos shipped with chipq"
SHIPPED_COUNT = re.compile(
    r"\bship\w*[^.—]{0,30}?\b(\d+) (?:(?!sample)[\w-]+ ){0,2}photos\b|\b(\d+) (?:(?!sample)[\w-]+ ){0,2}photos (?:that |which )?(?:ship|are ship)"
)
# "the 9 sample photos shipped with chipq": the retrieval sample set, samples/photos
SAMPLE_COUNT = re.compile(r"\b(\d+) sample photos\b")
# "against 9 original photos": the demo's database, samples/photos
ORIGINALS_COUNT = re.compile(r"\b(\d+) original photos\b")


def help_text(command: str) -> str:
    """The command's --help as one line of words (rich wraps and frames it)."""
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())


def counts(pattern: re.Pattern, command: str) -> list[int]:
    """Every number `pattern` finds in the command's help (the first non-empty group of a match)."""
    return [int(next(g for g in match.groups() if g)) for match in pattern.finditer(help_text(command))]


def test_the_shipped_photo_set_is_counted_right():
    shipped = len(list_images(default_photos_dir()))
    stated = {command: counts(SHIPPED_COUNT, command) for command in COMMANDS}
    assert stated["compress"], "compress --help no longer counts the shipped photos: update this test"
    assert {c: n for c, n in stated.items() if any(x != shipped for x in n)} == {}, f"{shipped} photos ship"


def test_the_sample_photo_set_is_counted_right():
    samples = len(list_images(SAMPLES / "photos"))
    stated = {command: counts(SAMPLE_COUNT, command) for command in COMMANDS}
    assert stated["verify"], "verify --help no longer counts its default photos: update this test"
    assert {c: n for c, n in stated.items() if any(x != samples for x in n)} == {}


def test_the_demo_counts_the_sample_photos_it_searches():
    originals = len(list_images(SAMPLES / "photos"))
    assert counts(ORIGINALS_COUNT, "demo") == [originals]


def test_every_command_is_checked():
    """COMMANDS is every command (hidden ones aside), so a new command's help is checked too."""
    group = typer.main.get_command(app)
    assert sorted(name for name, cmd in group.commands.items() if not cmd.hidden) == sorted(COMMANDS)
