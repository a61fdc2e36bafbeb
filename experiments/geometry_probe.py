"""Where does a feature land in the upsampled logits? Measures the geometry of issue 17.

Two probes, each run for three upsamplers of the *same* feature-resolution logits (the model
built with ``upsample_logits=False``):

* ``half_pixel``: ``tf.image.resize`` (align_corners=False), what the model used before issue 17;
* ``corner``: ``align_corners=True``, the authors' TF1 resize;
* ``stride``: ``deeplab.model.layers.stride_upsample``, what the model uses now.

1. **exact**: weights that pass an impulse through unchanged (tests/test_geometry.py's
   ``impulse_weights``); an impulse on the stride-32 grid comes out as a tent whose centroid is
   compared with the impulse's pixel, per input size, output stride and position (columns).
2. **random**: random tiny models (``--models`` of them); for impulses on a 128x128 input, the
   centroid of |logits(with impulse) - logits(without)| (whole map) at OS 16 minus that at OS 8,
   same weights; mean and standard error over models and impulses. It should be 0.

    python experiments/geometry_probe.py            # ~1 minute on 2 cores
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import deeplab  # noqa: E402  (before TensorFlow)

# isort: split
import tensorflow as tf  # noqa: E402

from deeplab.model import layers  # noqa: E402
from test_geometry import centroid  # noqa: E402
from test_geometry import impulse_weights  # noqa: E402


def upsample(logits, size, stride, method):
    if method == "half_pixel":
        return tf.image.resize(logits, size).numpy()
    if method == "corner":
        return tf.compat.v1.image.resize_bilinear(logits, size, align_corners=True).numpy()
    return np.asarray(layers.stride_upsample(logits, size, stride))


METHODS = ("half_pixel", "corner", "stride")


def map_centroid(weights):
    """(y, x) centroid of a nonnegative [H, W] map (the whole map)."""
    ys, xs = np.mgrid[: weights.shape[0], : weights.shape[1]]
    return (ys * weights).sum() / weights.sum(), (xs * weights).sum() / weights.sum()


def exact_probe():
    print("exact geometry: x-offset of the impulse's centroid (px), impulses at x = 32 k")
    print(f"{'size':>9} {'OS':>3} {'x':>4}  " + "  ".join(f"{m:>10}" for m in METHODS))
    for size in ((256, 256), (513, 513), (769, 769), (360, 480)):
        for stride in (8, 16):
            model = impulse_weights(
                deeplab.build_model(
                    backbone="resnet14_tiny",
                    num_classes=2,
                    output_stride=stride,
                    weight_decay=0.0,
                    upsample_logits=False,
                )
            )
            last = (size[1] - 1) // 32 * 32
            columns = [x for x in (64, size[1] // 2 // 32 * 32, last - 64) if 32 <= x <= last - 32]
            for x in sorted(set(columns)):
                image = np.zeros((1,) + size + (3,), np.float32)
                y = size[0] // 2 // 32 * 32
                image[0, y, x, 0] = 100.0
                logits = model(image, training=False)
                offsets = []
                for method in METHODS:
                    response = np.clip(upsample(logits, size, stride, method)[0, :, :, 0], 0, None)
                    offsets.append(centroid(response)[1] - x)
                print(
                    f"{size[0]:>4}x{size[1]:<4} {stride:>3} {x:>4}  "
                    + "  ".join(f"{o:>+10.2f}" for o in offsets)
                )


def random_probe(num_models):
    size, points = (128, 128), [(32, 32), (32, 96), (96, 32), (64, 64), (96, 96)]
    shifts = {m: [] for m in METHODS}
    for seed in range(num_models):
        keras_seed = 1000 + seed
        deeplab_model = {}
        for stride in (8, 16):
            tf.keras.utils.set_random_seed(keras_seed)
            deeplab_model[stride] = deeplab.build_model(
                backbone="resnet14_tiny",
                num_classes=4,
                output_stride=stride,
                aspp_filters=16,
                atrous_rates=(2, 4, 6),
                upsample_logits=False,
            )
        deeplab_model[8].set_weights(deeplab_model[16].get_weights())
        base = np.random.default_rng(seed).normal(0, 1, (1,) + size + (3,)).astype(np.float32)
        for point in points:
            probe = base.copy()
            probe[0, point[0], point[1], :] += 30.0
            for method in METHODS:
                centres = {}
                for stride, model in deeplab_model.items():
                    change = upsample(
                        model(probe, training=False), size, stride, method
                    ) - upsample(model(base, training=False), size, stride, method)
                    centres[stride] = np.array(map_centroid(np.abs(change).sum(-1)[0]))
                shifts[method].append(centres[16] - centres[8])
    print(
        f"\nrandom tiny models ({num_models} x {len(points)} impulses, 128x128): centroid at OS 16 "
        "minus OS 8 (px), mean +- standard error"
    )
    for method in METHODS:
        values = np.array(shifts[method])
        mean, se = values.mean(0), values.std(0, ddof=1) / np.sqrt(len(values))
        print(f"  {method:>10}: y {mean[0]:+.2f} +- {se[0]:.2f}   x {mean[1]:+.2f} +- {se[1]:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=10, help="random models for probe 2")
    args = parser.parse_args()
    exact_probe()
    random_probe(args.models)


if __name__ == "__main__":
    main()
