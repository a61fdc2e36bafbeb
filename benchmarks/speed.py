"""Side-by-side CPU speed of our DeepLabv3 and the peers a user would pick (issue 7).

    python benchmarks/speed.py --quick          # < 10 minutes: fewer repeats
    python benchmarks/speed.py                  # medians of 5 after 2 warm-up calls
    python benchmarks/speed.py --rounds 2 --bf16

Sets up (or reuses) the peers' virtualenvs with benchmarks/setup_peers.sh, then, for each
measurement, runs ours and each peer alternately (ours, torchvision, modelgarden, ours, ... for
--rounds rounds), each in a fresh process of its own virtualenv with the same thread count and
the same seeded inputs. The model is the same everywhere: ResNet-101, output stride 16,
multi-grid (1, 2, 4), ASPP 6/12/18 + image pooling, 21 classes, random weights
(benchmarks/peers/*.py say how each peer was made to match).

Prints the matrix-multiply peak measured in the same run, a markdown table of median times and
training peak RSS, a table of achieved conv GFLOP/s (the paper model's analytic conv FLOPs /
median time; 3x forward for a training step), and last the ratios ours / best peer. (The
exported models, SavedModel and TFLite, against ONNX Runtime and torchvision as a deployment
runs them: benchmarks/serving.py.) Every
result is also written as JSON to benchmarks/out/.

Only the standard library is used here; run it with any Python 3.10+.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
PEERS_SCRIPTS = os.path.join(HERE, "peers")
sys.path.insert(0, PEERS_SCRIPTS)

import common  # noqa: E402  pylint: disable=wrong-import-position

# side -> (virtualenv python relative to the repo root, runner script, setup_peers.sh name)
SIDES = {
    "ours": (".venv/bin/python", "run_ours.py", None),
    "torchvision": ("peers/torch/bin/python", "run_torchvision.py", "torch"),
    "modelgarden": ("peers/modelgarden/bin/python", "run_modelgarden.py", "modelgarden"),
    # ours with deeplab.train's --recompute_through=none: every activation kept for the
    # backward pass (training measurements only; "ours" runs the library's default, block2)
    "ours_no_recompute": (".venv/bin/python", "run_ours.py", None),
}
SIDE_ARGUMENTS = {"ours_no_recompute": ["--recompute-through", "none"]}
TRAIN_ONLY_SIDES = ("ours_no_recompute",)
PEER_SIDES = ("torchvision", "modelgarden")

# name -> (column title, runner arguments)
MEASUREMENTS = {
    "infer_os16": (
        "inference OS 16, 513, batch 1",
        dict(task="infer", output_stride=16, size=513, batch=1),
    ),
    "infer_os8": (
        "inference OS 8, 513, batch 1",
        dict(task="infer", output_stride=8, size=513, batch=1),
    ),
    "train_b2": (
        "train step batch 2 at 321",
        dict(task="train", output_stride=16, size=321, batch=2),
    ),
    "train_b8": (
        "train step batch 8 at 321",
        dict(task="train", output_stride=16, size=321, batch=8),
    ),
    "infer_os16_bf16": (
        "inference OS 16, 513, batch 1, bf16",
        dict(task="infer", output_stride=16, size=513, batch=1, dtype="bfloat16"),
    ),
}
DEFAULT_MEASUREMENTS = ("infer_os16", "infer_os8", "train_b2", "train_b8")


def runs_measurement(side, name):
    """Whether ``side`` is run for measurement ``name`` (training-only sides skip inference)."""
    return side not in TRAIN_ONLY_SIDES or MEASUREMENTS[name][1]["task"] == "train"


# --------------------------------------------------------------------------- pure parts


def measurement_flops(spec):
    """Conv FLOPs of one call of a measurement, from the paper model's analytic count."""
    forward = common.deeplabv3_conv_flops(spec["size"], spec["output_stride"], batch=spec["batch"])
    return common.training_flops(forward) if spec["task"] == "train" else forward


def summarize(records, sides, measurements):
    """Pools the runs of each (measurement, side) into one summary.

    Args:
      records: dicts with "measurement", "side" and either "result" (a runner's dict) or "error".
      sides, measurements: names, in table order.

    Returns:
      {measurement: {side: {"median_s", "n", "peak_rss_mb", "gflops_per_s", "errors", ...}}}
      with "median_s" None where no run succeeded.
    """
    summary = {}
    for name in measurements:
        spec = MEASUREMENTS[name][1]
        summary[name] = {}
        for side in sides:
            runs = [r for r in records if r["measurement"] == name and r["side"] == side]
            seconds = [s for r in runs if "result" in r for s in r["result"]["seconds"]]
            entry = {
                "n": len(seconds),
                "median_s": common.median(seconds) if seconds else None,
                "peak_rss_mb": max(
                    (r["result"]["peak_rss_mb"] for r in runs if "result" in r), default=None
                ),
                "errors": [r["error"] for r in runs if "error" in r],
            }
            entry["gflops_per_s"] = (
                measurement_flops(spec) / entry["median_s"] / 1e9 if entry["median_s"] else None
            )
            agreements = [
                r["result"]["argmax_agreement_vs_float32"]
                for r in runs
                if "result" in r and "argmax_agreement_vs_float32" in r["result"]
            ]
            if agreements:
                entry["argmax_agreement"] = min(agreements)
            summary[name][side] = entry
    return summary


