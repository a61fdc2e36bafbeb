"""Serving runners (issue 22): one exported model, loaded and called in a fresh process.

Every side takes the same input, uint8 pixels [1, H, W, 3] (a seeded image), and returns the
class map at the input size (with the softmax probabilities where the export computes them).
A side is what a user deploys on a CPU:

  ours_savedmodel_f32 / _bf16   tf.saved_model.load + the serving_default signature (.venv)
  ours_tflite_f32 / _int8       the standalone LiteRT interpreter (ai-edge-litert; XNNPACK)
  torch_eager                   torchvision's DeepLabV3 under torch.inference_mode (peers/torch)
  ort_f32 / ort_int8            that model exported to ONNX, run by ONNX Runtime (peers/torch)
  floor_tf / floor_litert / floor_torch / floor_ort
                                each runtime with a one-convolution model: its own footprint

Prints one ``BENCH_JSON`` line (see common.py): load seconds, RSS after load (before the first
call), the median latency of ``--repeats`` calls after ``--warmup``, and the peak RSS.
Imports only the runtime its side needs, so it runs in any of the three virtualenvs.
"""

import argparse
import os
import sys
import time

import common

SIDES = ("ours_savedmodel_f32", "ours_savedmodel_bf16", "ours_tflite_f32", "ours_tflite_int8",
         "ours_tflite_int8_qat", "torch_eager", "ort_f32", "ort_int8",
         "floor_tf", "floor_litert", "floor_torch", "floor_ort")
# Where each side's artefact lies under --artifacts (made by prepare_serving_*.py).
ARTIFACTS = {
    "ours_savedmodel_f32": "ours_savedmodel_f32", "ours_savedmodel_bf16": "ours_savedmodel_bf16",
    "ours_tflite_f32": "ours_f32.tflite", "ours_tflite_int8": "ours_int8.tflite",
    "ours_tflite_int8_qat": "ours_int8_qat.tflite",
    "torch_eager": "torchvision_state.pt", "ort_f32": "torchvision_f32.onnx",
    "ort_int8": "torchvision_int8.onnx", "floor_tf": "floor_savedmodel",
    "floor_litert": "floor.tflite", "floor_torch": None, "floor_ort": "floor.onnx",
}


rss_mb = common.current_rss_mb


def seeded_pixels(size, seed):
    import numpy as np  # pylint: disable=import-outside-toplevel
    rng = np.random.Generator(np.random.PCG64(seed))
    return rng.integers(0, 256, size=(1, size, size, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------- loaders
# Each returns (call, versions): call() runs one inference and returns the class map (numpy).


def _load_savedmodel(path, threads):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    serve = tf.saved_model.load(path).signatures["serving_default"]

    def call(pixels):
        return serve(images=tf.constant(pixels))["semantic"].numpy()
    return call, {"tensorflow": tf.__version__}


def _load_litert(path, threads):
    import numpy as np  # pylint: disable=import-outside-toplevel
    from ai_edge_litert import interpreter as litert  # pylint: disable=import-outside-toplevel
    import ai_edge_litert  # pylint: disable=import-outside-toplevel
    interp = litert.Interpreter(model_path=path, num_threads=threads)
    interp.allocate_tensors()
    source = interp.get_input_details()[0]
    outputs = interp.get_output_details()
    semantic = [o for o in outputs if o["shape"].size == 3 or "semantic" in o["name"]]
    target = (semantic or outputs)[-1]

    def call(pixels):
        interp.set_tensor(source["index"], pixels.astype(source["dtype"]))
        interp.invoke()
        value = interp.get_tensor(target["index"])
        return value if value.ndim == 3 else np.argmax(value, axis=-1)
    return call, {"ai_edge_litert": getattr(ai_edge_litert, "__version__", "?")}


def _load_torch(path, threads, output_stride=16):
    import torch  # pylint: disable=import-outside-toplevel
    import tv_model  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(threads)
    if path is None:  # the floor: one convolution
        module = torch.nn.Conv2d(3, 8, 3, padding=1).eval()

        def call(pixels):
            with torch.inference_mode():
                x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float()
                return module(x).argmax(1).numpy()
        return call, {"torch": torch.__version__}
    module = tv_model.served_model(output_stride)
    module.load_state_dict(torch.load(path, weights_only=True))
    module.eval()

    def call(pixels):
        with torch.inference_mode():
            return module(torch.from_numpy(pixels))[1].numpy()
    return call, {"torch": torch.__version__, "torchvision": tv_model.torchvision_version()}


def _load_ort(path, threads):
    import onnxruntime as ort  # pylint: disable=import-outside-toplevel
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    output = session.get_outputs()[-1].name

    def call(pixels):
        return session.run([output], {name: pixels})[0]
    return call, {"onnxruntime": ort.__version__}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", choices=SIDES, required=True)
    parser.add_argument("--artifacts", required=True, help="folder made by the prepare scripts")
    parser.add_argument("--size", type=int, default=513)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-output", default=None,
                        help="write the class map of the first call here (.npy)")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

    name = ARTIFACTS[args.side]
    path = os.path.join(args.artifacts, name) if name else None
    pixels = seeded_pixels(8 if args.side.startswith("floor") else args.size, args.seed)
    rss_start = rss_mb()
    start = time.perf_counter()
    if args.side.startswith("ours_savedmodel") or args.side == "floor_tf":
        call, versions = _load_savedmodel(path, args.threads)
    elif "tflite" in args.side or args.side == "floor_litert":
        call, versions = _load_litert(path, args.threads)
    elif args.side in ("torch_eager", "floor_torch"):
        call, versions = _load_torch(path, args.threads)
    else:
        call, versions = _load_ort(path, args.threads)
    load_s = time.perf_counter() - start
    rss_loaded = rss_mb()
    first = call(pixels)
    if args.save_output:
        import numpy as np  # pylint: disable=import-outside-toplevel
        np.save(args.save_output, np.asarray(first).reshape(first.shape[-2:]).astype(np.int32))
    seconds = common.time_calls(lambda: call(pixels), max(args.warmup - 1, 0), args.repeats)
    common.emit({"side": args.side, "size": args.size, "threads": args.threads,
                 "load_s": load_s, "rss_start_mb": rss_start, "rss_loaded_mb": rss_loaded,
                 "rss_after_mb": rss_mb(), "peak_rss_mb": common.peak_rss_mb(),
                 "seconds": seconds, "median_s": common.median(seconds),
                 "versions": versions})


if __name__ == "__main__":
    main()
