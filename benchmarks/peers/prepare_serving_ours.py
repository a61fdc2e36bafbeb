"""Makes our side's serving artefacts (issue 22), with the repository's .venv.

The paper's model (ResNet-101, output stride 16, multi-grid (1, 2, 4), ASPP 6/12/18 + image
pooling, 21 classes, seeded random weights with non-trivial BN statistics), BN folded as
``deeplab.export_saved_model`` does, exported the library's way:

  ours_savedmodel_f32/    deeplab.export.serving.export_saved_model (what export_saved_model writes)
  ours_savedmodel_bf16/   the same with --serving_dtype=bfloat16 (deeplab.model.fuse.cast_model)
  ours_f32.tflite         deeplab.export.tflite.convert_float
  ours_int8.tflite        deeplab.export.tflite.convert_int8, calibrated on seeded images
  ours_int8_qat.tflite    the same weights as a --quantize_aware model whose activation ranges
                          were set by training-mode passes over seeded images, exported by
                          convert_int8 without calibration (issue 33: the same graph)
  floor_savedmodel/, floor.tflite   one-convolution models (each runtime's own footprint)

Usage: python prepare_serving_ours.py --artifacts DIR [--size 513] [--calibration 4]
"""

import os
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import deeplab  # noqa: E402  (first: its import guard)
import numpy as np  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import common  # noqa: E402
from deeplab.model import fuse  # noqa: E402
from deeplab.export import serving
from deeplab.export import tflite


def model_with_statistics(seed):
    keras.utils.set_random_seed(seed)
    model = deeplab.build_model(
        backbone="resnet101", num_classes=common.NUM_CLASSES, output_stride=16,
        multi_grid=common.MULTI_GRID, atrous_rates=common.ASPP_RATES_OS16, image_pooling=True,
        head="aspp", num_cascaded_blocks=0, upsample_logits=True)
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():  # pylint: disable=protected-access
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.uniform(-0.1, 0.1, layer.moving_mean.shape).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape).astype("float32"))
    return model


def quantization_aware_copy(model, images):
    """``model``'s weights in a --quantize_aware model, its ranges set by training-mode passes
    over ``images`` (what quantization-aware fine-tuning ends with, minus the weight updates)."""
    qat = deeplab.build_model(**{**model.get_config(), "freeze_batch_norm": True,
                                 "quantize_aware": True})
    values = {v.path: v for v in model.weights}
    for variable in qat.weights:
        if variable.path in values:
            variable.assign(values[variable.path])
    from deeplab.model.preprocessing import normalize_image  # noqa: E402
    for image in images:
        qat(normalize_image(image[None].astype("float32")), training=True)
    return qat


def main():
    args = common.prepare_args(__doc__)
    model = fuse.fuse_batch_norm(model_with_statistics(args.seed))
    names = [f"class{i}" for i in range(common.NUM_CLASSES)]
    start = time.time()
    serving.export_saved_model(model, os.path.join(args.artifacts, "ours_savedmodel_f32"),
                               class_names=names)
    serving.export_saved_model(fuse.cast_model(model, "bfloat16"),
                               os.path.join(args.artifacts, "ours_savedmodel_bf16"),
                               class_names=names)
    print(f"SavedModels {time.time() - start:.0f} s", flush=True)
    size = (args.size, args.size)
    start = time.time()
    with open(os.path.join(args.artifacts, "ours_f32.tflite"), "wb") as handle:
        handle.write(tflite.convert_float(model, size))
    rng = np.random.Generator(np.random.PCG64(args.seed + 1))
    images = [rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
              for _ in range(args.calibration)]
    with open(os.path.join(args.artifacts, "ours_int8.tflite"), "wb") as handle:
        handle.write(tflite.convert_int8(model, size, images))
    qat = quantization_aware_copy(model_with_statistics(args.seed), images)
    with open(os.path.join(args.artifacts, "ours_int8_qat.tflite"), "wb") as handle:
        handle.write(tflite.convert_int8(qat, size, None))
    print(f"TFLite {time.time() - start:.0f} s", flush=True)

    class Floor(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(tf.random.normal([3, 3, 3, 8], seed=1))

        @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.uint8, name="images")])
        def serve(self, images):
            x = tf.nn.conv2d(tf.cast(images, tf.float32), self.kernel, 1, "SAME")
            return {"semantic": tf.argmax(x, -1, output_type=tf.int32)}

    floor = Floor()
    tf.saved_model.save(floor, os.path.join(args.artifacts, "floor_savedmodel"),
                        signatures={"serving_default": floor.serve})
    concrete = floor.serve.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], floor)
    with open(os.path.join(args.artifacts, "floor.tflite"), "wb") as handle:
        handle.write(converter.convert())


if __name__ == "__main__":
    main()
