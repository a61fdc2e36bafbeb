"""One atrous 3x3 convolution of DeepLabv3 four ways, alternated in one process (issue 7).

    .venv/bin/python benchmarks/atrous_conv.py 33 1         # inference shapes at 513, OS 16
    .venv/bin/python benchmarks/atrous_conv.py 21 2 grad    # training shapes at 321, batch 2

s2b_tf: tf.nn.convolution (what keras.ops.conv runs: SpaceToBatchND + Conv2D + BatchToSpaceND);
native: tf.nn.conv2d with dilations (oneDNN; what deeplab.model.layers.AtrousConv2D runs);
manual_s2b: pad + reshape/transpose space-to-batch around a plain conv;
im2col: 9 shifted copies concatenated, one 1x1 conv; shiftsum: 9 shifted 1x1 convs summed.
Shapes: block4's 512->512 at rates 2, 4, 8 and ASPP's 2048->256 at 6, 12, 18.
"""

import os
import sys
import time

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np
import tensorflow as tf

tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(2)
hw = int(sys.argv[1]) if len(sys.argv) > 1 else 33
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 1
grad = len(sys.argv) > 3
cases = [
    (512, 512, 2),
    (512, 512, 4),
    (512, 512, 8),
    (2048, 256, 6),
    (2048, 256, 12),
    (2048, 256, 18),
]


def s2b_conv(x, w, r):
    # manual space-to-batch with keras-style ops (pad, reshape, transpose)
    n, h, wd, c = x.shape
    ph, pw = -h % r, -wd % r
    xp = tf.pad(x, [[0, 0], [0, ph], [0, pw], [0, 0]])
    H, W = (h + ph) // r, (wd + pw) // r
    xs = tf.reshape(xp, [n, H, r, W, r, c])
    xs = tf.transpose(xs, [2, 4, 0, 1, 3, 5])
    xs = tf.reshape(xs, [r * r * n, H, W, c])
    y = tf.nn.conv2d(xs, w, 1, "SAME")
    co = y.shape[-1]
    y = tf.reshape(y, [r, r, n, H, W, co])
    y = tf.transpose(y, [2, 3, 0, 4, 1, 5])
    y = tf.reshape(y, [n, H * r, W * r, co])
    return y[:, :h, :wd, :]


def im2col(x, w, r):
    n, h, wd, c = x.shape
    xp = tf.pad(x, [[0, 0], [r, r], [r, r], [0, 0]])
    cols = [xp[:, i * r : i * r + h, j * r : j * r + wd, :] for i in range(3) for j in range(3)]
    xc = tf.concat(cols, axis=-1)
    return tf.nn.conv2d(xc, tf.reshape(w, [1, 1, 9 * c, w.shape[-1]]), 1, "VALID")


def shiftsum(x, w, r):
    n, h, wd, c = x.shape
    xp = tf.pad(x, [[0, 0], [r, r], [r, r], [0, 0]])
    y = 0
    for i in range(3):
        for j in range(3):
            y = y + tf.nn.conv2d(
                xp[:, i * r : i * r + h, j * r : j * r + wd, :], w[i : i + 1, j : j + 1], 1, "VALID"
            )
    return y


variants = {
    "im2col": im2col,
    "shiftsum": shiftsum,
    "s2b_tf": lambda x, w, r: tf.nn.convolution(x, w, 1, "SAME", dilations=r),
    "native": lambda x, w, r: tf.nn.conv2d(x, w, 1, "SAME", dilations=r),
    "manual_s2b": s2b_conv,
}
for cin, cout, r in cases:
    x = tf.constant(np.random.randn(batch, hw, hw, cin).astype("float32"))
    w = tf.Variable(np.random.randn(3, 3, cin, cout).astype("float32") * 0.01)
    fns = {}
    for k, v in variants.items():
        if grad:

            def mk(v=v):
                @tf.function
                def f():
                    with tf.GradientTape() as t:
                        t.watch(x)
                        y = v(x, w, r)
                        l = tf.reduce_sum(y * y)
                    return t.gradient(l, [x, w])

                return f

            fns[k] = mk()
        else:
            fns[k] = tf.function(lambda v=v: v(x, w, r))
    ref = fns["s2b_tf"]()
    times = {k: [] for k in fns}
    for k, f in fns.items():
        try:
            out = f()
            f()
            d = max(
                float(tf.reduce_max(tf.abs(a - b)))
                for a, b in zip(tf.nest.flatten(out), tf.nest.flatten(ref))
            )
        except Exception as e:
            print(k, "FAILED", str(e)[:200])
            times[k] = None
            continue
        scale = max(float(tf.reduce_max(tf.abs(b))) for b in tf.nest.flatten(ref))
        if d > 1e-3 * scale:  # a variant that computes something else is not timed
            print(k, f"WRONG RESULT: max|diff| vs s2b_tf {d:.2e} (max|ref| {scale:.2e})")
            times[k] = None
            continue
        print(k, f"max|diff| vs s2b_tf {d:.2e}")
    for rep in range(5):
        for k, f in fns.items():
            if times[k] is None:
                continue
            t0 = time.perf_counter()
            tf.nest.map_structure(lambda t: t.numpy(), f())
            times[k].append(time.perf_counter() - t0)
    flops = 2 * 9 * cin * cout * hw * hw * batch * (3 if grad else 1)
    print(
        f"hw {hw} b{batch} {cin}->{cout} r{r} grad={grad}: "
        + ", ".join(
            f"{k} {1e3 * np.median(t):.1f} ms ({flops / np.median(t) / 1e9:.0f} GF/s)"
            for k, t in times.items()
            if t
        )
    )
