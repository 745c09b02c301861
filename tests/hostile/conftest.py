"""The hostile suite runs every selected case once, in parallel, the first time a test asks for it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


@pytest.hookimpl(trylast=True)  # after -k / -m deselection: run only the selected cases
def pytest_collection_modifyitems(config, items):
    config._hostile_ids = [item.callspec.params["case"].id for item in items if "hostile_outcomes" in getattr(item, "fixturenames", ()) and hasattr(item, "callspec")]


@pytest.fixture(scope="session")
def hostile_outcomes(request) -> dict:
    """Outcome per case id, for the cases collected in this session (all of them by default)."""
    wanted = set(getattr(request.config, "_hostile_ids", []))
    cases = [case for case in harness.corpus.CASES if case.id in wanted]
    runner = harness.Runner()
    outcomes = harness.run_all(cases, runner)
    print("\nhostile suite:\n" + harness.table(outcomes))  # shown with -s, and in CI's log on failure
    (Path(request.config.rootpath) / "tests" / "hostile" / ".last-run.txt").write_text(harness.table(outcomes) + "\n")
    yield {outcome.case.id: outcome for outcome in outcomes}
    runner.cleanup()
