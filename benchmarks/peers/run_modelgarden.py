"""Peer runner: TF Model Garden ``seg_deeplabv3_pascal`` model (tf-models-official 2.20 on
TensorFlow 2.21 + tf-keras; run in peers/modelgarden).

The registered experiment config is changed to the paper's model: ASPP rates 6/12/18 at output
stride 16 (12/24/36 at 8; the config has 12/24/36 at 16), ReLU (config: swish), the plain
7x7 stem ('v0'; config: the deep 3-conv 'v1' stem), no sync BN (one CPU). Kept from the
config: dilated ResNet-101 (v1.5: stride on the 3x3 conv), multi-grid (1, 2, 4), image
pooling, 256-channel ASPP, a 1x1 logits head, BN momentum 0.9997 / epsilon 1e-3, L2 1e-4.
The model returns logits at feature resolution; they are upsampled bilinearly to the input
inside the timed function, as the other sides do.

Prints one ``BENCH_JSON`` line (see common.py).
"""

import importlib.metadata
import math
import os

import common

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
args = common.runner_args(description=__doc__)

import tensorflow as tf  # noqa: E402  pylint: disable=wrong-import-position

tf.config.threading.set_intra_op_parallelism_threads(args.threads)
tf.config.threading.set_inter_op_parallelism_threads(args.threads)

import tf_keras  # noqa: E402  pylint: disable=wrong-import-position
from official.core import exp_factory  # noqa: E402  pylint: disable=wrong-import-position
from official.vision import registry_imports  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import
from official.vision.modeling import factory  # noqa: E402  pylint: disable=wrong-import-position

WEIGHT_DECAY = 1e-4


def model_config(output_stride):
    """The registered seg_deeplabv3_pascal model config, set to the paper's model."""
    config = exp_factory.get_exp_config("seg_deeplabv3_pascal").task.model
    level = int(math.log2(output_stride))
    config.num_classes = common.NUM_CLASSES
    config.backbone.dilated_resnet.model_id = 101
    config.backbone.dilated_resnet.output_stride = output_stride
    config.backbone.dilated_resnet.multigrid = list(common.MULTI_GRID)
    config.backbone.dilated_resnet.stem_type = "v0"
    config.decoder.aspp.level = level
    config.decoder.aspp.dilation_rates = list(common.aspp_rates(output_stride))
    config.decoder.aspp.num_filters = 256
    config.head.level = level
    config.head.num_convs = 0
    config.norm_activation.activation = "relu"
    config.norm_activation.use_sync_bn = False
    return config


def build(output_stride, size, policy="float32"):
    tf_keras.mixed_precision.set_global_policy(policy)
    try:
        input_specs = tf_keras.layers.InputSpec(shape=[None, size, size, 3])
        # Model Garden's task applies l2_weight_decay / 2 to the regularizer.
        return factory.build_segmentation_model(
            input_specs, model_config(output_stride),
            l2_regularizer=tf_keras.regularizers.l2(WEIGHT_DECAY / 2.0))
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")


def main():
    tf_keras.utils.set_random_seed(args.seed)
    model = build(args.output_stride, args.size)
    images, labels = common.seeded_inputs(args.batch, args.size, common.NUM_CLASSES, args.seed)
    x = tf.constant(images)
    y = tf.constant(labels)
    # The decoder and head are subclassed layers that create their variables on the first call;
    # call once so that trainable_variables (and the optimizer) see all of them.
    model(x[:1], training=False)
    trainable_params = int(sum(v.shape.num_elements() for v in model.trainable_variables))
    size = tf.shape(x)[1:3]
    extra = {"versions": {"tensorflow": tf.__version__, "tf_keras": tf_keras.__version__,
                          "tf-models-official": importlib.metadata.version("tf-models-official")},
             "trainable_params": trainable_params}

    def logits_of(m, images_, training):
        logits = tf.cast(m(images_, training=training)["logits"], tf.float32)
        return tf.image.resize(logits, size, method="bilinear")

    if args.count_flops:
        graph = tf.function(lambda i: logits_of(model, i, False)).get_concrete_function(
            tf.TensorSpec(x.shape, tf.float32)).graph
        flops, space_to_batch = common.tf_graph_conv_flops(graph)
        extra["model_conv_gflops"] = flops / 1e9
        extra["space_to_batch_ops"] = space_to_batch

    if args.task == "infer":
        run_model = model
        if args.dtype == "bfloat16":
            run_model = build(args.output_stride, args.size, "mixed_bfloat16")
            run_model(x[:1], training=False)  # create the lazily built variables first
            run_model.set_weights(model.get_weights())

        @tf.function(jit_compile=args.xla)
        def infer(images_):
            return logits_of(run_model, images_, False)

        seconds = common.time_calls(lambda: infer(x).numpy(), args.warmup, args.repeats)
        if args.dtype == "bfloat16":
            reference = logits_of(model, x, False).numpy()
            extra["argmax_agreement_vs_float32"] = common.argmax_agreement(
                reference, infer(x).numpy())
    else:
        if args.dtype != "float32":
            raise SystemExit("training runs in float32 only")
        optimizer = tf_keras.optimizers.SGD(learning_rate=0.007, momentum=0.9)
        optimizer.build(model.trainable_variables)
        loss_fn = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                                ignore_class=255)

        @tf.function(jit_compile=args.xla)
        def train_step(images_, labels_):
            with tf.GradientTape() as tape:
                loss = loss_fn(labels_, logits_of(model, images_, True))
                if model.losses:
                    loss = loss + tf.add_n(model.losses)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        seconds = common.time_calls(lambda: float(train_step(x, y)), args.warmup, args.repeats)
    common.emit(common.base_result(args, "modelgarden", seconds=seconds,
                                   median_s=common.median(seconds),
                                   peak_rss_mb=common.peak_rss_mb(), **extra))


if __name__ == "__main__":
    main()
