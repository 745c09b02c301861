"""Every command on every hostile case of the corpus (tests/hostile/corpus.py), as a subprocess.

A case passes when the run ends in time with the expected exit code (2 bad input, 1 failed check),
prints exactly one line on stderr naming the file or option at fault (no traceback, no "internal
error"), and leaves its folder exactly as it was: nothing written, replaced or left behind. The
harness (tests/hostile/harness.py) explains each rule; `python tests/hostile/harness.py` prints the
per-command table.
"""

from __future__ import annotations

import pytest
from corpus import CASES


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_case(case, hostile_outcomes):
    outcome = hostile_outcomes[case.id]
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    assert outcome.ok, f"{case.id}: {'; '.join(outcome.problems)}\nstderr: {outcome.stderr[-2000:]}"


def test_every_command_has_cases():
    """Each command `chipq --help` lists is exercised (a new command needs hostile cases too)."""
    import subprocess

    import harness

    shown = subprocess.run(harness.chipq_command() + ["--help"], capture_output=True, text=True, env={"COLUMNS": "200", "PATH": ""}).stdout
    commands = {line.split()[1] for line in shown.splitlines() if line.startswith("│ ") and len(line.split()) > 2 and not line.split()[1].startswith("-")}
    covered = {case.command for case in CASES}
    assert commands and commands <= covered, f"commands without hostile cases: {sorted(commands - covered)}"
