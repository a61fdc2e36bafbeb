"""Standard-library helpers shared by the benchmark runners and benchmarks/speed.py.

Every runner (run_ours.py, run_torchvision.py, run_modelgarden.py, run_matmul.py) runs in its own
process and virtualenv, imports only this module from the repository, and prints exactly one
line ``BENCH_JSON {...}`` on stdout. ``parse_result`` reads that line back in speed.py.

Nothing here imports a framework, so the tests can check it cheaply.
"""

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

PROTOCOL_PREFIX = "BENCH_JSON "

# The model every side benchmarks (issue 7): DeepLabv3, ResNet-101 (v1 bottleneck: stride on the
# first 1x1), multi-grid (1, 2, 4), ASPP rates (6, 12, 18) at output stride 16 (doubled at 8),
# image pooling, 256-channel ASPP, 21 classes.
NUM_CLASSES = 21
ASPP_RATES_OS16 = (6, 12, 18)
MULTI_GRID = (1, 2, 4)
RESNET_UNITS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def aspp_rates(output_stride):
    """The paper's ASPP rates at ``output_stride`` (stated for 16, doubled at 8, Sec. 3.3)."""
    return tuple(r * 16 // output_stride for r in ASPP_RATES_OS16)


# --------------------------------------------------------------------------- FLOPs


def conv_flops(k, cin, cout, hout, wout, batch=1):
    """FLOPs of one convolution: 2 * k * k * Cin * Cout * Hout * Wout per image."""
    return 2 * k * k * cin * cout * hout * wout * batch


def _strided(size, stride):
    """Output size of a 'same'-padded convolution or pooling (also PyTorch's k//2 padding)."""
    return -(-size // stride)


def deeplabv3_conv_flops(size=513, output_stride=16, depth=101, num_classes=NUM_CLASSES,
                         aspp_filters=256, batch=1, stride_on_3x3=False, extra_head_conv=False):
    """Analytic conv FLOPs of DeepLabv3 (ResNet + ASPP with image pooling) for a square input.

    Counts every convolution (stem, bottlenecks, projection shortcuts, ASPP branches, image
    pooling 1x1, ASPP projection, logits), not BN, ReLU, pooling or resizing. Atrous rates do
    not change FLOPs. ``stride_on_3x3`` models ResNet v1.5 (torchvision), where the strided
    unit's first 1x1 runs at the input resolution; ``extra_head_conv`` adds torchvision's 3x3
    256->256 head conv.

    Returns:
      FLOPs for ``batch`` images (an int).
    """
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    total = 0
    hw = _strided(size, 2)  # 7x7 stride-2 stem
    total += conv_flops(7, 3, 64, hw, hw)
    hw = _strided(hw, 2)  # 3x3 stride-2 max pool
    cin = 64
    current_stride = 4
    for block, units in enumerate(RESNET_UNITS[depth]):
        filters = 64 * 2 ** block
        stride = 2 if block > 0 and current_stride < output_stride else 1
        current_stride *= stride
        for unit in range(units):
            s = stride if unit == 0 else 1
            hw_in, hw_out = hw, _strided(hw, s)
            if unit == 0:  # projection shortcut
                total += conv_flops(1, cin, 4 * filters, hw_out, hw_out)
            hw_1x1 = hw_in if stride_on_3x3 else hw_out
            total += conv_flops(1, cin, filters, hw_1x1, hw_1x1)
            total += conv_flops(3, filters, filters, hw_out, hw_out)
            total += conv_flops(1, filters, 4 * filters, hw_out, hw_out)
            cin, hw = 4 * filters, hw_out
    # ASPP: one 1x1 and three 3x3 branches at feature resolution, image pooling 1x1 at 1x1,
    # then a 1x1 projection of the 5 concatenated branches.
    total += conv_flops(1, cin, aspp_filters, hw, hw)
    total += 3 * conv_flops(3, cin, aspp_filters, hw, hw)
    total += conv_flops(1, cin, aspp_filters, 1, 1)
    total += conv_flops(1, 5 * aspp_filters, aspp_filters, hw, hw)
    if extra_head_conv:
        total += conv_flops(3, aspp_filters, aspp_filters, hw, hw)
    total += conv_flops(1, aspp_filters, num_classes, hw, hw)
    return total * batch


def training_flops(forward_flops):
    """Conv FLOPs of one training step: forward + gradient w.r.t. inputs + w.r.t. weights (3x)."""
    return 3 * forward_flops


# --------------------------------------------------------------------------- timing


def median(values):
    """Median of a non-empty sequence of numbers."""
    values = list(values)
    if not values:
        raise ValueError("median of no values")
    return statistics.median(values)


def time_calls(fn, warmup, repeats, clock=time.perf_counter):
    """Calls ``fn`` ``warmup`` times untimed, then ``repeats`` times; returns the seconds of each.

    ``fn`` must block until its work is done (fetch the result to host memory).
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = clock()
        fn()
        seconds.append(clock() - start)
    return seconds


def current_rss_mb():
    """Resident set size of this process now, in MiB (Linux ``/proc/self/status``; NaN elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def peak_rss_mb():
    """Peak resident set size of this process so far, in MiB (ru_maxrss is KiB on Linux)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":  # bytes there
        kib /= 1024
    return kib / 1024.0


# --------------------------------------------------------------------------- protocol


def emit(result):
    """Prints the one result line of a runner (flushes, so a later crash cannot lose it)."""
    line = PROTOCOL_PREFIX + json.dumps(result, sort_keys=True, allow_nan=False)
    print(line, flush=True)


def parse_result(stdout):
    """The result dict of a runner's stdout: its last ``BENCH_JSON`` line.

    Raises:
      ValueError: no such line, or it is not a JSON object.
    """
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith(PROTOCOL_PREFIX):
            result = json.loads(line[len(PROTOCOL_PREFIX):])
            if not isinstance(result, dict):
                raise ValueError(f"result line is not a JSON object: {line[:200]}")
            return result
    raise ValueError("no line starting with " + repr(PROTOCOL_PREFIX.strip()) + " in runner output")


def prepare_args(description, argv=None):
    """Arguments of the serving artefact makers (prepare_serving_*.py, benchmarks/serving.py)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--artifacts", required=True, help="folder for the artefacts")
    parser.add_argument("--size", type=int, default=513, help="square input side")
    parser.add_argument("--calibration", type=int, default=4, help="int8 calibration images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.makedirs(args.artifacts, exist_ok=True)
    return args


def runner_args(argv=None, description=None, add_arguments=None):
    """The command line every model runner accepts (speed.py passes the same to each side).

    ``add_arguments(parser)``, if given, adds a runner's own options.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--task", choices=("infer", "train"), required=True)
    parser.add_argument("--output-stride", type=int, default=16, choices=(8, 16))
    parser.add_argument("--size", type=int, default=513, help="square input side")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="inference compute type; bfloat16 also reports argmax agreement "
                             "with float32 on the same weights and input")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--xla", action="store_true", help="TensorFlow sides: jit_compile=True")
    parser.add_argument("--count-flops", action="store_true",
                        help="also count this model's conv FLOPs from its graph (slower start)")
    if add_arguments is not None:
        add_arguments(parser)
    return parser.parse_args(argv)


def seeded_inputs(batch, size, num_classes, seed, ignore_label=255):
    """The same inputs on every side: numpy's PCG64 stream, stable across numpy versions.

    Returns:
      (images, labels): float32 NHWC in [-1, 1) (the normalized-image range) and int32 NHW in
      [0, num_classes) with about 5% ``ignore_label``.
    """
    import numpy as np  # pylint: disable=import-outside-toplevel
    rng = np.random.Generator(np.random.PCG64(seed))
    images = rng.uniform(-1.0, 1.0, size=(batch, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, num_classes, size=(batch, size, size), dtype=np.int32)
    labels[rng.random(size=labels.shape) < 0.05] = ignore_label
    return images, labels


def argmax_agreement(logits_a, logits_b, channel_axis=-1):
    """Fraction of pixels whose argmax class is the same in two numpy logit arrays."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    a = np.argmax(np.asarray(logits_a, dtype=np.float32), axis=channel_axis)
    b = np.argmax(np.asarray(logits_b, dtype=np.float32), axis=channel_axis)
    return float(np.mean(a == b))


def tf_graph_conv_flops(graph):
    """Conv FLOPs of a TensorFlow graph (2*k*k*Cin*Cout*Hout*Wout*N for each Conv2D op).

    Walks ``graph`` and the function graphs nested in it; needs static shapes (trace with a
    fully defined TensorSpec). A dilated convolution that TensorFlow lowers to
    SpaceToBatchND + Conv2D + BatchToSpaceND is counted at its padded size, i.e. as executed.

    Returns:
      (conv FLOPs, number of SpaceToBatchND ops).
    """
    total = 0
    space_to_batch = 0
    seen = set()

    def walk(g):
        nonlocal total, space_to_batch
        for op in g.get_operations():
            space_to_batch += op.type == "SpaceToBatchND"
            if op.type in ("Conv2D", "_FusedConv2D"):
                k_h, k_w, cin, cout = op.inputs[1].shape.as_list()
                n, h, w, _ = op.outputs[0].shape.as_list()
                total += 2 * k_h * k_w * cin * cout * n * h * w
            for attr in ("f", "then_branch", "else_branch", "body", "cond"):
                try:
                    fn = op.get_attr(attr)
                except (ValueError, TypeError):
                    continue
                name = getattr(fn, "name", None)
                if name and name not in seen and g._get_function(name) is not None:  # pylint: disable=protected-access
                    seen.add(name)
                    walk(g._get_function(name).graph)  # pylint: disable=protected-access

    walk(graph)
    return total, space_to_batch


def base_result(args, side, **extra):
    """The fields every runner's result starts with."""
    result = {
        "side": side,
        "task": args.task,
        "output_stride": args.output_stride,
        "size": args.size,
        "batch": args.batch,
        "threads": args.threads,
        "dtype": args.dtype,
        "xla": bool(args.xla),
        "paper_conv_gflops": deeplabv3_conv_flops(args.size, args.output_stride,
                                                  batch=args.batch) / 1e9,
    }
    result.update(extra)
    return result


def finite(x):
    """``x`` as a float, or None when it is not finite (JSON has no NaN)."""
    x = float(x)
    return x if math.isfinite(x) else None
