"""Run hostile cases (`corpus.CASES`) against the installed `chipq` as a user would, and judge them.

Every case runs in its own folder (a fresh copy of the valid base, then spoiled by the case's
setup) as a subprocess with a timeout, an address-space limit (RLIMIT_AS, `MEMORY_LIMIT`), no
standard input and no network for pip. A run passes when:

- it ends before the timeout (no hang) with one of the case's exit codes;
- a failing run prints exactly one line on stderr, containing the case's `mention` (the file or
  option at fault), and no "internal error" (exit 3) or traceback; a run that should succeed prints
  only ``warning:`` lines;
- the case folder is unchanged afterwards: no file written, replaced, truncated or left behind
  (temp files included), every FIFO and device node still what it was.

Run it alone for the per-command table (CI prints it in the test log too):

    .venv/bin/python tests/hostile/harness.py [-k SUBSTRING] [--workers N]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]  # corpus; tests/helpers
import corpus  # noqa: E402
from corpus import Case  # noqa: E402

MEMORY_LIMIT = 3 << 30  # RLIMIT_AS of every run: a run that needs more is refused, not attempted
HASH_LIMIT = 64 << 20  # files above this are compared by size, inode and mtime (sparse fixtures)


def chipq_command() -> list[str]:
    """The installed console script next to this Python (the venv's `chipq`)."""
    script = Path(sys.executable).with_name("chipq")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from chipq.cli import main; main()"]


@dataclass
class Outcome:
    case: Case
    code: int | None = None
    stderr: str = ""
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    skipped: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


def snapshot(root: Path) -> dict[str, tuple]:
    """What is in `root`: per entry its type, mode, inode, size, and the content hash of small files."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            info = path.lstat()
            entry: tuple = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_ino)
            if stat.S_ISREG(info.st_mode):
                entry += (info.st_size, info.st_mtime_ns)
                if info.st_size <= HASH_LIMIT:
                    entry += (hashlib.sha256(path.read_bytes()).hexdigest(),)
            found[str(path.relative_to(root))] = entry
    return found


def diff(before: dict, after: dict) -> list[str]:
    changes = []
    for name in sorted(set(before) | set(after)):
        if name not in after:
            changes.append(f"removed {name}")
        elif name not in before:
            changes.append(f"left {name}")
        elif before[name] != after[name]:
            changes.append(f"changed {name}")
    return changes


class Runner:
    """Holds the base inputs and a work folder; runs cases (thread-safe, one folder per case)."""

    def __init__(self, work: Path | None = None) -> None:
        self.work = Path(work or tempfile.mkdtemp(prefix="chipq-hostile-"))
        self.base = corpus.build_base(self.work / "base")
        for path in [self.base, *self.base.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        (self.work / "cache").mkdir(exist_ok=True)
        (self.work / "home").mkdir(exist_ok=True)
        self.has_mknod = corpus.can_mknod(self.work)
        self.readonly = corpus.can_make_readonly(self.work)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.work / "home"),
            "CHIPQ_CACHE": str(self.work / "cache"),
            "OMP_NUM_THREADS": "1",
            "PIP_NO_INDEX": "1",  # fetch-vgg16 must refuse bad paths before it downloads anything
            "PIP_FIND_LINKS": str(self.work / "no-links"),
            "COLUMNS": "100",
            "LANG": "C.UTF-8",
        }

    def cleanup(self) -> None:
        """Remove the work folder (read-only and immutable folders included)."""
        _remove(self.work)

    def run(self, case: Case) -> Outcome:
        outcome = Outcome(case)
        if case.needs == "mknod" and not self.has_mknod:
            outcome.skipped = "cannot create device nodes here"
            return outcome
        if "faiss" in case.tags and importlib.util.find_spec("faiss") is None:
            outcome.skipped = "faiss (the chipq[index] extra) is not installed"
            return outcome
        if case.needs == "readonly" and not self.readonly:
            outcome.skipped = "cannot make a read-only folder here"
            return outcome
        folder = self.work / "cases" / case.id.replace("/", "__")
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(self.base, folder)
        if case.setup is not None:
            case.setup(folder)
        folder.chmod(0o755)
        before = snapshot(folder)
        started = time.monotonic()
        process = subprocess.Popen(
            chipq_command() + case.argv, cwd=folder, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_limits, start_new_session=True,
        )  # fmt: skip
        try:
            _, err = process.communicate(timeout=case.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            _, err = process.communicate()
            outcome.problems.append(f"hang: no exit within {case.timeout:.0f} s")
        outcome.seconds = time.monotonic() - started
        outcome.code = process.returncode
        outcome.stderr = err.decode("utf-8", "replace")
        if not outcome.problems:
            outcome.problems += judge(case, outcome.code, outcome.stderr)
        outcome.problems += [f"file system: {change}" for change in diff(before, snapshot(folder))]
        if outcome.ok:
            _remove(folder)
        return outcome


def judge(case: Case, code: int, stderr: str) -> list[str]:
    """The problems with one finished run (module docstring)."""
    problems = []
    lines = stderr.splitlines()
    if code not in case.expect:
        problems.append(f"exit code {code}, expected {' or '.join(map(str, case.expect))}")
    if "Traceback" in stderr or "internal error" in stderr:
        problems.append("crash: a traceback or internal error")
    if case.expect == (0,):
        stray = [line for line in lines if not line.startswith("warning:")]
        if stray:
            problems.append(f"stderr has {len(stray)} lines that are not warnings")
        return problems
    if len(lines) != 1:
        problems.append(f"stderr has {len(lines)} lines, expected one")
    elif not lines[0].startswith("error:"):
        problems.append("the stderr line does not start with 'error:'")
    if case.mention and case.mention not in stderr:
        problems.append(f"stderr does not name {case.mention!r}")
    return problems


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _remove(folder: Path) -> None:
    corpus.unlock(folder)
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(folder, ignore_errors=True)


def run_all(cases: list[Case], runner: Runner, workers: int | None = None) -> list[Outcome]:
    workers = workers or min(4, (os.cpu_count() or 1) + 1)
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(runner.run, cases))


def table(outcomes: list[Outcome]) -> str:
    """Per command: cases run, skipped, and each kind of failure (the issue's 'shown when done')."""
    rows = {}
    for outcome in outcomes:
        row = rows.setdefault(outcome.case.command, Counter())
        row["cases"] += 1
        if outcome.skipped:
            row["skipped"] += 1
        for problem in outcome.problems:
            row[_kind(problem)] += 1
        row["failed"] += bool(outcome.problems)
    columns = ["cases", "skipped", "failed", "crashes", "hangs", "multi-line", "written", "other"]
    lines = ["command      " + " ".join(f"{c:>10}" for c in columns)]
    for command, row in rows.items():
        lines.append(f"{command:<12} " + " ".join(f"{row[c]:>10}" for c in columns))
    total = sum(rows.values(), Counter())
    lines.append(f"{'total':<12} " + " ".join(f"{total[c]:>10}" for c in columns))
    return "\n".join(lines)


def _kind(problem: str) -> str:
    for prefix, kind in (("hang", "hangs"), ("crash", "crashes"), ("stderr has", "multi-line"), ("file system", "written")):
        if problem.startswith(prefix):
            return kind
    return "other"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="run only the cases whose id contains this")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    cases = [case for case in corpus.CASES if args.k in case.id]
    runner = Runner()
    started = time.monotonic()
    outcomes = run_all(cases, runner, args.workers)
    for outcome in outcomes:
        if outcome.problems:
            print(f"FAIL {outcome.case.id} (exit {outcome.code}, {outcome.seconds:.1f} s): {'; '.join(outcome.problems)}")
            for line in outcome.stderr.splitlines()[-3:]:
                print(f"     | {line[:200]}")
    print(table(outcomes))
    failed = any(outcome.problems for outcome in outcomes)
    print(f"{len(outcomes)} cases in {time.monotonic() - started:.0f} s" + (f"; failed cases kept in {runner.work}" if failed else ""))
    if not failed:
        runner.cleanup()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
