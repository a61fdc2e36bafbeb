"""Tests for deeplab.evaluation.inference against a numpy re-implementation of multi-scale + flip
averaging.

Also home of the one JAX-backend subprocess test, which covers inference, metrics, losses and
schedules together (a subprocess each would cost seconds of start-up apiece).

The model is a 1x1 convolution plus a per-class ramp along the width, so its output depends on
position and a flipped pass differs from an unflipped one. The expected values use a numpy
half-pixel bilinear resize and the numpy form of that model, both written here.
"""

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import harness
from deeplab.common import geometry
from deeplab.common.inference_options import InferenceOptions
from deeplab.evaluation import inference

NUM_CLASSES = 3
KERNEL = np.array([[0.8, -0.5, 0.1], [0.2, 0.9, -0.7], [-0.4, 0.3, 0.6]], np.float32)
BIAS = np.array([0.1, -0.2, 0.05], np.float32)
RAMP = np.array([1.5, -1.0, 0.25], np.float32)  # logit c gains RAMP[c] * column / width

MODEL_SOURCE = r"""
import keras
from keras import ops


class ColumnRamp(keras.layers.Layer):
    def __init__(self, ramp, **kwargs):
        super().__init__(**kwargs)
        self.ramp = list(ramp)

    def call(self, x):
        width = ops.shape(x)[2]
        column = ops.cast(ops.arange(width), "float32") / ops.cast(width, "float32")
        ramp = ops.convert_to_tensor(self.ramp, "float32")
        return x + column[None, None, :, None] * ramp


def build(kernel, bias, ramp):
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(len(bias), 1)
    logits = ColumnRamp(ramp)(conv(inputs))
    model = keras.Model(inputs, logits)
    conv.set_weights([kernel.reshape(1, 1, 3, len(bias)), bias])
    return model
"""
_namespace = {}
exec(MODEL_SOURCE, _namespace)  # the same model definition is sent to the JAX subprocess


def _model():
    return _namespace["build"](KERNEL, BIAS, RAMP)


def _np_model(x):
    width = x.shape[2]
    logits = x.astype(np.float64) @ KERNEL + BIAS
    return logits + (np.arange(width) / width)[None, None, :, None] * RAMP