def best_peer(entries, key="median_s"):
    """(peer name, value) with the smallest ``key`` among the peers that have one, else None."""
    candidates = [
        (entries[s][key], s) for s in PEER_SIDES if s in entries and entries[s].get(key) is not None
    ]
    if not candidates:
        return None
    value, side = min(candidates)
    return side, value


def format_seconds(value):
    """A time cell: 3 significant digits, or 'failed'."""
    if value is None:
        return "failed"
    return f"{value:.3g} s" if value < 100 else f"{value:.0f} s"


def format_ratio(ours, best):
    """'0.93x' for ours / best, or 'n/a'."""
    if ours is None or best is None or best == 0:
        return "n/a"
    return f"{ours / best:.2f}x"


def render_tables(summary, sides, measurements, peak):
    """Markdown tables (times + RSS, then GFLOP/s) and the final ratio line, as one string.

    ``peak`` is {"float32": GFLOP/s or None, "bfloat16": ...}.
    """
    train = [m for m in measurements if MEASUREMENTS[m][1]["task"] == "train"]
    header = ["side"] + [MEASUREMENTS[m][0] for m in measurements]
    header += [f"peak RSS, {MEASUREMENTS[m][0]}" for m in train]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for side in sides:
        cells = [side]
        for m in measurements:
            entry = summary[m][side]
            if not runs_measurement(side, m):
                cells.append("n/a")
                continue
            cell = format_seconds(entry["median_s"])
            if "argmax_agreement" in entry:
                cell += f" (argmax {100 * entry['argmax_agreement']:.1f}%)"
            cells.append(cell)
        for m in train:
            rss = summary[m][side]["peak_rss_mb"]
            cells.append("failed" if rss is None else f"{rss / 1024:.2f} GiB")
        lines.append("| " + " | ".join(cells) + " |")

    lines.append("")
    header = ["achieved conv GFLOP/s"] + [MEASUREMENTS[m][0] for m in measurements]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for side in sides:
        cells = [side]
        for m in measurements:
            rate = summary[m][side]["gflops_per_s"]
            dtype = MEASUREMENTS[m][1].get("dtype", "float32")
            if not runs_measurement(side, m):
                cells.append("n/a")
            elif rate is None:
                cells.append("failed")
            elif peak.get(dtype):
                cells.append(f"{rate:.0f} ({100 * rate / peak[dtype]:.0f}% of {dtype} peak)")
            else:
                cells.append(f"{rate:.0f}")
        lines.append("| " + " | ".join(cells) + " |")

    lines.append("")
    lines.append(ratio_line(summary, measurements))
    return "\n".join(lines)


def ratio_line(summary, measurements):
    """'ratios ours / best peer: <measurement> 0.93x (torchvision), ...' (time, then peak RSS)."""
    parts = []
    for m in measurements:
        best = best_peer(summary[m])
        ours = summary[m].get("ours", {}).get("median_s")
        parts.append(
            f"{m} {format_ratio(ours, best[1] if best else None)}"
            + (f" ({best[0]})" if best else "")
        )
    for m in measurements:
        if MEASUREMENTS[m][1]["task"] != "train":
            continue
        best = best_peer(summary[m], key="peak_rss_mb")
        ours = summary[m].get("ours", {}).get("peak_rss_mb")
        parts.append(
            f"peak RSS {m} {format_ratio(ours, best[1] if best else None)}"
            + (f" ({best[0]})" if best else "")
        )
        for side in TRAIN_ONLY_SIDES:
            if side not in summary[m]:
                continue
            time_best, rss_best = best_peer(summary[m]), best_peer(summary[m], key="peak_rss_mb")
            entry = summary[m][side]
            time_ratio = format_ratio(entry["median_s"], time_best and time_best[1])
            rss_ratio = format_ratio(entry["peak_rss_mb"], rss_best and rss_best[1])
            parts.append(f"{side} {m} {time_ratio}, peak RSS {rss_ratio}")
    return "ratios ours / best peer: " + ", ".join(parts)


