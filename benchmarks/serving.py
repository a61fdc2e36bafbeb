"""Serving on a CPU: our exported DeepLabv3 against what a user would deploy instead (issue 22).

    python benchmarks/serving.py                 # about 10 minutes on 2 idle cores
    python benchmarks/serving.py --quick         # one round, 3 timed calls
    python benchmarks/serving.py --sides ours_savedmodel_f32,ort_f32 --skip-prepare

1. `setup_peers.sh torch litert` (skip with --skip-setup): peers/torch (torch + torchvision +
   onnx + onnxruntime) and peers/litert (the standalone LiteRT interpreter, ai-edge-litert).
2. Prepares every side's artefact once under --artifacts (skip with --skip-prepare):
   benchmarks/peers/prepare_serving_ours.py in .venv (our SavedModel float32 and bfloat16, our
   TFLite float32, int8 calibrated on images and int8 from quantization-aware ranges) and
   prepare_serving_torch.py in peers/torch (torchvision's weights,
   its ONNX export and ONNX Runtime's static int8 quantization), plus one-convolution models.
3. Runs every side (benchmarks/peers/run_serving.py) in a fresh process of its own virtualenv,
   alternating sides, --rounds times, with the same threads (intra-op = OMP = --threads): the
   time to load, RSS after load (before the first call), the median latency of --repeats calls
   after --warmup, and the peak RSS. The floor sides are each runtime with a one-convolution
   model: the runtime's own share of the RSS.
4. Prints the table, the argmax agreement of each reduced-precision side with its float32
   source on the same seeded image, and last the line `ratios ours / best peer: ...`.
   Everything goes to benchmarks/out/serving-<time>.json (git-ignored).

The model: ResNet-101, output stride 16, multi-grid (1, 2, 4), ASPP 6/12/18 + image pooling,
21 classes, 513x513, batch 1, seeded random weights. Every side takes uint8 pixels
[1, 513, 513, 3] and returns the softmax probabilities and the class map at the input size.
Our side and torchvision's have their own random weights (no converter between the two
layouts is written); the reduced-precision sides share the weights of their float32 source.
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
sys.path.insert(0, HERE)

import common  # noqa: E402  pylint: disable=wrong-import-position
import speed  # noqa: E402  pylint: disable=wrong-import-position

# side -> (python of its virtualenv, precision, whose)
SIDES = {
    "ours_savedmodel_f32": (".venv/bin/python", "float32", "ours"),
    "ours_savedmodel_bf16": (".venv/bin/python", "bfloat16", "ours"),
    "ours_tflite_f32": ("peers/litert/bin/python", "float32", "ours"),
    "ours_tflite_int8": ("peers/litert/bin/python", "int8", "ours"),
    "ours_tflite_int8_qat": ("peers/litert/bin/python", "int8", "ours"),
    "torch_eager": ("peers/torch/bin/python", "float32", "peer"),
    "ort_f32": ("peers/torch/bin/python", "float32", "peer"),
    "ort_int8": ("peers/torch/bin/python", "int8", "peer"),
    "floor_tf": (".venv/bin/python", "floor", "floor"),
    "floor_litert": ("peers/litert/bin/python", "floor", "floor"),
    "floor_torch": ("peers/torch/bin/python", "floor", "floor"),
    "floor_ort": ("peers/torch/bin/python", "floor", "floor"),
}
# The runtime floor under each side (for "ratio above the floor").
FLOOR_OF = {
    "ours_savedmodel_f32": "floor_tf",
    "ours_savedmodel_bf16": "floor_tf",
    "ours_tflite_f32": "floor_litert",
    "ours_tflite_int8": "floor_litert",
    "ours_tflite_int8_qat": "floor_litert",
    "torch_eager": "floor_torch",
    "ort_f32": "floor_ort",
    "ort_int8": "floor_ort",
}
# Reduced-precision side -> its float32 source (same weights): argmax agreement.
AGREEMENT = {
    "ours_savedmodel_bf16": "ours_savedmodel_f32",
    "ours_tflite_int8": "ours_tflite_f32",
    "ours_tflite_int8_qat": "ours_tflite_f32",
    "ort_int8": "ort_f32",
    "ours_tflite_f32": "ours_savedmodel_f32",
}
ARTEFACTS_READY = {"ours": "ours_int8_qat.tflite", "torch": "torchvision_int8.onnx"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sides", default=",".join(SIDES), help=f"comma-separated, from {', '.join(SIDES)}"
    )
    parser.add_argument("--artifacts", default=os.path.join(HERE, "out", "serving-artifacts"))
    parser.add_argument("--size", type=int, default=513)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1 round, 3 timed calls")
    parser.add_argument("--skip-setup", action="store_true")
    parser.add_argument("--skip-prepare", action="store_true", help="reuse --artifacts as they are")
    args = parser.parse_args(argv)
    args.sides = [s for s in args.sides.split(",") if s]
    unknown = [s for s in args.sides if s not in SIDES]
    if unknown:
        parser.error(f"unknown side(s) {unknown}; choose from {list(SIDES)}")
    if args.quick:
        args.rounds, args.repeats = 1, 3
    return args


def prepare(args, env, log_path):
    os.makedirs(args.artifacts, exist_ok=True)
    jobs = [
        ("ours", ".venv/bin/python", "prepare_serving_ours.py"),
        ("torch", "peers/torch/bin/python", "prepare_serving_torch.py"),
    ]
    for name, python, script in jobs:
        if args.skip_prepare or os.path.exists(os.path.join(args.artifacts, ARTEFACTS_READY[name])):
            continue
        start = time.monotonic()
        argv = [
            os.path.join(REPO_ROOT, python),
            os.path.join(PEERS_SCRIPTS, script),
            "--artifacts",
            args.artifacts,
            "--size",
            str(args.size),
        ]
        with open(log_path, "a", encoding="utf-8") as log:
            proc = subprocess.run(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, check=False
            )
        if proc.returncode != 0:
            sys.exit(f"[serving] {script} failed (exit {proc.returncode}); see {log_path}")
        print(
            f"[serving] prepared {name} artefacts in {time.monotonic() - start:.0f} s", flush=True
        )


def agreement(path_a, path_b):
    import numpy as np  # pylint: disable=import-outside-toplevel

    a, b = np.load(path_a), np.load(path_b)
    return float((a == b).mean()) if a.shape == b.shape else None


def summarize(records):
    summary = {}
    for side, runs in records.items():
        if not runs:
            continue
        seconds = [s for r in runs for s in r["seconds"]]
        summary[side] = {
            "median_s": common.median(seconds),
            "load_s": common.median([r["load_s"] for r in runs]),
            "rss_loaded_mb": common.median([r["rss_loaded_mb"] for r in runs]),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "versions": runs[-1]["versions"],
        }
    return summary


def render(summary, agreements):
    lines = [
        "| side | precision | latency (median) | load | RSS after load | peak RSS | "
        "peak above runtime floor |",
        "|---|---|---|---|---|---|---|",
    ]
    for side, entry in summary.items():
        floor = summary.get(FLOOR_OF.get(side, ""), {}).get("peak_rss_mb")
        above = f"{entry['peak_rss_mb'] - floor:.0f} MiB" if floor else ""
        latency = "" if SIDES[side][1] == "floor" else f"{entry['median_s']:.3f} s"
        lines.append(
            f"| {side} | {SIDES[side][1]} | {latency} | {entry['load_s']:.1f} s | "
            f"{entry['rss_loaded_mb']:.0f} MiB | {entry['peak_rss_mb']:.0f} MiB | {above} |"
        )
    for side, value in agreements.items():
        if value is not None:
            lines.append(
                f"\nargmax agreement {side} vs {AGREEMENT[side]}: {100 * value:.2f}% of pixels"
            )
    return "\n".join(lines)


def ratio_line(summary):
    """ours / best peer, per precision, for latency and peak RSS (and above the floors)."""

    def best(precisions, key, above_floor=False):
        values = []
        for side, entry in summary.items():
            if SIDES[side][2] == "peer" and SIDES[side][1] in precisions:
                value = entry[key]
                if above_floor:
                    floor = summary.get(FLOOR_OF[side], {}).get(key)
                    if floor is None:
                        continue
                    value -= floor
                values.append((value, side))
        return min(values) if values else None

    parts = []
    for ours, precisions in (
        ("ours_savedmodel_f32", ("float32",)),
        ("ours_tflite_f32", ("float32",)),
        ("ours_savedmodel_bf16", ("float32",)),
        ("ours_tflite_int8", ("int8",)),
        ("ours_tflite_int8_qat", ("int8",)),
    ):
        if ours not in summary:
            continue
        for key, word in (("median_s", "latency"), ("peak_rss_mb", "peak RSS")):
            peer = best(precisions, key)
            if peer:
                parts.append(f"{ours} {word} {summary[ours][key] / peer[0]:.2f}x {peer[1]}")
        peer = best(precisions, "peak_rss_mb", above_floor=True)
        floor = summary.get(FLOOR_OF[ours], {}).get("peak_rss_mb")
        if peer and floor:
            parts.append(
                f"{ours} peak RSS above floor "
                f"{(summary[ours]['peak_rss_mb'] - floor) / peer[0]:.2f}x {peer[1]}"
            )
    return "ratios ours / best peer: " + "; ".join(parts)


def main(argv=None):
    args = parse_args(argv)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = os.path.join(HERE, "out")
    os.makedirs(out_dir, exist_ok=True)
    log_path = os.path.join(out_dir, f"serving-{stamp}.log")
    env = speed.child_env(args.threads)
    if not args.skip_setup:
        subprocess.run(
            ["bash", os.path.join(HERE, "setup_peers.sh"), "torch", "litert"],
            check=True,
            cwd=REPO_ROOT,
        )
    prepare(args, env, log_path)
    records = {side: [] for side in args.sides}
    outputs = {}
    for round_index in range(args.rounds):
        for side in args.sides:
            python = os.path.join(REPO_ROOT, SIDES[side][0])
            argv = [
                python,
                os.path.join(PEERS_SCRIPTS, "run_serving.py"),
                "--side",
                side,
                "--artifacts",
                args.artifacts,
                "--size",
                str(args.size),
                "--warmup",
                str(args.warmup),
                "--repeats",
                str(args.repeats),
                "--threads",
                str(args.threads),
            ]
            output = None
            if side not in outputs and SIDES[side][1] != "floor":
                output = os.path.join(args.artifacts, f"output-{side}.npy")
                if os.path.exists(output):  # never compare with an earlier run's file
                    os.remove(output)
                argv += ["--save-output", output]
            kind, value = speed.run_child(argv, env, 900, log_path)
            if kind == "error":
                print(f"[serving] {side} round {round_index + 1}: {value}", flush=True)
                continue
            if output and os.path.exists(output):
                outputs[side] = output
            records[side].append(value)
            print(
                f"[serving] {side} round {round_index + 1}: {value['median_s']:.3f} s, "
                f"RSS loaded {value['rss_loaded_mb']:.0f} MiB, peak {value['peak_rss_mb']:.0f} MiB",
                flush=True,
            )
    summary = summarize(records)
    agreements = {
        side: agreement(outputs[side], outputs[source])
        for side, source in AGREEMENT.items()
        if side in outputs and source in outputs and side in summary and source in summary
    }
    print(
        f"\nServing, {args.size}x{args.size}, batch 1, {args.threads} threads, "
        f"{args.rounds} round(s) x {args.repeats} calls after {args.warmup} warm-up; "
        f"{platform.processor() or platform.machine()}, {datetime.date.today()}\n"
    )
    print(render(summary, agreements))
    line = ratio_line(summary)
    print("\n" + line)
    with open(os.path.join(out_dir, f"serving-{stamp}.json"), "w", encoding="utf-8") as handle:
        json.dump(
            {
                "args": vars(args),
                "records": records,
                "summary": summary,
                "agreements": agreements,
                "ratios": line,
            },
            handle,
            indent=1,
        )


if __name__ == "__main__":
    main()
