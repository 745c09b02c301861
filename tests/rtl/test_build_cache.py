"""`rtlsim.build_once`'s cache stays bounded: the most recently used builds stay, the rest go."""

from __future__ import annotations

import os

from rtlsim import evict_builds


def test_the_cache_keeps_the_most_recently_used_builds(tmp_path):
    for age, name in enumerate(["newest", "second", "third", "oldest"]):
        (tmp_path / name).mkdir()
        (tmp_path / name / "built.ok").write_text("built\n")
        os.utime(tmp_path / name / "built.ok", (1_000_000 - age, 1_000_000 - age))
    (tmp_path / "building").mkdir()  # no stamp yet: a build under way is never removed
    removed = evict_builds(tmp_path, keep=2)
    assert sorted(path.name for path in removed) == ["oldest", "third"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["building", "newest", "second"]