def runner_command(side, spec, warmup, repeats, threads, seed=0, xla=False, count_flops=False):
    """argv that runs one measurement of ``side`` in its own virtualenv."""
    python, script, _ = SIDES[side]
    argv = [
        os.path.join(REPO_ROOT, python),
        os.path.join(PEERS_SCRIPTS, script),
        "--task",
        spec["task"],
        "--output-stride",
        str(spec["output_stride"]),
        "--size",
        str(spec["size"]),
        "--batch",
        str(spec["batch"]),
        "--warmup",
        str(warmup),
        "--repeats",
        str(repeats),
        "--threads",
        str(threads),
        "--dtype",
        spec.get("dtype", "float32"),
        "--seed",
        str(seed),
    ]
    if xla and side != "torchvision":
        argv.append("--xla")
    if count_flops:
        argv.append("--count-flops")
    return argv + SIDE_ARGUMENTS.get(side, [])


# --------------------------------------------------------------------------- running


def child_env(threads):
    """The environment every child gets: same threads everywhere, quiet TensorFlow."""
    env = dict(os.environ)
    env.update(
        {
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "TF_NUM_INTRAOP_THREADS": str(threads),
            "TF_NUM_INTEROP_THREADS": str(threads),
            "KERAS_BACKEND": "tensorflow",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONHASHSEED": "0",
        }
    )
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def run_child(argv, env, timeout_s, log_path):
    """Runs one runner; returns ("result", dict) or ("error", message). Logs its output."""
    start = time.monotonic()
    try:
        proc = subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=REPO_ROOT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "error", f"timed out after {timeout_s} s: {' '.join(argv[1:3])}"
    finally:
        wall = time.monotonic() - start
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(argv)}\n# rc={proc.returncode} wall={wall:.1f}s\n")
        log.write(proc.stdout + "\n" + proc.stderr + "\n")
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return "error", f"exit {proc.returncode}: " + " | ".join(tail)
    try:
        result = common.parse_result(proc.stdout)
    except ValueError as error:
        return "error", str(error)
    result["wall_s"] = wall
    return "result", result


def setup_peers(sides):
    names = [SIDES[s][2] for s in sides if SIDES[s][2]]
    if not names:
        return
    start = time.monotonic()
    subprocess.run(
        ["bash", os.path.join(HERE, "setup_peers.sh"), *names], check=True, cwd=REPO_ROOT
    )
    print(f"[speed] peers ready in {time.monotonic() - start:.0f} s", flush=True)


def measure_peak(args, env, log_path):
    """Best matmul GFLOP/s per dtype over the frameworks present (TF in .venv, torch)."""
    peak = {"float32": None, "bfloat16": None}
    details = []
    runs = [("tensorflow", SIDES["ours"][0])]
    if "torchvision" in args.sides:
        runs.append(("torch", SIDES["torchvision"][0]))
    for framework, python in runs:
        argv = [
            os.path.join(REPO_ROOT, python),
            os.path.join(PEERS_SCRIPTS, "run_matmul.py"),
            "--framework",
            framework,
            "--threads",
            str(args.threads),
            "--repeats",
            str(args.repeats),
        ]
        kind, value = run_child(argv, env, 600, log_path)
        if kind == "error":
            print(f"[speed] matmul peak ({framework}) failed: {value}", flush=True)
            continue
        details.append(value)
        for dtype in peak:
            rate = value.get(f"{dtype}_gflops_per_s")
            if rate and (peak[dtype] is None or rate > peak[dtype]):
                peak[dtype] = rate
    return peak, details


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 timed calls per side and measurement, 1 round (< 10 min)",
    )
    parser.add_argument(
        "--sides",
        default="ours,torchvision,modelgarden",
        help="comma-separated, in run order (default: %(default)s); "
        "ours_no_recompute is ours with deeplab.train's "
        "--recompute_through=none, run for the training measurements",
    )
    parser.add_argument(
        "--measurements",
        default=",".join(DEFAULT_MEASUREMENTS),
        help=f"comma-separated from {', '.join(MEASUREMENTS)}",
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="add bf16 inference at OS 16 with argmax agreement vs float32",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="alternating rounds per measurement; medians pool all rounds",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed calls per process (default 5, --quick 3)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="untimed calls first (TensorFlow's 2nd call is still slow)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--xla", action="store_true", help="jit_compile on the TensorFlow sides")
    parser.add_argument(
        "--skip-setup",
        action="store_true",
        help="do not run setup_peers.sh (the virtualenvs must exist)",
    )
    parser.add_argument(
        "--no-flops-check",
        action="store_true",
        help="skip counting each model's conv FLOPs from its graph",
    )
    parser.add_argument("--timeout", type=int, default=900, help="seconds per child process")
    parser.add_argument("--out-dir", default=os.path.join(HERE, "out"))
    args = parser.parse_args(argv)
    args.sides = [s for s in args.sides.split(",") if s]
    args.measurements = [m for m in args.measurements.split(",") if m]
    if args.bf16 and "infer_os16_bf16" not in args.measurements:
        args.measurements.append("infer_os16_bf16")
    for s in args.sides:
        if s not in SIDES:
            parser.error(f"--sides: unknown side {s!r}; choose from {', '.join(SIDES)}")
    for m in args.measurements:
        if m not in MEASUREMENTS:
            parser.error(f"--measurements: unknown {m!r}; choose from {', '.join(MEASUREMENTS)}")
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    return args


