"""Multi-scale + flip evaluation cost vs the sum of its single passes (issue 7).

    .venv/bin/python benchmarks/multiscale_cost.py --size 321 --rounds 2

ResNet-101 DeepLabv3 at OS 16 (random weights, BN folded as deeplab.evaluate runs it), one image,
deeplab.evaluation.evaluator.Predictor (one dynamic-shape tf.function for the network): the 6 paper
scales x 2 flips in one call, against each (scale, flip) pass run alone, alternated; wall and
process CPU seconds.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--size", type=int, default=321)
parser.add_argument("--rounds", type=int, default=2)
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()

import deeplab  # noqa: E402  first: keeps JAX out of the TensorFlow import (deeplab/_jax_guard.py)

# isort: split
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(args.threads)
tf.config.threading.set_inter_op_parallelism_threads(args.threads)

import keras  # noqa: E402

from deeplab.common.inference_options import InferenceOptions
from deeplab.evaluation import evaluator as evaluation  # noqa: E402
from deeplab.evaluation import inference
from deeplab.model import fuse

keras.utils.set_random_seed(0)
model = fuse.fuse_batch_norm(
    deeplab.build_model(backbone="resnet101", num_classes=21, output_stride=16)
)
image = tf.constant(np.random.default_rng(0).uniform(-1, 1, (args.size, args.size, 3)), tf.float32)
full = evaluation.Predictor(
    model, options=InferenceOptions(scales=inference.PAPER_EVAL_SCALES, flip=True)
)
singles = [
    (evaluation.Predictor(model, options=InferenceOptions(scales=(s,))), flip)
    for s in inference.PAPER_EVAL_SCALES
    for flip in (False, True)
]


def run_full():
    full.probabilities(image).numpy()


def run_singles():
    for predictor, flip in singles:
        predictor.probabilities(image[:, ::-1] if flip else image).numpy()


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


run_full()
run_singles()  # warm-up: traces and oneDNN primitives for every size
results = {"6 scales x 2 flips, one call": [], "sum of the 12 single passes": []}
for _ in range(args.rounds):
    results["6 scales x 2 flips, one call"].append(timed(run_full))
    results["sum of the 12 single passes"].append(timed(run_singles))
print(f"size {args.size}, {args.threads} threads, load {os.getloadavg()[0]:.1f}")
for name, values in results.items():
    walls, cpus = zip(*values)
    print(
        f"  {name:30s} wall median {np.median(walls):.2f} s, CPU median {np.median(cpus):.2f} s"
        f"  (wall {[round(w, 2) for w in walls]})"
    )