def _np_resize_axis(x, out_size, axis):
    """Half-pixel bilinear resize along one axis, edges clamped (no antialiasing)."""
    in_size = x.shape[axis]
    coord = np.clip((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0, in_size - 1)
    lower = np.floor(coord).astype(int)
    upper = np.minimum(lower + 1, in_size - 1)
    frac = coord - lower
    shape = [1] * x.ndim
    shape[axis] = out_size
    return np.take(x, lower, axis=axis) * (1 - frac).reshape(shape) + np.take(
        x, upper, axis=axis
    ) * frac.reshape(shape)


def _np_resize(x, size):
    return _np_resize_axis(_np_resize_axis(x, size[0], 1), size[1], 2)


def _np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_expected(images, scales, flip, sizes):
    height, width = images.shape[1:3]
    passes = []
    for scale in scales:
        for flipped in [False, True] if flip else [False]:
            x = images[:, :, ::-1] if flipped else images
            if scale != 1.0:
                x = _np_resize(x, sizes[scale])
            p = _np_resize(_np_softmax(_np_model(x)), (height, width))
            passes.append(p[:, :, ::-1] if flipped else p)
    return np.mean(passes, axis=0)


# Hand-rounded sizes for 9 x 11 images: halves round up (4.5 -> 5, 13.5 -> 14, 16.5 -> 17).
SIZES = {0.5: (5, 6), 1.0: (9, 11), 1.5: (14, 17)}


def _images(seed=0, shape=(2, 9, 11, 3)):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_scaled_size_rounds_halves_up():
    assert geometry.scaled_size(9, 11, 0.5) == (5, 6)
    assert geometry.scaled_size(9, 11, 1.5) == (14, 17)
    assert geometry.scaled_size(513, 513, 0.75) == (385, 385)  # 384.75
    assert geometry.scaled_size(65, 65, 0.5) == (33, 33)  # 32.5: Python round() gives 32
    assert geometry.scaled_size(1, 1, 0.25) == (1, 1)
    # Dynamic sides (tensors, as in tf.data and the training augmentation), float or tensor scale.
    for size, scale in [((65, 65), 0.5), ((23, 31), 0.5), ((360, 480), 1.25), ((9, 11), 1.5)]:
        for scale_arg in (scale, tf.constant(scale)):
            h, w = geometry.scaled_size(tf.constant(size[0]), tf.constant(size[1]), scale_arg)
            assert (int(h), int(w)) == geometry.scaled_size(size[0], size[1], scale)


def test_resize_bilinear_static_and_dynamic_sizes_agree():
    images = tf.constant(_images())
    static = geometry.resize_bilinear(images, (14, 17))
    assert geometry.resize_bilinear(images, (9, 11)) is images

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def dynamic(x):
        return geometry.resize_bilinear(
            x, geometry.scaled_size(tf.shape(x)[1], tf.shape(x)[2], 1.5)
        )

    np.testing.assert_allclose(
        dynamic(images).numpy(), keras.ops.convert_to_numpy(static), rtol=1e-6, atol=1e-6
    )
    single = geometry.resize_bilinear(images[0], (tf.constant(14), tf.constant(17)))
    np.testing.assert_allclose(
        single.numpy(), keras.ops.convert_to_numpy(static)[0], rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize(
    "scales, flip",
    [((1.0,), False), ((1.0,), True), ((0.5, 1.0, 1.5), False), ((0.5, 1.0, 1.5), True)],
)
def test_matches_numpy_average(scales, flip):
    images = _images()
    model = _model()
    got = keras.ops.convert_to_numpy(
        inference.predict_probabilities(
            model, images, options=InferenceOptions(scales=scales, flip=flip)
        )
    )
    expected = _np_expected(images, scales, flip, SIZES)
    assert got.dtype == np.float32 and got.shape == (2, 9, 11, NUM_CLASSES)
    np.testing.assert_allclose(got, expected, atol=2e-6)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)


def test_flip_matters_for_this_model():
    # Guards the test above: with a position-dependent model, dropping the flip changes output.
    images = _images(1)
    with_flip = _np_expected(images, (1.0,), True, SIZES)
    without = _np_expected(images, (1.0,), False, SIZES)
    assert np.abs(with_flip - without).max() > 1e-2


def test_tf_function_with_dynamic_height_and_width():
    model = _model()

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def infer(images):
        return inference.predict_probabilities(
            model, images, options=InferenceOptions(scales=(0.5, 1.0, 1.5), flip=True)
        )

    images = _images(2)
    np.testing.assert_allclose(
        infer(images).numpy(), _np_expected(images, (0.5, 1.0, 1.5), True, SIZES), atol=2e-6
    )
    other = _images(3, shape=(1, 7, 6, 3))  # same trace, new size: 0.5 -> (4, 3), 1.5 -> (11, 9)
    np.testing.assert_allclose(
        infer(other).numpy(),
        _np_expected(other, (0.5, 1.0, 1.5), True, {0.5: (4, 3), 1.0: (7, 6), 1.5: (11, 9)}),
        atol=2e-6,
    )


def test_scales_must_be_distinct_and_positive():
    images, model = _images(4), _model()
    for scales, message in [((1.0, 1.0), "repeat"), ((), "at least one"), ((0.0,), "positive")]:
        with pytest.raises(ValueError, match=message):
            inference.predict_probabilities(model, images, options=InferenceOptions(scales=scales))


_JAX_SCRIPT = (
    MODEL_SOURCE
    + r"""
import json, sys
import numpy as np
import jax, jax.numpy as jnp
from deeplab.common.inference_options import InferenceOptions
from deeplab.evaluation import inference
from deeplab.training import losses
from deeplab.evaluation import metrics
from deeplab.training import schedules
assert keras.backend.backend() == "jax"
args = json.loads(sys.stdin.read())
model = build(np.array(args["kernel"], np.float32), np.array(args["bias"], np.float32),
              args["ramp"])
images = np.array(args["images"], np.float32)
labels = np.array(args["labels"], np.int32)
logits = np.array(args["logits"], np.float32)
out = {}

# inference.py: eager probabilities and jitted class maps.
options = InferenceOptions(scales=(0.5, 1.0, 1.5), flip=True)
out["probabilities"] = np.asarray(inference.predict_probabilities(
    model, images, options)).tolist()
predicted = jax.jit(lambda x: keras.ops.argmax(inference.predict_probabilities(
    model, x, options), axis=-1))(images)
out["labels"] = np.asarray(predicted).tolist()

# metrics.py: jitted confusion matrix of those predictions and its mIOU.
cm = jax.jit(lambda l, p: metrics.confusion_matrix_update(l, p, 3, 255))(labels, predicted)
out["cm"] = np.asarray(cm).tolist()
out["miou"] = metrics.mean_iou(np.asarray(cm))

# losses.py: eager, jitted, bf16 + class weights, zero gradient on an all-ignored batch (the
# training step's mean: the per-pixel terms over max(#valid, 1)).
def mean_loss(labels, logits, class_weights=None):
    terms, valid = losses.pixel_cross_entropy(labels, logits, class_weights=class_weights)
    return keras.ops.sum(terms) / keras.ops.maximum(keras.ops.sum(valid), 1.0)
out["loss"] = float(mean_loss(labels, logits))
out["loss_jit"] = float(jax.jit(mean_loss)(labels, logits))
out["loss_bf16_weighted"] = float(
    mean_loss(labels, jnp.asarray(logits, jnp.bfloat16), class_weights=[0.5, 2.0, 1.0]))
grad = jax.grad(lambda z: mean_loss(np.full_like(labels, 255), z))(logits)
out["ignored_grad_all_zero"] = bool(np.all(np.asarray(grad) == 0))
out["down"] = np.asarray(losses.labels_at_feature_centres(
    np.arange(64, dtype=np.int32).reshape(1, 8, 8), 4)).tolist()

# schedules.py: under XLA, including exactly max_steps (once NaN from a negative base).
schedule = jax.jit(schedules.PolyLearningRate(0.007, 30000))
out["lr"] = [float(schedule(jnp.array(s, jnp.int32))) for s in (0, 15000, 30000, 40000)]
print(json.dumps(out))
"""
)


def _np_cross_entropy(labels, logits, class_weights=(1.0, 1.0, 1.0)):
    z = logits.astype(np.float64)
    log_z = z.max(-1) + np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1))
    valid = labels != 255
    safe = np.where(valid, labels, 0)
    ce = (log_z - np.take_along_axis(z, safe[..., None], -1)[..., 0]) * np.take(class_weights, safe)
    return ce[valid].sum() / valid.sum()


