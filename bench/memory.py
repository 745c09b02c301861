"""Memory: every command a user runs, each in its own process — wall, CPU and peak resident set per stage.

Issue 25: every command on the real VGG-16 should peak at no more than 2 GB. Each command below runs
as the `chipq` console script a user runs (allocator settings included) in a process of its own,
through `common.run_measured` (the `os.wait4` launcher): its peak resident set is exact; the peak of
each stage comes from chipq's own progress lines (VmHWM read and reset at every stage change).

Commands (real VGG-16 and the real default blob unless named):

- ``compress MODEL --plan 3x7,1x6`` (default, retraining) and ``--no-retrain``;
- ``compress MODEL --budget 2000000`` (a chip format v2 plan: narrow alpha and pruned kernels,
  retrained; the planner's sensitivity read from the cache, so measure the plan row first or run
  `chipq plan` once);
- ``plan MODEL --budget 3914104 --no-cache`` (the first run, nothing cached) with ``--sens-images``
  `--plan-images` (16 is the default; a smaller count is marked in the table), without and with the
  check (``--no-measure`` left out: what `chipq plan` does by default, a post-training compress and
  the held-out photos after the sensitivity);
- ``verify BLOB --model MODEL``;
- ``extract`` of one 640x480 photo at ``--input 640x480``: NIP and RNIP-14, float model and blob;
- ``index``, ``eval`` and ``search`` on `--descriptors` (100,000) synthetic unit descriptors (random,
  seeded: memory depends on the count and the width, not on the values);
- ``demo`` (the real VGG-16 only; `--skip demo` to leave it out).

Peak RSS does not depend on the other load of the machine: it is a figure. Wall and CPU times are
only figures when the machine was ours: each command records the share of the CPU other processes
used while it ran (`common.CpuMeter`), and the table shows its times only when that share was at
most `CONTENTION`.

Run: ``python bench/memory.py [--model vgg16.pt] [--blob B] [--work DIR] [--out FILE] [--skip a,b]
[--only LABEL,…] [--merge EARLIER.json]``: ``--only`` runs the commands whose label starts with one of
the given texts, ``--merge`` (repeatable) keeps earlier runs' rows for the commands this one leaves out (each
row names the run that measured it);
``--quick`` runs small settings (2 retraining steps, 2 sensitivity photos, 2,000 descriptors).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import common as cm
import numpy as np

LIMIT_MB = 2048  # issue 25: every command on the real VGG-16
CONTENTION = 0.10  # other processes' CPU share above which a command's times are not shown
BUDGET = "3914104"  # the real default blob's size: plan's budget
V2_BUDGET = "2000000"  # issue 23's chip format v2 budget: compress --budget
PHOTO_HW = (480, 640)


def descriptor_files(folder: Path, count: int, dim: int = 512, seed: int = 0) -> tuple[Path, Path, Path]:
    """`count` seeded random unit descriptors, 10 queries of them and a ground truth: (db, queries, gt)."""
    from chipq.retrieval.descriptors import DescriptorKind, DescriptorSet, save_descriptors

    folder.mkdir(parents=True, exist_ok=True)
    db, queries, gt = folder / f"db_{count}.npz", folder / "queries.npz", folder / "gt.json"
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    names = [f"d{i:07d}.jpg" for i in range(count)]
    if not db.exists():
        save_descriptors(db, DescriptorSet(names, vectors, DescriptorKind.FLOAT, dim, {"model": "bench-memory"}))
    save_descriptors(queries, DescriptorSet(names[:10], vectors[:10], DescriptorKind.FLOAT, dim, {"model": "bench-memory"}))
    groups = {str(g): names[4 * g : 4 * g + 4] for g in range(min(25, count // 4))}
    relevant = {n: [m for m in members if m != n] for members in groups.values() for n in members}
    gt.write_text(json.dumps({"groups": groups, "relevant": relevant}))
    return db, queries, gt


def photo_640(source: Path, out: Path) -> Path:
    """The first photo of `source` resized to 640x480 (a camera-sized input)."""
    from PIL import Image

    from chipq.images import list_images, load_image, resize

    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(resize(load_image(list_images(source)[0]), PHOTO_HW)).save(out, quality=95)
    return out


def _shipped_photos() -> Path:
    from chipq.data import default_photos_dir

    return default_photos_dir()


def commands(args: argparse.Namespace, work: Path, blob: Path) -> list[tuple[str, list[str]]]:
    """(label, chipq arguments) of every measured command, in the order they run."""
    model, quick = str(args.model), args.quick
    train = ["--steps", "2", "--samples", "8"] if quick else []
    budget = "15x" if quick else BUDGET
    v2_budget = "25x" if quick else V2_BUDGET
    photo = str(photo_640(args.calib or _shipped_photos(), work / "photo640" / "p640.jpg").parent)  # extract reads a folder
    db, queries, gt = descriptor_files(work / "descriptors", args.descriptors)
    index = str(work / "descriptors" / "db.index")
    size = ["--input", f"{PHOTO_HW[1]}x{PHOTO_HW[0]}"]
    out = lambda name: ["-o", str(work / name)]  # noqa: E731
    images = ["--images", str(args.calib)] if args.calib else []  # default: the photo set shipped with chipq
    plan_label = f"plan --budget {budget} (first run, --sens-images {args.plan_images})"
    rows = [
        ("compress (default, retraining)", ["compress", model, "--plan", cm.MAIN_PLAN, *images, *train, *out("default.blob")]),
        ("compress --no-retrain", ["compress", model, "--plan", cm.MAIN_PLAN, *images, "--no-retrain", *out("ptq.blob")]),
        (f"compress --budget {v2_budget} (format v2, retraining)", ["compress", model, "--budget", v2_budget, *images, *train, *out("v2.blob")]),
        (plan_label, ["plan", model, "--budget", budget, *images, "--sens-images", str(args.plan_images), "--no-cache", "--no-measure"]),
        (f"plan --budget {budget} with its check (first run)", ["plan", model, "--budget", budget, *images, "--sens-images", str(args.plan_images), "--no-cache"]),
        ("verify --model", ["verify", str(blob), "--model", model, *images]),
        ("extract NIP 640x480, float model", ["extract", photo, "--model", model, *size, *out("x_float_nip.npz")]),
        ("extract RNIP-14 640x480, float model", ["extract", photo, "--model", model, "--rnip", "14", *size, *out("x_float_rnip.npz")]),
        ("extract NIP 640x480, blob", ["extract", photo, "--blob", str(blob), *size, *out("x_blob_nip.npz")]),
        ("extract RNIP-14 640x480, blob", ["extract", photo, "--blob", str(blob), "--rnip", "14", *size, *out("x_blob_rnip.npz")]),
        (f"index flat, {args.descriptors:,} descriptors", ["index", str(db), "-o", index]),
        (f"eval, {args.descriptors:,} descriptors", ["eval", str(db), "--gt", str(gt), "--worst", "1"]),
        (f"search, {args.descriptors:,} descriptors", ["search", index, str(queries), "-k", "10", "--json"]),
    ]
    if not quick:  # the demo runs the real VGG-16 whatever model is named
        rows.append(("demo", ["demo", *out("demo")]))
    chosen = [(label, argv) for label, argv in rows if _key(label) not in args.skip]
    return [(label, argv) for label, argv in chosen if not args.only or any(label.startswith(text) for text in args.only)]


def merged_rows(path: Path) -> list[dict]:
    """The rows of an earlier result, each with the run that measured it (its own, or the file's)."""
    earlier = json.loads(Path(path).read_text(encoding="utf-8"))
    machine = earlier.get("machine", {})
    run = {"label": earlier.get("label", ""), "date_utc": machine.get("date_utc"), "cpu": machine.get("cpu")}
    return [{**row, "run": row.get("run", run)} for row in earlier.get("commands", [])]


def _key(label: str) -> str:
    return label.split()[0]


def stage_group(stage: str) -> str:
    """A stage's family: per-layer stages ("reconstructing conv4_1") under one name."""
    return re.sub(r"\s+conv\d+_\d+\b.*$", "", stage)


def measure(label: str, argv: list[str]) -> dict:
    meter = cm.CpuMeter()
    record = cm.run_measured([cm.chipq_command(), *argv], stages=True, check=False)
    other = meter.other_share()
    groups: dict[str, dict] = {}
    for stage in record["stages"]:
        group = groups.setdefault(stage_group(stage["stage"]), {"peak_mb": 0.0, "at": stage["stage"]})
        if stage["peak_kib"] / 1024 >= group["peak_mb"]:
            group["peak_mb"], group["at"] = stage["peak_kib"] / 1024, stage["stage"]
    row = {"command": label, "argv": argv, "peak_mb": record["peak_kib"] / 1024, "cpu_s": record["cpu_s"],
           "wall_s": record["wall_s"], "other_cpu_share": other, "stages": groups, "code": record["code"]}  # fmt: skip
    if record["code"] != 0:  # kept with its error: the other commands still run
        row["error"] = (record["stderr_tail"] or ["?"])[-1][-300:]
    print(f"{label}: peak {row['peak_mb']:.0f} MB, cpu {row['cpu_s']:.0f} s, wall {row['wall_s']:.0f} s", flush=True)
    return row


def times(row: dict) -> list[str]:
    """A command's wall and CPU seconds for the table: only when the machine was ours while it ran.

    >>> times({"wall_s": 219.6, "cpu_s": 381.3, "other_cpu_share": 0.01}), times({"wall_s": 1, "cpu_s": 1})
    (['220', '381'], ['–', '–'])
    """
    share = row.get("other_cpu_share")
    if share is None:
        return ["–", "–"]
    if share > CONTENTION:
        return ["busy", "busy"]
    return [f"{row['wall_s']:,.0f}", f"{row['cpu_s']:,.0f}"]


def render(data: dict, before: dict | None = None) -> str:
    """The BENCHMARKS.md section: one row per command (and the run before a change, when kept)."""
    old = {row["command"]: row for row in (before or {}).get("commands", [])}
    timed = any(row.get("other_cpu_share") is not None for row in old.values())  # a before run that recorded its times
    header = ["command", "peak RSS (MB)", *(["before (MB)"] if old else []), "wall (s)", *(["before wall (s)"] if timed else []),
              "CPU (s)", "largest stages (MB)"]  # fmt: skip
    rows = []
    for row in data["commands"]:
        stages = sorted(row["stages"].items(), key=lambda item: -item[1]["peak_mb"])[:3]
        text = "; ".join(f"{name} {s['peak_mb']:.0f}" + (f" ({s['at']})" if s["at"] != name else "") for name, s in stages)
        prior = old.get(row["command"])
        peak = f"{row['peak_mb']:,.0f}" + (f" (failed: exit {row['code']})" if row.get("code") and not row.get("note") else "")
        wall, cpu = times(row)
        rows.append([f"`{row['command']}`", peak, *([f"{prior['peak_mb']:,.0f}" if prior else "–"] if old else []),
                     wall, *([times(prior)[0] if prior else "–"] if timed else []), cpu, text])  # fmt: skip
    over = [row["command"] for row in data["commands"] if row["peak_mb"] > LIMIT_MB]
    # a run that failed or was stopped did not reach every stage: its peak is only a lower bound
    cut = [row["command"] for row in data["commands"] if row.get("code") or row.get("note")]
    verdict = " ".join([
        f"Over the {LIMIT_MB:,} MB target: {', '.join(over)}." if over else "",
        f"Not run to the end (the peak is a lower bound): {', '.join(cut)}." if cut else "",
        f"Every command measured here peaks under the {LIMIT_MB:,} MB target." if not over and not cut else "",
    ]).strip()  # fmt: skip
    return "\n".join([
        "## Memory (`bench/memory.py`)",
        "",
        f"Each command in its own process (the `chipq` script, `os.wait4`), model `{data['model']}`"
        + (", small settings (`--quick`)" if data.get("quick") else "") + ". Peak resident set of the whole run, "
        "and of its largest stages (VmHWM read and reset at each progress stage).",
        "",
        cm.md_table(header, rows),
        "",
        verdict + f" Wall and CPU seconds are shown where other processes used at most {CONTENTION:.0%} of the CPU "
        "while the command ran (\"busy\": more than that, the times are in the JSON only; \"–\": not recorded).",
        # "note": why a run was stopped by hand (its peak is a lower bound); "remark": what a reader of
        # a finished row should know (both written into the result by whoever ran it)
        *[f"- `{row['command']}`: {row[key]}" for row in data["commands"] for key in ("note", "remark") if row.get(key)],
        *[f"- before, `{row['command']}`: {row[key]}" for row in (before or {}).get("commands", []) for key in ("note", "remark") if row.get(key)],
        *([f"Before: `{before.get('label', 'before')}`" + _machine_text(before) + "."] if old else []),
        *_runs(data),
        "",
    ])  # fmt: skip


def _machine_text(result: dict) -> str:
    """", CPU, date" of the run that made `result`, where it recorded them."""
    machine = result.get("machine", {})
    return "".join(f", {machine[key]}" for key in ("cpu", "date_utc") if machine.get(key))


def _runs(data: dict) -> list[str]:
    """Which run measured each row, when the rows come from more than one (``--merge``)."""
    runs = {row["command"]: row["run"] for row in data["commands"] if row.get("run")}
    if len({json.dumps(run, sort_keys=True) for run in runs.values()}) < 2:
        return []
    return ["", "Rows measured by different runs (`--merge`):", "", *[
        f"- `{command}`: {run.get('label') or 'unlabelled run'}, {run.get('date_utc') or 'date not recorded'}"
        + (f", {run['cpu']}" if run.get("cpu") else "")
        for command, run in runs.items()
    ]]  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="float model (default: the real VGG-16 from the chipq cache)")
    parser.add_argument("--blob", type=Path, help="blob for verify/extract (default: this run's compress output)")
    parser.add_argument("--calib", type=Path, default=None, help="photos for compress/plan/verify (default: the set shipped with chipq, what a user gets)")
    parser.add_argument("--work", type=Path, default=cm.DEFAULT_WORK)
    parser.add_argument("--out", type=Path, default=cm.RESULTS_DIR / "memory.json")
    parser.add_argument("--label", default="", help="a name for this run (e.g. the commit)")
    parser.add_argument("--descriptors", type=int, default=100_000)
    parser.add_argument("--plan-images", type=int, default=16, help="plan's --sens-images")
    parser.add_argument("--skip", type=lambda s: {x.strip() for x in s.split(",") if x.strip()}, default=set(),
                        help="commands to leave out, by first word: compress,plan,verify,extract,index,eval,search,demo")
    parser.add_argument("--only", type=lambda s: [x.strip() for x in s.split(",") if x.strip()], default=[],
                        help="run only the commands whose label starts with one of these texts, e.g. 'compress --budget,demo'")
    parser.add_argument("--merge", type=Path, action="append", default=[],
                        help="an earlier result: its rows are kept for the commands this run leaves out (repeat it: a later file's row wins)")
    parser.add_argument("--quick", action="store_true", help="small settings (tiny runs, CI)")
    args = parser.parse_args(argv)
    if args.quick:
        args.descriptors, args.plan_images = min(args.descriptors, 2000), min(args.plan_images, 2)
    work = Path(args.work) / "memory"
    work.mkdir(parents=True, exist_ok=True)
    args.model = cm.resolve_model(args.model, args.work)
    blob = args.blob or work / "default.blob"
    if args.blob is None and "compress" in args.skip:  # verify and extract need a blob of this model
        blob = cm.ptq_blob(args.model, cm.MAIN_PLAN, args.work, args.calib or _shipped_photos(), cm.parse_hw("224x224"))
    machine = cm.machine_info()
    data = {"model": Path(args.model).name, "quick": args.quick, "label": args.label, "limit_mb": LIMIT_MB,
            "machine": machine, "commands": []}  # fmt: skip
    if any(path.resolve() == args.out.resolve() for path in args.merge):
        raise SystemExit(f"--out {args.out} is a --merge input: write the merged result to another file")
    earlier = {row["command"]: row for path in args.merge for row in merged_rows(path)}  # a later file's row wins
    todo = commands(args, work, blob)
    data["commands"] = [row for command, row in earlier.items() if command not in {label for label, _ in todo}]
    path = cm.write_json(args.out, data)
    for label, command in todo:
        row = measure(label, command)
        row["run"] = {"label": args.label, "date_utc": machine.get("date_utc"), "cpu": machine.get("cpu")}
        data["commands"].append(row)
        path = cm.write_json(args.out, data)  # kept after every command: a long run cut short keeps what it measured
    print(f"results -> {path}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
