"""Our side: ``deeplab.build_model`` (Keras 3 on TensorFlow), run with the repository's .venv.

The paper's model: ResNet-101, output stride 16 (or 8), multi-grid (1, 2, 4), ASPP 6/12/18
(scaled to 12/24/36 at OS 8 by the library) + image pooling, 21 classes, random weights,
logits upsampled to the input. The training step is deeplab.train's SGD (deeplab.training.optimizers:
Keras' SGD with a fused update kernel), momentum 0.9, on sparse cross-entropy with ignore label
255 over upsampled logits, plus the model's weight decay, under tf.function (XLA only with
--xla), with the backbone through block2 recomputed in the backward pass as deeplab.train does
by default (--recompute-through none keeps every activation). Inference runs the model with
every BN folded into its convolution (deeplab.model.fuse.fuse_batch_norm, as deeplab.evaluate /
predict / export_saved_model do; --no-fuse runs the model as built).

Prints one ``BENCH_JSON`` line (see common.py).
"""

import os
import sys

import common

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO_ROOT)


def _own_arguments(parser):
    parser.add_argument(
        "--no-fuse", action="store_true",
        help="inference on the model as built, without deeplab.model.fuse's BN folding (which "
             "deeplab.evaluate, predict and export_saved_model apply by default)")
    parser.add_argument(
        "--recompute-through", default="block2",
        help="training: deeplab.train's --recompute_through (deeplab.training.recompute; same default): "
             "recompute the backbone up to this endpoint in the backward pass; none keeps "
             "every activation")


args = common.runner_args(description=__doc__, add_arguments=_own_arguments)

# deeplab first, as the library's binaries do: its import guard keeps TensorFlow and Keras
# from importing JAX as a side effect (deeplab/_jax_guard.py).
import deeplab  # noqa: E402  pylint: disable=wrong-import-position
import tensorflow as tf  # noqa: E402  pylint: disable=wrong-import-position

tf.config.threading.set_intra_op_parallelism_threads(args.threads)
tf.config.threading.set_inter_op_parallelism_threads(args.threads)

import keras  # noqa: E402  pylint: disable=wrong-import-position

from deeplab.model import fuse  # noqa: E402  pylint: disable=wrong-import-position
from deeplab.training import optimizers
from deeplab.training import recompute
from deeplab.training import weight_decay


def build(output_stride, dtype_policy="float32"):
    keras.config.set_dtype_policy(dtype_policy)
    try:
        return deeplab.build_model(
            backbone="resnet101", num_classes=common.NUM_CLASSES, output_stride=output_stride,
            multi_grid=common.MULTI_GRID, atrous_rates=common.ASPP_RATES_OS16,
            image_pooling=True, head="aspp", num_cascaded_blocks=0, upsample_logits=True)
    finally:
        keras.config.set_dtype_policy("float32")


def main():
    keras.utils.set_random_seed(args.seed)
    model = build(args.output_stride)
    images, labels = common.seeded_inputs(args.batch, args.size, common.NUM_CLASSES, args.seed)
    x = tf.constant(images)
    y = tf.constant(labels)
    extra = {"versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
             "model": "deeplab.build_model",
             "trainable_params": int(sum(v.numpy().size for v in model.trainable_variables))}

    if args.task == "infer":
        run_model = model
        if args.dtype == "bfloat16":
            run_model = build(args.output_stride, "mixed_bfloat16")
            run_model.set_weights(model.get_weights())
        if not args.no_fuse:  # what the library's inference paths run (deeplab.model.fuse)
            run_model = fuse.fuse_batch_norm(run_model)
        extra["batch_norm_folded"] = getattr(run_model, "batch_norm_folded", 0)

        @tf.function(jit_compile=args.xla, reduce_retracing=True)
        def infer(images_):
            return tf.cast(run_model(images_, training=False), tf.float32)

        if args.count_flops:
            graph = infer.get_concrete_function(tf.TensorSpec(x.shape, tf.float32)).graph
            flops, space_to_batch = common.tf_graph_conv_flops(graph)
            extra["model_conv_gflops"] = flops / 1e9
            extra["space_to_batch_ops"] = space_to_batch
        seconds = common.time_calls(lambda: infer(x).numpy(), args.warmup, args.repeats)
        if args.dtype == "bfloat16":
            reference = model(x, training=False).numpy()
            extra["argmax_agreement_vs_float32"] = common.argmax_agreement(
                reference, infer(x).numpy())
    else:
        if args.dtype != "float32":
            raise SystemExit("training runs in float32 only")
        optimizer = optimizers.SGD(learning_rate=0.007, momentum=0.9)  # deeplab.train's optimizer
        optimizer.build(model.trainable_variables)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)

        # As deeplab.train does: the L2 decay terms' gradients are added per variable after
        # the backward pass (deeplab.training.weight_decay), the decay value stays in the loss.
        decay = weight_decay.decay_coefficients(model)
        forward = recompute.training_forward(model, args.recompute_through)
        extra["recompute_through"] = forward.recompute_through

        @tf.function(jit_compile=args.xla)
        def train_step(images_, labels_):
            with tf.GradientTape() as tape:
                logits = forward(images_)
                cross_entropy = loss_fn(labels_, logits)
            grads = tape.gradient(cross_entropy, model.trainable_variables)
            grads = weight_decay.add_decay_gradients(grads, model.trainable_variables, decay)
            loss = cross_entropy + weight_decay.split_losses(model, decay)[1]
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        if args.count_flops:
            graph = tf.function(lambda i: model(i, training=False)).get_concrete_function(
                tf.TensorSpec(x.shape, tf.float32)).graph
            flops, space_to_batch = common.tf_graph_conv_flops(graph)
            extra["model_conv_gflops"] = flops / 1e9
            extra["space_to_batch_ops"] = space_to_batch
        seconds = common.time_calls(lambda: float(train_step(x, y)), args.warmup, args.repeats)
    common.emit(common.base_result(args, "ours", seconds=seconds,
                                   median_s=common.median(seconds),
                                   peak_rss_mb=common.peak_rss_mb(), **extra))


if __name__ == "__main__":
    main()
