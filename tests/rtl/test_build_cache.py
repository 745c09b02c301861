"""`rtlsim.build_once`'s cache stays bounded: the most recently used builds stay, the rest go."""

from __future__ import annotations

import os

from rtlsim import IN_USE_SECONDS, evict_builds


def test_the_cache_keeps_the_most_recently_used_builds(tmp_path):
    for age, name in enumerate(["newest", "second", "third", "oldest"]):
        (tmp_path / name).mkdir()
        (tmp_path / name / "built.ok").write_text("built\n")
        os.utime(tmp_path / name / "built.ok", (1_000_000 - age, 1_000_000 - age))
    (tmp_path / "building").mkdir()  # no stamp yet: a build under way is never removed
    removed = evict_builds(tmp_path, keep=2, now=1_000_000 + IN_USE_SECONDS + 2.5)
    assert sorted(path.name for path in removed) == ["oldest", "third"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["building", "newest", "second"]


def test_a_build_used_within_the_hour_is_never_evicted(tmp_path):
    """Another test process may be simulating from it right now."""
    for age, name in enumerate(["newest", "recent", "old"]):
        (tmp_path / name).mkdir()
        (tmp_path / name / "built.ok").write_text("built\n")
        os.utime(tmp_path / name / "built.ok", (1_000_000 - 1000 * age, 1_000_000 - 1000 * age))
    removed = evict_builds(tmp_path, keep=1, now=1_000_000 + IN_USE_SECONDS - 1500)
    assert [path.name for path in removed] == ["old"]
