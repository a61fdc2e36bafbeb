"""Matrix-multiply peak of this CPU at the benchmark's thread count, float32 and bfloat16.

Runs under TensorFlow (our .venv or peers/modelgarden) or PyTorch (peers/torch), whichever
``--framework`` names; speed.py takes the best of them as the peak that achieved conv GFLOP/s is
compared with. Each timed call is one N x N by N x N product (2 * N**3 FLOPs).

Prints one ``BENCH_JSON`` line (see common.py).
"""

import argparse
import os

import common


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--framework", choices=("tensorflow", "torch"), required=True)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    return parser.parse_args()


def tensorflow_products(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    products = {}
    for dtype in ("float32", "bfloat16"):
        a = tf.random.stateless_uniform((args.n, args.n), seed=(1, 2), dtype=tf.float32)
        b = tf.random.stateless_uniform((args.n, args.n), seed=(3, 4), dtype=tf.float32)
        a, b = tf.cast(a, dtype), tf.cast(b, dtype)
        matmul = tf.function(tf.linalg.matmul)
        # Reduce to a scalar on the device side so the timing is the product, not a copy.
        products[dtype] = lambda m=matmul, a=a, b=b: float(tf.reduce_sum(m(a, b)[:1, :1]))
    return {"tensorflow": tf.__version__}, products


def torch_products(args):
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    products = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.rand(args.n, args.n, generator=generator).to(dtype)
        b = torch.rand(args.n, args.n, generator=generator).to(dtype)

        def product(a=a, b=b):
            with torch.inference_mode():
                return float(torch.mm(a, b)[0, 0])

        products[str(dtype).replace("torch.", "")] = product
    return {"torch": torch.__version__}, products


def main():
    args = parse_args()
    versions, products = (tensorflow_products if args.framework == "tensorflow"
                          else torch_products)(args)
    flops = 2 * args.n ** 3
    result = {"side": "matmul", "framework": args.framework, "n": args.n,
              "threads": args.threads, "versions": versions}
    for dtype, product in products.items():
        seconds = common.time_calls(product, args.warmup, args.repeats)
        result[f"{dtype}_gflops_per_s"] = flops / common.median(seconds) / 1e9
        result[f"{dtype}_seconds"] = seconds
    common.emit(result)


if __name__ == "__main__":
    main()
