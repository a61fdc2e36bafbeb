"""In-process A/B of variants of our model, calls alternated (robust to load drift). Issue 7.

    .venv/bin/python benchmarks/ab_ours.py --variants s2b,native,native_fused,bf16,bf16_fused
    .venv/bin/python benchmarks/ab_ours.py --task train --size 321 --batch 2 --variants s2b,native

Variants (ResNet-101 DeepLabv3, OS --os, random weights, 2 threads):
  s2b          atrous convs through keras.ops.conv (TensorFlow's SpaceToBatchND path): the model
               built with PerformanceOptions(native_dilation=False), same weights
  native       atrous convs as native dilated oneDNN convs (deeplab.model.layers.AtrousConv2D,
               default)
  *_fused      BN folded into the convolutions (deeplab.model.fuse.fuse_batch_norm), inference only
  bf16*        mixed_bfloat16 policy, same weights (inference)

Every variant is traced and warmed up first, then the variants are called in turn --rounds
times; prints wall and process-CPU medians (CPU time is the steadier figure when other jobs
share the cores) and, for inference, the logits difference and argmax agreement with the first.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
p = argparse.ArgumentParser()
p.add_argument("--task", default="infer")
p.add_argument("--size", type=int, default=513)
p.add_argument("--batch", type=int, default=1)
p.add_argument("--os", type=int, default=16)
p.add_argument("--variants", default="s2b,native,native_fused")
p.add_argument("--rounds", type=int, default=5)
a = p.parse_args()
import deeplab  # first: keeps JAX out of the TensorFlow import (deeplab/_jax_guard.py)

# isort: split
import numpy as np
import tensorflow as tf

tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(2)
import keras

from deeplab.model import fuse
from deeplab.model.options import PerformanceOptions
from deeplab.training import weight_decay

keras.utils.set_random_seed(0)
model = deeplab.build_model(backbone="resnet101", num_classes=21, output_stride=a.os)
rng = np.random.default_rng(0)
x = tf.constant(rng.uniform(-1, 1, (a.batch, a.size, a.size, 3)).astype("float32"))
y = tf.constant(rng.integers(0, 21, (a.batch, a.size, a.size)).astype("int32"))
fns = {}
built = {}  # (policy, native_dilation) -> model with model's weights


def variant_model(policy, native_dilation):
    """``model``'s weights in a model built under ``policy`` with these performance options."""
    key = (policy, native_dilation)
    if key not in built:
        if key == ("float32", None):
            built[key] = model
        else:
            keras.config.set_dtype_policy(policy)
            built[key] = deeplab.build_model(
                backbone="resnet101",
                num_classes=21,
                output_stride=a.os,
                performance=PerformanceOptions(native_dilation=native_dilation),
            )
            keras.config.set_dtype_policy("float32")
            built[key].set_weights(model.get_weights())
    return built[key]


folded = {}
for v in a.variants.split(","):
    key = ("mixed_bfloat16" if "bf16" in v else "float32", False if v.startswith("s2b") else None)
    m = variant_model(*key)
    if "fused" in v:  # the folded model keeps the convolutions' native_dilation
        folded[key] = folded.get(key) or fuse.fuse_batch_norm(m)
        m = folded[key]
    if a.task == "infer":
        f = tf.function(lambda i, m=m: tf.cast(m(i, training=False), tf.float32))
        run = lambda f=f: f(x).numpy()
    else:
        opt = keras.optimizers.SGD(0.007, momentum=0.9)
        opt.build(m.trainable_variables)
        lf = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)

        def mk(m=m, opt=opt):
            decay = weight_decay.decay_coefficients(m)  # as deeplab.train: decay added late

            @tf.function
            def step(i, l):
                with tf.GradientTape() as t:
                    ce = lf(l, m(i, training=True))
                g = weight_decay.add_decay_gradients(
                    t.gradient(ce, m.trainable_variables), m.trainable_variables, decay
                )
                opt.apply_gradients(zip(g, m.trainable_variables))
                return ce + weight_decay.split_losses(m, decay)[1]

            return step

        step = mk()
        run = lambda step=step: float(step(x, y))
    t0 = time.perf_counter()
    run()
    run()
    print(f"{v}: warm-up {time.perf_counter() - t0:.1f} s", flush=True)
    fns[v] = (run, f if a.task == "infer" else None)
if a.task == "infer":
    ref = fns[list(fns)[0]][1](x).numpy()
    for v, (_, f) in fns.items():
        o = f(x).numpy()
        print(
            f"{v}: max|diff| vs {list(fns)[0]} {np.abs(o - ref).max():.2e} "
            f"(max|logit| {np.abs(ref).max():.2e}), "
            f"argmax agree {np.mean(o.argmax(-1) == ref.argmax(-1)) * 100:.2f}%"
        )
times = {v: [] for v in fns}
cpu = {v: [] for v in fns}
for r in range(a.rounds):
    for v, (run, _) in fns.items():
        t0 = time.perf_counter()
        c0 = time.process_time()
        run()
        times[v].append(time.perf_counter() - t0)
        cpu[v].append(time.process_time() - c0)
print(f"load {os.getloadavg()[0]:.1f}; task {a.task} size {a.size} batch {a.batch} OS {a.os}")
b = np.median(times[list(fns)[0]])
bc = np.median(cpu[list(fns)[0]])
for v, t in times.items():
    print(
        f"  {v:22s} wall median {np.median(t):.3f} s ({np.median(t) / b:.2f}x)  "
        f"cpu median {np.median(cpu[v]):.3f} s ({np.median(cpu[v]) / bc:.2f}x)  "
        f"wall {[round(s, 2) for s in t]}"
    )