@pytest.mark.slow
def test_jax_backend_in_subprocess():
    """All four modules under KERAS_BACKEND=jax (eager and jax.jit), against numpy."""
    images = _images(5)
    rng = np.random.default_rng(9)
    labels = rng.integers(0, NUM_CLASSES, size=(2, 9, 11)).astype(np.int32)
    labels[rng.random(labels.shape) < 0.2] = 255
    logits = (3 * rng.normal(size=(2, 9, 11, NUM_CLASSES))).astype(np.float32)
    env = {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    payload = json.dumps(
        {
            "kernel": KERNEL.tolist(),
            "bias": BIAS.tolist(),
            "ramp": RAMP.tolist(),
            "images": images.tolist(),
            "labels": labels.tolist(),
            "logits": logits.tolist(),
        }
    )
    out = harness.run("-c", _JAX_SCRIPT, input=payload, env=env, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])

    expected = _np_expected(images, (0.5, 1.0, 1.5), True, SIZES)
    np.testing.assert_allclose(np.array(result["probabilities"]), expected, atol=2e-6)
    predicted = np.array(result["labels"])
    np.testing.assert_array_equal(predicted, expected.argmax(-1))

    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for gt, pred in zip(labels.ravel(), predicted.ravel()):
        if gt != 255:
            cm[gt, pred] += 1
    np.testing.assert_array_equal(result["cm"], cm)
    valid = labels != 255
    ious = []
    for c in range(NUM_CLASSES):
        union = np.sum(((labels == c) | (predicted == c)) & valid)
        if union:
            ious.append(np.sum((labels == c) & (predicted == c) & valid) / union)
    assert result["miou"] == pytest.approx(np.mean(ious), rel=1e-5)

    assert result["loss"] == pytest.approx(_np_cross_entropy(labels, logits), rel=1e-5)
    assert result["loss_jit"] == pytest.approx(_np_cross_entropy(labels, logits), rel=1e-5)
    rounded = tf.cast(tf.constant(logits, tf.bfloat16), tf.float32).numpy()
    assert result["loss_bf16_weighted"] == pytest.approx(
        _np_cross_entropy(labels, rounded, (0.5, 2.0, 1.0)), rel=1e-5
    )
    assert result["ignored_grad_all_zero"]
    assert result["down"] == [[[0, 4], [32, 36]]]  # rows/columns 0 and 4 of an 8x8 ramp

    assert result["lr"] == pytest.approx([0.007, 0.007 * 0.5**0.9, 0.0, 0.0], rel=1e-6, abs=0)


