"""Helpers shared by the benchmark scripts: paths, machine facts, models and blobs, timing, results.

Every script in bench/ is run as a file (``python bench/speed.py``), so this module is imported as
``common`` with bench/ on ``sys.path``; the tests in tests/bench/ put it there the same way.

Nothing here prints: the scripts render their own tables.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from chipq.quant.plan import PAPER_PLAN

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
PAGE = REPO / "BENCHMARKS.md"
SAMPLES = REPO / "samples"
# Shared data lives beside the checkout (``../shared``), never at one machine's absolute path:
SHARED = Path(os.environ.get("CHIPQ_BENCH_SHARED") or REPO.parent / "shared")
UKBENCH = SHARED / "data" / "ukbench56"  # UKBench-56: jpg/ + groundtruth.json (not redistributed)
DEFAULT_WORK = Path(os.environ.get("CHIPQ_BENCH_WORK") or Path.home() / ".cache" / "chipq" / "bench")
SUITE = 2  # results stamped with a lower (or no) suite number were made before the suite of issue 22

THREADS = 2  # the machine has 2 cores; every engine gets both, and the count is recorded
MAIN_PLAN = PAPER_PLAN  # the paper's plan, chipq.quant.plan.PAPER_PLAN
PLANS = ("1x13", "2x13", MAIN_PLAN, "3x13", "5x13")
VGG16_FP32_BYTES = 58_841_856  # 14,710,464 conv weights x 4 bytes (biases not counted)


# --- machine --------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what `platform` knows elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")


def cpu_flags() -> list[str]:
    """The SIMD extensions the int8 and float kernels care about, as /proc/cpuinfo lists them."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return [flag for flag in SIMD_FLAGS if flag in present]
    except OSError:
        pass
    return []


