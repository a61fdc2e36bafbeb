r"""GPU throughput: our Keras model on the JAX backend vs torchvision, on the same GPU.

Issue 7's GPU half. Each side runs in its own process (JAX and PyTorch each take the GPU's
memory), one after the other, and prints one JSON line:

    python benchmarks/gpu_speed.py --side=peak      # bf16 matmul peak (PyTorch, 8192^3)
    KERAS_BACKEND=jax python benchmarks/gpu_speed.py --side=ours
    python benchmarks/gpu_speed.py --side=torchvision
    python benchmarks/gpu_speed.py --side=all       # the three above, then a table

Model: ResNet-101, output stride 16, ASPP (6, 12, 18) + image pooling, 21 classes, random
weights, 513x513 inputs. Training: batch 16, SGD momentum 0.9, cross-entropy with ignore label
255 on upsampled logits, bf16 compute (Keras "mixed_bfloat16" / torch.autocast bf16). Inference:
batch 16, argmax kept on the GPU. torchvision runs channels_last + torch.compile, its best
mode; its head matches the paper (ASPP + 1x1 logits: the extra 3x3 conv of torchvision's
DeepLabHead is left out) and it has no multi-grid (block4 rates 2, 2, 2 instead of 2, 4, 8:
the same FLOPs).

Model FLOP utilization = 3 x forward FLOPs x images/s / measured bf16 matmul peak (backward
~ 2x forward). Forward FLOPs: --forward_gflops, default the conv count that
`python -m deeplab.describe --crop_size=513` prints for this model (140.5 GFLOPs per image).
XLA's own cost analysis is printed too, but on GPUs it misses the cuDNN convolutions.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 21


def _timed(fn, warmup, iters, sync):
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_peak(args):
    import torch  # pylint: disable=import-outside-toplevel

    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    seconds = _timed(lambda: a @ b, 3, 10, torch.cuda.synchronize)
    return {
        "side": "peak",
        "bf16_matmul_tflops": 2 * n**3 / seconds / 1e12,
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
    }


def run_ours(args):
    os.environ.setdefault("KERAS_BACKEND", "jax")
    sys.path.insert(0, REPO)
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    import keras  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel

    import deeplab  # pylint: disable=import-outside-toplevel

    assert keras.backend.backend() == "jax"
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = deeplab.build_model(
        backbone="resnet101",
        num_classes=NUM_CLASSES,
        output_stride=16,
        multi_grid=(1, 2, 4),
        atrous_rates=(6, 12, 18),
        image_pooling=True,
    )
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(0, 50, (args.batch, args.size, args.size, 3)).astype("float32"))
    y = jnp.asarray(
        rng.integers(0, NUM_CLASSES, (args.batch, args.size, args.size)).astype("int32")
    )
    optimizer = keras.optimizers.SGD(learning_rate=0.007, momentum=0.9)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)

    def compute_loss(trainable, non_trainable, images, labels):
        logits, non_trainable, losses = model.stateless_call(
            trainable, non_trainable, images, training=True, return_losses=True
        )
        return loss_fn(labels, logits) + sum(losses), non_trainable

    grad_fn = jax.value_and_grad(compute_loss, has_aux=True)

    @jax.jit
    def train_step(state, images, labels):
        trainable, non_trainable, opt_vars = state
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, images, labels)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return (trainable, non_trainable, opt_vars), loss

    @jax.jit
    def predict(trainable, non_trainable, images):
        logits, _ = model.stateless_call(trainable, non_trainable, images, training=False)
        return jnp.argmax(logits, axis=-1)

    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]
    ov = [v.value for v in optimizer.variables]
    state = [(tv, ntv, ov)]
    losses = []

    def step():
        state[0], loss = train_step(state[0], x, y)
        losses.append(loss)

    start = time.perf_counter()
    step()
    jax.block_until_ready(losses[-1])
    compile_s = time.perf_counter() - start
    train_s = _timed(step, 2, args.iters, lambda: jax.block_until_ready(losses[-1]))
    out = [None]

    def infer():
        out[0] = predict(tv, ntv, x)

    infer_s = _timed(infer, 2, args.iters, lambda: jax.block_until_ready(out[0]))
    one = x[:1]
    forward_flops = predict.lower(tv, ntv, one).compile().cost_analysis()
    forward_flops = forward_flops[0] if isinstance(forward_flops, list) else forward_flops
    return {
        "side": "ours (Keras 3 / JAX, mixed_bfloat16, XLA)",
        "train_images_per_s": args.batch / train_s,
        "infer_images_per_s": args.batch / infer_s,
        "train_step_s": train_s,
        "compile_s": compile_s,
        "xla_forward_gflops_per_image": float(forward_flops.get("flops", 0.0)) / 1e9,
        "final_loss": float(losses[-1]),
        "keras": keras.__version__,
        "jax": jax.__version__,
    }


def run_torchvision(args):
    import torch  # pylint: disable=import-outside-toplevel
    import torchvision  # pylint: disable=import-outside-toplevel
    from torch import nn  # pylint: disable=import-outside-toplevel
    from torchvision.models import resnet101  # pylint: disable=import-outside-toplevel
    from torchvision.models._utils import IntermediateLayerGetter  # pylint: disable=import-outside-toplevel
    from torchvision.models.segmentation.deeplabv3 import ASPP  # pylint: disable=import-outside-toplevel
    from torchvision.models.segmentation.deeplabv3 import DeepLabV3  # pylint: disable=import-outside-toplevel

    torch.backends.cudnn.benchmark = True
    backbone = resnet101(weights=None, replace_stride_with_dilation=[False, False, True])
    model = (
        DeepLabV3(
            IntermediateLayerGetter(backbone, {"layer4": "out"}),
            nn.Sequential(ASPP(2048, [6, 12, 18]), nn.Conv2d(256, NUM_CLASSES, 1)),
            None,
        )
        .cuda()
        .to(memory_format=torch.channels_last)
    )
    compiled = torch.compile(model)
    gen = torch.Generator().manual_seed(0)
    x = (
        (torch.randn(args.batch, 3, args.size, args.size, generator=gen) * 50)
        .cuda()
        .to(memory_format=torch.channels_last)
    )
    y = torch.randint(0, NUM_CLASSES, (args.batch, args.size, args.size), generator=gen).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.007, momentum=0.9, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss(ignore_index=255)
    losses = []

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = compiled(x)["out"]
        loss = criterion(logits.float(), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())

    model.train()
    start = time.perf_counter()
    step()
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - start
    train_s = _timed(step, 2, args.iters, torch.cuda.synchronize)
    model.eval()
    out = [None]

    def infer():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            out[0] = compiled(x)["out"].argmax(1)

    infer_s = _timed(infer, 3, args.iters, torch.cuda.synchronize)
    return {
        "side": "torchvision (channels_last, bf16 autocast, torch.compile)",
        "train_images_per_s": args.batch / train_s,
        "infer_images_per_s": args.batch / infer_s,
        "train_step_s": train_s,
        "compile_s": compile_s,
        "final_loss": float(losses[-1]),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }


def run_all(args):
    results = {}
    for side in ("peak", "ours", "torchvision"):
        env = {**os.environ, "KERAS_BACKEND": "jax"}
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                f"--side={side}",
                f"--batch={args.batch}",
                f"--iters={args.iters}",
                f"--size={args.size}",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
        if proc.returncode or not lines:
            print(f"{side} failed:\n{proc.stderr[-4000:]}", file=sys.stderr)
            continue
        results[side] = json.loads(lines[-1])
    peak = results.get("peak", {}).get("bf16_matmul_tflops")
    flops = args.forward_gflops
    xla_flops = results.get("ours", {}).get("xla_forward_gflops_per_image")
    print(
        f"\nGPU: {results.get('peak', {}).get('device')}; bf16 matmul peak {peak:.0f} TFLOP/s"
        if peak
        else "no peak"
    )
    print(
        f"forward FLOPs per image: {flops:.1f} G (deeplab.describe conv count; XLA's cost "
        f"analysis says {xla_flops} G)"
    )
    print("| side | train img/s (batch 16, 513) | inference img/s | train MFU | compile s |")
    print("|---|---|---|---|---|")
    for side in ("ours", "torchvision"):
        r = results.get(side)
        if not r:
            continue
        mfu = (3 * flops * 1e9 * r["train_images_per_s"] / (peak * 1e12)) if (peak and flops) else 0
        print(
            f"| {r['side']} | {r['train_images_per_s']:.1f} | {r['infer_images_per_s']:.1f} | "
            f"{100 * mfu:.1f}% | {r['compile_s']:.0f} |"
        )
    if "ours" in results and "torchvision" in results:
        ours, theirs = results["ours"], results["torchvision"]
        print(
            "ratio ours/torchvision: train "
            f"{ours['train_images_per_s'] / theirs['train_images_per_s']:.2f}x"
            " images/s, inference "
            f"{ours['infer_images_per_s'] / theirs['infer_images_per_s']:.2f}x images/s"
        )
    print(json.dumps(results))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", choices=["peak", "ours", "torchvision", "all"], default="all")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--size", type=int, default=513, help="input height and width")
    parser.add_argument(
        "--forward_gflops",
        type=float,
        default=140.5,
        help="forward conv GFLOPs per image (python -m deeplab.describe)",
    )
    args = parser.parse_args()
    if args.side == "all":
        run_all(args)
        return
    result = {"peak": run_peak, "ours": run_ours, "torchvision": run_torchvision}[args.side](args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