@pytest.mark.slow
def test_padded_evaluation_is_inference_on_the_padded_photo_cropped_back():
    """--eval_pad_to (the authors' whole-image inference): the photo is padded at the bottom and
    right with the backbone's pad pixel (the ImageNet mean for ResNet, 127.5 for MobileNetV2),
    segmented whole, and the prediction cropped back; a photo already larger is untouched."""
    import deeplab  # pylint: disable=import-outside-toplevel
    from deeplab.model import preprocessing  # pylint: disable=import-outside-toplevel

    keras.utils.set_random_seed(3)
    backbone = "resnet14_tiny"
    extra = dict(aspp_filters=8, atrous_rates=(1, 2, 3))
    model = deeplab.build_model(
        backbone=backbone, num_classes=4, output_stride=16, logits_init_stddev=0, **extra
    )
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (1, 37, 45, 3)).astype(np.float32)
    pad = preprocessing.pad_pixel(backbone)
    raw = np.empty((1, 49, 65, 3), np.float32)
    raw[:] = np.asarray(pad, np.float32)
    raw[:, :37, :45] = photo
    expected = inference.predict_probabilities(
        model,
        preprocessing.normalize_image(raw),
        options=InferenceOptions(scales=(0.75, 1.0), flip=True),
    ).numpy()[:, :37, :45]
    images = preprocessing.normalize_image(photo)
    padded = inference.predict_probabilities(
        model, images, options=InferenceOptions(scales=(0.75, 1.0), flip=True, pad_to=(49, 65))
    ).numpy()
    assert padded.shape == (1, 37, 45, 4)
    np.testing.assert_allclose(padded, expected, atol=2e-5)
    unpadded = inference.predict_probabilities(
        model, images, options=InferenceOptions(scales=(0.75, 1.0), flip=True)
    )
    # image pooling sees the padding, so padding changes the prediction
    assert np.abs(padded - unpadded.numpy()).max() > 1e-4
    smaller = inference.predict_probabilities(
        model, images, options=InferenceOptions(scales=(0.75, 1.0), flip=True, pad_to=(33, 33))
    )
    np.testing.assert_allclose(smaller.numpy(), unpadded.numpy(), atol=1e-6)


def test_mobilenet_evaluation_padding_reaches_the_network_as_zero():
    """For MobileNetV2 the pad pixel is 127.5, which its [-1, 1] input maps to 0 (the authors'
    pad value); real pixels are unchanged."""
    from deeplab.model import preprocessing  # pylint: disable=import-outside-toplevel
    from deeplab.model.mobilenet import UnitRangeInput  # pylint: disable=import-outside-toplevel

    photo = np.random.default_rng(1).integers(0, 256, (1, 5, 7, 3)).astype(np.float32)
    images = preprocessing.normalize_image(photo)
    padded, size = inference.pad_for_inference(
        images, (9, 8), preprocessing.pad_pixel("mobilenet_v2")
    )
    assert size == (5, 7) and tuple(padded.shape) == (1, 9, 8, 3)
    unit = UnitRangeInput()(padded).numpy()
    np.testing.assert_allclose(unit[:, 5:], 0.0, atol=1e-6)
    np.testing.assert_allclose(unit[:, :, 7:], 0.0, atol=1e-6)
    np.testing.assert_allclose(padded.numpy()[:, :5, :7], images.numpy(), atol=1e-4)


def test_inference_options_are_normalized_and_checked_once():
    options = InferenceOptions(
        scales=[1, 0.5], flip=1, tile_size=33, tile_overlap=0, output_stride=0, pad_to=[49]
    )
    assert options.scales == (1.0, 0.5) and options.flip is True
    assert options.tile_size == (33, 33) and options.tile_overlap == 0.0
    assert options.output_stride is None and options.pad_to == (49, 49)
    assert InferenceOptions(tile_size=0).tile_size is None
    assert InferenceOptions().is_default and InferenceOptions(tile_overlap=0.5).is_default
    assert not InferenceOptions(output_stride=8).is_default
    # the keys evaluation settings were recorded with (deeplab.reproduce keys its cache by them)
    assert InferenceOptions().as_dict() == {"output_stride": None, "scales": (1.0,), "flip": False}
    assert set(InferenceOptions(tile_size=9, pad_to=9).as_dict()) == {
        "output_stride",
        "scales",
        "flip",
        "tile_size",
        "tile_overlap",
        "pad_to",
    }
    for changes, message in [
        ({"tile_overlap": 1.0}, r"tile_overlap must be in \[0, 1\)"),
        ({"tile_size": (0, 5)}, "tile_size takes a positive size"),
        ({"pad_to": (1, 2, 3)}, "pad_to takes a positive size"),
        ({"output_stride": -8}, "output_stride must be a positive integer"),
        ({"scales": (1.0, -1.0)}, "scales must be positive"),
    ]:
        with pytest.raises(ValueError, match=message):
            InferenceOptions(**changes)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.flip = False  # pylint: disable=assigning-non-slot
    assert options.replace(flip=False).flip is False and options.flip is True