def machine_info() -> dict:
    """What a reader needs to compare our numbers with theirs: CPU, cores, memory, versions, date."""
    import onnxruntime
    import torch

    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        pages = 0
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "memory_gib": round(pages / 2**30, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def set_threads(threads: int = THREADS) -> None:
    """Pin torch's intra-op thread count (onnxruntime sessions get theirs in their options)."""
    import torch

    torch.set_num_threads(threads)


class CpuMeter:
    """The share of the machine's CPU time used by *other* processes while a block runs.

    Read from /proc/stat (all processes) minus the CPU time of this process and of every process
    started under it (Ray's raylet and workers are not children we wait for, so `os.times` misses
    them): a thread samples /proc every 0.25 s and adds up each descendant's CPU ticks as they grow.
    0.0 means the machine was ours, 0.5 on 2 cores means one core was busy elsewhere. None off Linux.
    Call `other_share()` once, at the end (it stops the sampler).
    """

    INTERVAL = 0.25

    def __init__(self) -> None:
        import threading

        self.start = self._busy()
        self.seen: dict[int, int] = {}  # pid -> CPU ticks at its last sample (descendants and us)
        self.ours = 0  # ticks used by us and our descendants since the start
        self.me = os.getpid()
        self._stop = threading.Event()
        self._sample(first=True)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    @staticmethod
    def _busy() -> tuple[float, float] | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        return float(sum(fields) - fields[3] - fields[4]), time.perf_counter()  # ticks but idle and iowait

    def _loop(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            self._sample()

    def _sample(self, first: bool = False) -> None:
        parents, ticks = {}, {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            rest = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
            parents[int(entry.name)] = int(rest[1])
            ticks[int(entry.name)] = int(rest[11]) + int(rest[12])  # utime + stime
        ours = set()
        for pid in ticks:
            chain, node = [], pid
            while node > 1 and node not in ours and node != self.me:
                chain.append(node)
                node = parents.get(node, 0)
            if node == self.me or node in ours:
                ours.update(chain)
        ours.add(self.me)
        for pid in ours & ticks.keys():
            if not first:
                self.ours += ticks[pid] - self.seen.get(pid, 0)
            self.seen[pid] = ticks[pid]

    def other_share(self) -> float | None:
        self._stop.set()
        self._thread.join()
        end = self._busy()
        if self.start is None or end is None or end[1] <= self.start[1]:
            return None
        self._sample()
        other = (end[0] - self.start[0] - self.ours) / os.sysconf("SC_CLK_TCK")
        return max(0.0, other / ((end[1] - self.start[1]) * (os.cpu_count() or 1)))


# --- numbers --------------------------------------------------------------------------------------


# --- a command in its own process: wall, CPU and peak resident set ---------------------------------

# Runs ARGV in a grandchild and prints one JSON line: exit code, peak RSS (KiB, `os.wait4`), user and
# system CPU seconds, and with stage marks the peak of each stage. It is a tiny `python -c` process on
# purpose: a child forked straight from a big benchmark process would inherit its high-water mark
# (Linux keeps ru_maxrss across fork + exec). Stage marks come from chipq's own plain progress lines
# on stderr (`chipq.cli.progress`, every stage change with CHIPQ_PROGRESS_SECONDS small): at each new
# stage the child's VmHWM is read (the peak of the stage that ended) and reset (/proc/PID/clear_refs).
_LAUNCHER = r"""
import json, os, re, subprocess, sys, threading, time
marks = sys.argv[1] == "1"
proc = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE if marks else None)
stages, tail, lock = [], [], threading.Lock()

def hwm():
    try:
        for line in open(f"/proc/{proc.pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None

def reset():
    try:
        with open(f"/proc/{proc.pid}/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass

def close_stage(kib):
    if stages and kib is not None:
        stages[-1]["peak_kib"] = max(stages[-1]["peak_kib"], kib)

def read():
    for raw in proc.stderr:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        tail[:] = (tail + [line])[-20:]
        found = re.match(r"chipq [\w-]+: (.*) \[[\dhms:]+\]$", line)
        if not found:
            continue
        stage = re.split(r" \d+(?:/\d+ \(\d+%\))?(?: |$)", found.group(1))[0]
        with lock:
            if not stages or stages[-1]["stage"] != stage:
                close_stage(hwm())
                reset()
                stages.append({"stage": stage, "start_s": time.monotonic() - start, "peak_kib": 0})

done = threading.Event()

def poll():  # never proc.poll(): reaping the child here would leave os.wait4 below without it
    while not done.wait(0.05):
        with lock:
            close_stage(hwm())

start = time.monotonic()
threads = [threading.Thread(target=f, daemon=True) for f in ((read, poll) if marks else ())]
for thread in threads:
    thread.start()
_, status, usage = os.wait4(proc.pid, 0)
wall = time.monotonic() - start
done.set()
for thread in threads:
    thread.join(timeout=5)
print(json.dumps({"code": os.waitstatus_to_exitcode(status), "peak_kib": usage.ru_maxrss, "wall_s": wall,
                  "cpu_s": usage.ru_utime + usage.ru_stime, "stages": stages, "stderr_tail": tail}))
"""


def run_measured(args: Sequence[object], *, stages: bool = False, env: dict | None = None, check: bool = True) -> dict:
    """Run ARGS (a full command line) in its own process: wall, CPU and peak resident set.

    Returns the launcher's record: ``code``, ``peak_kib`` (the whole run's peak),
    ``wall_s``, ``cpu_s`` and, with `stages`, ``stages`` (each stage's name, start and peak in KiB;
    the last stage's peak is sampled every 50 ms, so a final spike shorter than that may be missed).
    A command's own peak measures what a user of it needs; a resident-set difference inside this
    process does not (the allocator reuses what earlier sets freed).

    Raises:
        RuntimeError: with `check`, the command failed (its last stderr lines in the message).
    """
    run_env = {**os.environ, **(env or {})}
    if stages:
        run_env["CHIPQ_PROGRESS_SECONDS"] = "0.05"  # a line at every stage change, none held back
    done = subprocess.run([sys.executable, "-c", _LAUNCHER, "1" if stages else "0", *map(str, args)],
                          capture_output=True, text=True, env=run_env)  # fmt: skip
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"launcher failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    # resetting VmHWM at a stage mark also lowers what wait4 reports (the kernel takes the high-water
    # mark of the process's memory at its exit): the run's peak is then the largest stage's
    record["peak_kib"] = max([record["peak_kib"], *(stage["peak_kib"] for stage in record["stages"])])
    if check and record["code"] != 0:
        tail = "\n".join(record["stderr_tail"]) or done.stderr.strip()[-400:]
        raise RuntimeError(f"{shlex.join(map(str, args))} failed ({record['code']}): {tail[-400:]}")
    return record


def chipq_command() -> Path:
    """The `chipq` console script of this interpreter's environment."""
    return Path(sys.executable).with_name("chipq")


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def parse_hw(text: str) -> tuple[int, int]:
    """``"640x480"`` (width x height, as chipq's --input) -> (height, width)."""
    width, _, height = text.lower().partition("x")
    return int(height), int(width)


def hw_text(hw: Sequence[int]) -> str:
    return f"{hw[1]}x{hw[0]}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- files ----------------------------------------------------------------------------------------


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` (its folders made first) with `chipq.formats.fileio.atomic_write_text`."""
    from chipq.formats.fileio import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text, what="bench result")


def write_result(results_dir: Path, name: str, data: dict, command: str | None = None) -> Path:
    """Save one script's results as ``<results_dir>/<name>.json`` (stamped, `stamped`)."""
    return write_json(Path(results_dir) / f"{name}.json", data, command)


def write_json(path: Path, data: dict, command: str | None = None) -> Path:
    """Save a results file, stamped with the suite number, the command and the machine."""
    write_atomic(Path(path), json.dumps(stamped(data, command), indent=2, sort_keys=False) + "\n")
    return Path(path)


def stamped(data: dict, command: str | None = None) -> dict:
    """`data` with a ``provenance`` entry: which suite, which command, which machine and when.

    BENCHMARKS.md states these for every section and marks a section stale when its results carry
    no stamp or an older suite number (`run_all.provenance`).
    """
    if command is None:  # the script as it was run, from the checkout's root
        script = Path(sys.argv[0])
        shown = f"bench/{script.name}" if script.parent.name == "bench" else script.name
        command = shlex.join(["python", shown, *sys.argv[1:]])
    return {**data, "provenance": {"suite": SUITE, "command": command, "machine": machine_info()}}


def read_result(results_dir: Path, name: str) -> dict | None:
    path = Path(results_dir) / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


# --- models and blobs -----------------------------------------------------------------------------


def resolve_model(model: Path | None, work: Path | None = None) -> Path:
    """The float model file: the one given, or the real VGG-16 as `chipq fetch-vgg16` fetches it,
    kept in its cache (``$CHIPQ_CACHE/vgg16``, else ``~/.cache/chipq/vgg16``; `work` is not used)."""
    if model is not None:
        return Path(model)
    from chipq.importers.fetch import default_cache_dir, fetch_vgg16

    pt_path, _ = fetch_vgg16(default_cache_dir() / "vgg16")
    return pt_path


def eval_set(work: Path, ukbench: Path | None = UKBENCH) -> Path:
    """The held-out evaluation set of `bench/evalset.py` (committed photos, their edits and, when
    the shared data is there, UKBench-56), built once into ``<work>/evalset``."""
    import evalset

    out = Path(work) / "evalset"
    if not (out / "groundtruth.json").is_file():
        evalset.build(out, ukbench if ukbench is not None and Path(ukbench).is_dir() else None)
    return out


def default_photos() -> Path:
    """Real photos for timing and calibration: UKBench when the shared data (``../shared``) is
    there, else samples/."""
    folder = UKBENCH / "jpg"
    return folder if folder.is_dir() else SAMPLES / "photos"


def code_fingerprint(*packages: str) -> str:
    """sha256 of the installed chipq sources of these subpackages: a cached result made by other code
    is not reused."""
    import chipq

    root = Path(chipq.__file__).parent
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def ptq_blob(model_path: Path, plan_text: str, work: Path, calib: Path, input_hw: tuple[int, int]) -> Path:
    """A post-training blob of `model_path` with `plan_text`, made once and kept in the work folder.

    The key covers everything the bytes depend on (model file, plan, calibration images, input
    size), and compression is deterministic, so a kept blob is the blob a new run would write.
    """
    from chipq.images import image_names, list_images
    from chipq.pipeline.compress import compress
    from chipq.retrieval.describe import images_sha256

    key = hashlib.sha256()
    key.update(sha256_file(model_path).encode())
    key.update(f"{plan_text}|{input_hw}".encode())
    key.update(code_fingerprint("quant", "formats", "floatnet", "importers").encode())
    paths = list_images(calib)
    key.update(images_sha256(image_names(paths, calib), paths).encode())  # "same images?" by content, as extract decides it
    slug = plan_text.replace(",", "_")
    out = Path(work) / "blobs" / f"{slug}-{key.hexdigest()[:16]}.bin"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        compress(Path(model_path), plan_text, images=Path(calib), input_hw=input_hw, retrain=None, output=out)
    return out


# --- markdown -------------------------------------------------------------------------------------


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str = "") -> str:
    """A GitHub markdown table; `align` has one letter per column (l or r, default r but the first)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"
