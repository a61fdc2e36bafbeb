"""Shared by test_export, test_tflite and test_predict: a tiny trained-looking run and one export.

The SavedModel export of even a tiny model takes tens of seconds on a busy CPU, so the one
export is memoized for the whole pytest session (a module-level cache: this module is imported
once, whichever test file asks first).
"""

import os

import numpy as np

import harness
from deeplab.common.inference_options import InferenceOptions

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 3
TINY = {"backbone": "resnet14_tiny", "aspp_filters": 8, "atrous_rates": (1, 2, 3)}
CLASS_NAMES = ["sky", "road", "car"]
PALETTE = [[70, 130, 180], [128, 64, 128], [0, 0, 142]]
DATASET_INFO = {
    "name": "toy",
    "num_classes": NUM_CLASSES,
    "ignore_label": 255,
    "class_names": CLASS_NAMES,
    "palette": PALETTE,
}
# The shared export averages these (Sec. 4.2), so the fresh-process test covers them.
EXPORT_SCALES = (1.0, 0.75)
EXPORT_FLIP = True

_CACHE = {}


def randomize(model, seed=0):
    """Non-default, well-scaled values for every variable (BN statistics included), so that a
    variable lost on the way to an export changes the output."""
    rng = np.random.RandomState(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if variable.path.endswith("kernel"):
            value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
        elif variable.path.endswith(("gamma", "moving_variance")):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0.0, 0.1, shape)
        variable.assign(value.astype("float32"))


def keras_probabilities(model, images, scales=(1.0,), flip=False):
    """What an export must reproduce: the Keras model's (multi-scale, flipped) softmax of uint8
    pixels [N, H, W, 3], as numpy."""
    from keras import ops  # pylint: disable=import-outside-toplevel

    from deeplab.evaluation import inference  # pylint: disable=import-outside-toplevel
    from deeplab.model.preprocessing import normalize_image  # pylint: disable=import-outside-toplevel

    return ops.convert_to_numpy(
        inference.predict_probabilities(
            model, normalize_image(images), options=InferenceOptions(scales=scales, flip=flip)
        )
    )


def structured_images(count, size, seed=0):
    """uint8 [count, H, W, 3] synthetic scenes (shapes, stripes): unlike i.i.d. noise, they make
    a randomized model predict several classes with unsaturated probabilities."""
    from deeplab.data import synthetic

    return np.stack(
        [
            synthetic.make_example(
                np.random.default_rng([seed, i]), image_size=size, num_classes=NUM_CLASSES
            )[0]
            for i in range(count)
        ]
    )


def calibrate_batch_norm(model, images):
    """Sets every BN layer's moving statistics to those of ``images`` (one training-mode pass
    with momentum 0), so activations stay normalized and the logits moderate."""
    import keras

    from deeplab.model.deeplabv3 import iter_layers
    from deeplab.model.preprocessing import normalize_image

    layers = [l for l in iter_layers(model) if isinstance(l, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(normalize_image(images), training=True)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum


def make_tiny_run(logdir, *, output_stride=16, seed=2):
    """Builds a tiny DeepLabV3, randomizes it (BN statistics calibrated on synthetic scenes)
    and saves it as deeplab.train would.

    Returns:
      (model, checkpoint prefix).
    """
    import tensorflow as tf

    from deeplab.logdir import checkpoints
    from deeplab.model.deeplabv3 import build_model

    model = build_model(num_classes=NUM_CLASSES, output_stride=output_stride, **TINY)
    randomize(model, seed)
    calibrate_batch_norm(model, structured_images(4, (41, 41), seed=100 + seed))
    checkpoints.write_run_info(logdir, model, DATASET_INFO)
    manager = tf.train.CheckpointManager(
        checkpoints.make_checkpoint(model, step=tf.Variable(5, dtype=tf.int64)),
        logdir,
        max_to_keep=1,
        checkpoint_name=checkpoints.CHECKPOINT_NAME,
    )
    return model, manager.save(checkpoint_number=5)


def shared_tiny_run(tmp_path_factory):
    """One :func:`make_tiny_run` per test session: {"run_dir", "checkpoint", "model"}.
    Tests must not change the model's weights."""
    if "tiny_run" not in _CACHE:
        run_dir = str(tmp_path_factory.mktemp("shared_tiny") / "run")
        model, checkpoint = make_tiny_run(run_dir)
        _CACHE["tiny_run"] = {"run_dir": run_dir, "checkpoint": checkpoint, "model": model}
    return _CACHE["tiny_run"]


def shared_float_tflite(tmp_path_factory):
    """The shared tiny model as a float32 .tflite for 33x33 inputs (with its sidecar), once."""
    if "float_tflite" not in _CACHE:
        from deeplab.export import tflite  # pylint: disable=import-outside-toplevel

        path = str(tmp_path_factory.mktemp("shared_tflite") / "tiny.tflite")
        _CACHE["float_tflite"] = tflite.write_tflite(
            path,
            tflite.convert_float(shared_tiny_run(tmp_path_factory)["model"], (33, 33)),
            tflite.make_metadata(
                input_size=(33, 33),
                quantization="none",
                class_names=CLASS_NAMES,
                palette=PALETTE,
                options=InferenceOptions(scales=(1.0,), flip=False),
            ),
        )
    return _CACHE["float_tflite"]


def shared_export(tmp_path_factory):
    """The tiny run exported once by the real binary (multi-scale + flip).

    Returns:
      dict with "run_dir", "export_dir", "model" (the Keras model that was saved), "stdout".
    """
    if "export" not in _CACHE:
        run = shared_tiny_run(tmp_path_factory)
        run_dir, model = run["run_dir"], run["model"]
        export_dir = str(tmp_path_factory.mktemp("shared_export") / "export")
        result = harness.run(
            "deeplab.export_saved_model",
            f"--checkpoint={run_dir}",
            f"--export_dir={export_dir}",
            f"--eval_scales={','.join(map(str, EXPORT_SCALES))}",
            "--eval_flip" if EXPORT_FLIP else "--noeval_flip",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        _CACHE["export"] = {
            "run_dir": run_dir,
            "export_dir": export_dir,
            "model": model,
            "stdout": result.stdout + result.stderr,
        }
    return _CACHE["export"]


def shared_data(tmp_path_factory):
    """A small synthetic dataset with NUM_CLASSES classes (33x33 images)."""
    if "data" not in _CACHE:
        from deeplab.data import synthetic

        root = str(tmp_path_factory.mktemp("synthetic"))
        synthetic.build_synthetic_dataset(
            root, num_train=6, num_val=4, image_size=(33, 33), num_classes=NUM_CLASSES, seed=3
        )
        _CACHE["data"] = root
    return _CACHE["data"]


def float_ops(interpreter):
    """Names of the ops of a TFLite ``interpreter`` that read or write a float32 tensor (none in
    a full-integer model)."""
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    return [
        op["op_name"]
        for op in interpreter._get_ops_details()  # pylint: disable=protected-access
        if any(
            i >= 0 and tensors[i]["dtype"] == np.float32
            for i in list(op["inputs"]) + list(op["outputs"])
        )
    ]
