"""Whole-image vs sliding-window inference on a large photo: time, peak memory, agreement.

    python benchmarks/tiling.py [--checkpoint=weights/mnv2_pascal] [--size=3000,4000]
        [--tile=513] [--overlap=0.25] [--image=../shared/data/camvid/val/0016E5_08119.png]

A real photograph is resized (bilinear) to --size (a 12-megapixel 4000x3000 frame by default)
and segmented by the same Keras model (``deeplab.export.serving.KerasSegmenter``, what
``deeplab.predict`` runs) twice, each side in its own fresh process so that peak RSS
(``ru_maxrss``) is that side's alone: whole image in one pass, and windows of --tile pixels
overlapping by --overlap (``--eval_tile_size`` / ``--eval_tile_overlap``). The model is the
imported authors' PASCAL model when --checkpoint exists (``deeplab.import_official``), else a
random-weight MobileNetV2 DeepLab v3 of the same architecture (memory and time do not depend
on the weights). Prints each side's time, peak RSS and RSS after loading, the ratios tiled /
whole, and the share of pixels on which the two agree.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks", "peers"))

from common import current_rss_mb as _rss_mib  # noqa: E402  pylint: disable=wrong-import-position


def _side(args):
    """One measurement in this process: prints a JSON line, writes the class map."""
    from PIL import Image

    from deeplab.common.inference_options import InferenceOptions
    from deeplab.export import serving
    from deeplab.logdir import checkpoints

    Image.MAX_IMAGE_PIXELS = None
    image = np.asarray(
        Image.open(args.image).convert("RGB").resize((args.size[1], args.size[0]), Image.BILINEAR)
    )
    if os.path.exists(os.path.join(args.checkpoint, "model_config.json")):
        model = checkpoints.load_model(args.checkpoint, fuse_batch_norm=True)
        source = args.checkpoint
    else:
        import deeplab  # pylint: disable=import-outside-toplevel

        model = deeplab.build_model(
            backbone="mobilenet_v2",
            num_classes=21,
            multi_grid=None,
            atrous_rates=(),
            output_stride=16,
        )
        source = "random mobilenet_v2"
    tile = (args.tile, args.tile) if args.side == "tiled" else None
    segmenter = serving.KerasSegmenter(
        model, options=InferenceOptions(tile_size=tile, tile_overlap=args.overlap)
    )
    # Warm up on a small image (traces the graph) so the timed call is the large one alone.
    segmenter(image[:97, :97])
    loaded = _rss_mib()
    start = time.perf_counter()
    labels = segmenter(image)
    seconds = time.perf_counter() - start
    np.save(args.output, labels.astype(np.uint8))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(
        json.dumps(
            {
                "side": args.side,
                "seconds": seconds,
                "peak_rss_mib": peak,
                "rss_after_load_mib": loaded,
                "model": source,
                "classes": sorted(np.unique(labels).tolist()),
            }
        )
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=os.path.join(REPO, "weights", "mnv2_pascal"))
    parser.add_argument(
        "--image",
        default=os.path.join(REPO, "..", "shared", "data", "camvid", "val", "0016E5_08119.png"),
    )
    parser.add_argument("--size", default="3000,4000", help="H,W of the test photo")
    parser.add_argument("--tile", type=int, default=513)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--side", choices=["whole", "tiled"], help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.size = tuple(int(v) for v in args.size.split(","))
    if args.side:
        _side(args)
        return
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for side in ("whole", "tiled"):
            output = os.path.join(folder, side + ".npy")
            command = [
                sys.executable,
                __file__,
                f"--side={side}",
                f"--output={output}",
                f"--checkpoint={args.checkpoint}",
                f"--image={args.image}",
                f"--size={args.size[0]},{args.size[1]}",
                f"--tile={args.tile}",
                f"--overlap={args.overlap}",
            ]
            run = subprocess.run(command, capture_output=True, text=True, check=False)
            lines = [l for l in run.stdout.splitlines() if l.startswith("{")]
            if run.returncode or not lines:
                print(f"{side}: failed (exit {run.returncode}): {run.stderr.strip()[-500:]}")
                continue
            results[side] = json.loads(lines[-1])
            results[side]["labels"] = np.load(output)
    print(
        f"{args.size[0]}x{args.size[1]} photo ({os.path.basename(args.image)} resized), model "
        f"{next(iter(results.values()))['model'] if results else '?'}, tile {args.tile}, "
        f"overlap {args.overlap}"
    )
    for side, result in results.items():
        print(
            f"{side:<6} {result['seconds']:8.1f} s   peak RSS {result['peak_rss_mib']:8.0f} MiB"
            f"   RSS after load {result['rss_after_load_mib']:6.0f} MiB   classes "
            f"{result['classes']}"
        )
    if len(results) == 2:
        whole, tiled = results["whole"], results["tiled"]
        agreement = float(np.mean(whole["labels"] == tiled["labels"]))
        print(
            f"tiled / whole: time {tiled['seconds'] / whole['seconds']:.2f}x, peak RSS "
            f"{tiled['peak_rss_mib'] / whole['peak_rss_mib']:.2f}x; same class on "
            f"{100 * agreement:.2f}% of pixels"
        )


if __name__ == "__main__":
    main()
