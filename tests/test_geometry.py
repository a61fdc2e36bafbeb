"""The model's geometry: where a feature lands in the upsampled output, at every output stride.

CONVENTIONS.md, "Geometry": feature ``i`` of a stride-s map is centred on input pixel ``s * i``
and the logits are upsampled so that output pixel ``x`` reads feature coordinate ``x / s``.
The tests trace an impulse through the real model (real layers, real upsampling) with weights
that pass it through unchanged: every convolution is a centred one-tap identity on channel 0,
every BN the identity, the image-pooling branch zero. An impulse at input pixel p (a multiple
of 32, so that every stride samples it) then comes out as a bilinear tent centred at p.
With the half-pixel resize used before, the tent's centre moved by (s - 1) / 2: +7.5 px at
output stride 16, +3.5 at 8 and +15.5 at 32 (measured in the closing note of issue 17).
"""

import numpy as np
import pytest

import deeplab
from deeplab.model import deeplabv3 as model_lib
from deeplab.model import layers as layers_lib

IMPULSE = 100.0


def impulse_weights(model):
    """Sets ``model``'s weights so that channel 0 of the input reaches channel 0 of the logits."""
    import keras  # pylint: disable=import-outside-toplevel

    for layer in model_lib.iter_layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            kernel = np.zeros(layer.kernel.shape, np.float32)
            kh, kw = kernel.shape[:2]
            kernel[kh // 2, kw // 2, 0, 0] = 1.0
            if "image_pooling" in layer.name:
                kernel[:] = 0.0
            layer.kernel.assign(kernel)
            if layer.use_bias:
                layer.bias.assign(np.zeros(layer.bias.shape, np.float32))
        elif isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.gamma.assign(np.ones(channels, np.float32))
            layer.beta.assign(np.zeros(channels, np.float32))
            layer.moving_mean.assign(np.zeros(channels, np.float32))
            layer.moving_variance.assign(np.full(channels, 1.0 - layer.epsilon, np.float32))
    return model


def impulse_model(output_stride, **kwargs):
    config = dict(
        backbone="resnet14_tiny",
        num_classes=2,
        output_stride=output_stride,
        atrous_rates=(6, 12, 18),
        image_pooling=True,
        weight_decay=0.0,
    )
    config.update(kwargs)
    return impulse_weights(deeplab.build_model(**config))


def impulse_images(size, points):
    images = np.zeros((len(points),) + tuple(size) + (3,), np.float32)
    for n, (y, x) in enumerate(points):
        images[n, y, x, 0] = IMPULSE
    return images


def centroid(response):
    """(y, x) centroid of a nonnegative [H, W] map."""
    response = np.asarray(response, np.float64)
    total = response.sum()
    assert total > 0, "the impulse did not reach the output"
    ys, xs = np.mgrid[: response.shape[0], : response.shape[1]]
    return (ys * response).sum() / total, (xs * response).sum() / total


# An even, an odd and a CamVid-like shape; impulses on the stride-32 grid with a stride-32
# feature centre on each side (past the last centre the output repeats it, so a tent there
# would be one-sided).
CASES = [
    ((128, 128), [(64, 64), (32, 64), (64, 32)]),
    ((129, 161), [(64, 64), (32, 128), (96, 96)]),
    ((90, 120), [(32, 64), (32, 32)]),
]


@pytest.mark.parametrize("size, points", CASES)
@pytest.mark.slow
def test_an_impulse_lands_where_it_entered_at_every_output_stride(size, points):
    images = impulse_images(size, points)
    for stride in (8, 16, 32):
        logits = np.asarray(impulse_model(stride)(images, training=False))
        for n, point in enumerate(points):
            got = centroid(logits[n, :, :, 0])
            np.testing.assert_allclose(got, point, atol=0.5, err_msg=f"output stride {stride}")
            # The response is the tent of width s around the impulse, sampled exactly.
            y, x = point
            assert logits[n, y, x, 0] == pytest.approx(logits[n].max())


@pytest.mark.slow
def test_the_cascade_head_and_block7_keep_the_geometry():
    points = [(64, 64), (128, 64)]
    images = impulse_images((256, 200), points)
    for stride in (16, 32, 64):
        model = impulse_model(stride, head="cascade", num_cascaded_blocks=3, image_pooling=False)
        logits = np.asarray(model(images, training=False))
        for n, point in enumerate(points):
            np.testing.assert_allclose(centroid(logits[n, :, :, 0]), point, atol=0.5)


def _numpy_stride_upsample(features, size, stride):
    """Direct computation: output pixel x reads feature coordinate min(x / s, h - 1)."""
    out = np.empty((features.shape[0],) + tuple(size) + features.shape[3:], np.float64)
    height, width = features.shape[1:3]
    for y in range(size[0]):
        for x in range(size[1]):
            u, v = min(y / stride, height - 1), min(x / stride, width - 1)
            y0, x0 = int(np.floor(u)), int(np.floor(v))
            y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
            a, b = u - y0, v - x0
            out[:, y, x] = (
                (1 - a) * (1 - b) * features[:, y0, x0]
                + (1 - a) * b * features[:, y0, x1]
                + a * (1 - b) * features[:, y1, x0]
                + a * b * features[:, y1, x1]
            )
    return out


@pytest.mark.parametrize(
    "in_size, out_size, stride",
    [
        ((3, 4), (33, 49), 16),
        ((5, 5), (33, 33), 8),
        ((2, 3), (64, 96), 32),
        ((1, 1), (7, 5), 4),
        ((3, 4), (40, 60), 16),
    ],
)
def test_stride_upsample_against_numpy(in_size, out_size, stride):
    features = np.random.default_rng(1).normal(size=(2,) + in_size + (3,)).astype(np.float32)
    got = np.asarray(layers_lib.stride_upsample(features, out_size, stride))
    np.testing.assert_allclose(got, _numpy_stride_upsample(features, out_size, stride), atol=1e-5)


def test_stride_upsample_equals_corner_aligned_resize_at_authors_crop_sizes():
    """At 16k + 1 sizes (513 -> 33) the sampler is the authors' align_corners=True resize."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    features = np.random.default_rng(2).normal(size=(1, 33, 17, 2)).astype(np.float32)
    got = np.asarray(layers_lib.stride_upsample(features, (513, 257), 16))
    reference = tf.compat.v1.image.resize_bilinear(features, (513, 257), align_corners=True)
    np.testing.assert_allclose(got, reference.numpy(), atol=1e-5)


@pytest.mark.slow
def test_stride_upsample_in_a_tf_function_with_dynamic_size():
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    model = impulse_model(16)
    fn = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
    )
    images = impulse_images((96, 80), [(32, 48)])
    logits = fn(images).numpy()
    assert logits.shape == (1, 96, 80, 2)
    np.testing.assert_allclose(centroid(logits[0, :, :, 0]), (32, 48), atol=0.5)


def _thresholded_impulse_model(output_stride):
    """Class 0 wins where the impulse's tent is above half its peak: a region symmetric about
    the impulse, so its centre is where the export puts the impulse."""
    model = impulse_model(output_stride)
    probe = impulse_images((64, 64), [(32, 32)])
    probe[0, 32, 32, 0] = 255.0 - 103.939  # the B channel of a white pixel, normalized
    peak = float(np.asarray(model(probe, training=False))[0, 32, 32, 0])
    logits = model.get_layer("logits")
    logits.bias.assign(np.array([-peak / 2.0, 0.0], np.float32))
    return model


def _semantic_centre(semantic):
    ys, xs = np.nonzero(np.asarray(semantic) == 0)
    assert ys.size, "class 0 is nowhere"
    return ys.mean(), xs.mean()


def _impulse_photo(point, size=(64, 64)):
    image = np.empty(size + (3,), np.uint8)
    image[:] = (124, 117, 104)  # the ImageNet mean pixel, rounded: normalizes to ~0
    image[point] = 255
    return image


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.slow
def test_exports_keep_the_location(tmp_path, output_stride):
    """The SavedModel and the float TFLite model put an impulse where the Keras model does:
    on the input pixel it entered."""
    from deeplab.export import serving  # pylint: disable=import-outside-toplevel
    from deeplab.export import tflite

    model = _thresholded_impulse_model(output_stride)
    points = [(32, 32), (16, 32)]  # each with a stride-16 feature centre on every side
    images = [_impulse_photo(p) for p in points]
    keras_segmenter = serving.KerasSegmenter(model)
    export_dir = str(tmp_path / "export")
    serving.export_saved_model(model, export_dir, class_names=["impulse", "rest"])
    saved = serving.SavedModelSegmenter(export_dir)
    tflite_path = tmp_path / "model.tflite"
    tflite_path.write_bytes(tflite.convert_float(model, (64, 64)))
    lite = tflite.TFLiteSegmenter(str(tflite_path))
    for point, image in zip(points, images):
        for name, segmenter in (
            ("keras", keras_segmenter),
            ("saved_model", saved),
            ("tflite", lite),
        ):
            np.testing.assert_allclose(
                _semantic_centre(segmenter(image)), point, atol=0.5, err_msg=name
            )