def main(argv=None):
    args = parse_args(argv)
    started = time.monotonic()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    os.makedirs(args.out_dir, exist_ok=True)
    log_path = os.path.join(args.out_dir, f"speed-{stamp}.log")
    json_path = os.path.join(args.out_dir, f"speed-{stamp}.json")
    command = "python benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:])

    if not args.skip_setup:
        setup_peers(args.sides)
    env = child_env(args.threads)
    peak, peak_details = measure_peak(args, env, log_path)
    print(
        f"[speed] matmul peak at {args.threads} threads: float32 "
        f"{peak['float32'] or 0:.0f} GFLOP/s, bfloat16 {peak['bfloat16'] or 0:.0f} GFLOP/s",
        flush=True,
    )

    records = []
    for m_index, name in enumerate(args.measurements):
        spec = MEASUREMENTS[name][1]
        for round_index in range(args.rounds):
            for side in args.sides:
                if not runs_measurement(side, name):
                    continue
                count = not args.no_flops_check and round_index == 0 and m_index == 0
                argv_child = runner_command(
                    side,
                    spec,
                    args.warmup,
                    args.repeats,
                    args.threads,
                    xla=args.xla,
                    count_flops=count,
                )
                load_before = os.getloadavg()[0]
                kind, value = run_child(argv_child, env, args.timeout, log_path)
                record = {
                    "measurement": name,
                    "side": side,
                    "round": round_index,
                    kind: value,
                    "loadavg_1min": [load_before, os.getloadavg()[0]],
                }
                records.append(record)
                if kind == "result":
                    extra = (
                        f", model conv {value['model_conv_gflops']:.1f} GFLOPs"
                        if "model_conv_gflops" in value
                        else ""
                    )
                    print(
                        f"[speed] {name} {side}: median {value['median_s']:.3f} s of "
                        f"{len(value['seconds'])}, peak RSS {value['peak_rss_mb']:.0f} MiB, "
                        f"process {value['wall_s']:.0f} s, load {load_before:.1f}{extra}",
                        flush=True,
                    )
                else:
                    print(f"[speed] {name} {side}: FAILED {value}", flush=True)

    summary = summarize(records, args.sides, args.measurements)
    versions = {}
    for record in records:
        if "result" in record:
            versions[record["side"]] = record["result"].get("versions")
    text = render_tables(summary, args.sides, args.measurements, peak)
    elapsed = time.monotonic() - started
    with open(json_path, "w", encoding="utf-8") as handle:
        json.dump(
            {
                "date": datetime.datetime.now().isoformat(timespec="seconds"),
                "command": command,
                "machine": platform.platform(),
                "cpu_count": os.cpu_count(),
                "threads": args.threads,
                "warmup": args.warmup,
                "repeats": args.repeats,
                "rounds": args.rounds,
                "elapsed_s": elapsed,
                "peak": peak,
                "peak_details": peak_details,
                "versions": versions,
                "summary": summary,
                "records": records,
            },
            handle,
            indent=1,
        )
    print()
    print(
        f"{command}  ({datetime.date.today()}, {elapsed / 60:.1f} min; medians of "
        f"{args.repeats * args.rounds} after {args.warmup} warm-up; {args.threads} threads)"
    )
    for side, v in versions.items():
        print(f"  {side}: " + ", ".join(f"{k} {x}" for k, x in (v or {}).items()))
    print(
        f"matmul peak: float32 {peak['float32'] or 0:.0f} GFLOP/s, "
        f"bfloat16 {peak['bfloat16'] or 0:.0f} GFLOP/s (best of TF / torch, same run)"
    )
    loads = [x for r in records for x in r["loadavg_1min"]]
    if loads and max(loads) > 1.5 * args.threads:
        print(
            f"WARNING: 1-minute load average reached {max(loads):.1f} on "
            f"{os.cpu_count()} cores during the run: other jobs shared the CPU, the times "
            f"are noisy"
        )
    print(f"full results: {json_path}")
    print()
    print(text)
    failed = [r for r in records if "error" in r]
    return 1 if failed and len(failed) == len(records) else 0


if __name__ == "__main__":
    sys.exit(main())
