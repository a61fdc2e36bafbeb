"""The atrous MobileNetV2 backbone: keras.applications equality, the authors' stride plan,
channel rounding, the OS switch and ImageNet weight loading."""

import keras
import numpy as np
import pytest

import deeplab
from deeplab.common.errors import ConfigError
from deeplab.model import mobilenet
from deeplab.model import preprocessing
from deeplab.model import stride_plan
from tests.test_model import _randomize


def _reference_features(size, alpha=1.0, seed=3):
    reference = keras.applications.MobileNetV2(
        weights=None, include_top=False, alpha=alpha, input_shape=(*size, 3)
    )
    _randomize(reference, seed)
    return reference


@pytest.mark.parametrize(
    "size, padding", [((64, 48), "same"), ((65, 97), "same"), ((65, 97), "symmetric")]
)
@pytest.mark.slow
def test_features_equal_keras_applications_at_output_stride_32(size, padding):
    """The variable layout is keras.applications'. With TensorFlow's "same" padding the
    features are equal at every size; DeepLab's default symmetric padding is the same function
    at odd sizes (and differs on even ones by design: test_symmetric_padding_geometry)."""
    reference = _reference_features(size)
    ours = mobilenet.build_mobilenet_v2(output_stride=32, input_shape=(*size, 3), padding=padding)
    names = {layer.name for layer in ours.layers}
    copied = 0
    for layer in reference.layers:
        if layer.weights and layer.name in names:
            ours.get_layer(layer.name).set_weights(layer.get_weights())
            copied += 1
    # Every weighted layer but keras' final Conv_1 / Conv_1_bn has its place.
    assert copied == sum(1 for layer in reference.layers if layer.weights) - 2
    pixels = np.random.default_rng(0).uniform(0, 255, (2, *size, 3)).astype("float32")
    expected = keras.Model(
        reference.input,
        {
            "block1": reference.get_layer("block_2_add").output,
            "block2": reference.get_layer("block_5_add").output,
            "features": reference.get_layer("block_16_project_BN").output,
        },
    ).predict(pixels / 127.5 - 1.0, verbose=0)
    got = ours.predict(np.asarray(preprocessing.normalize_image(pixels)), verbose=0)
    for key, value in expected.items():
        scale = float(np.abs(value).max())
        assert scale > 1e-3
        np.testing.assert_allclose(got[key] / scale, value / scale, atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [64, 65, 90])
@pytest.mark.slow
def test_symmetric_padding_geometry(size):
    """An impulse at input pixel 16 * k reaches feature k at output stride 16 with symmetric
    padding at even and odd sizes; "same" padding moves it on even sizes."""
    for padding, exact in (("symmetric", True), ("same", size % 2 == 1)):
        backbone = mobilenet.build_mobilenet_v2(
            output_stride=16, input_shape=(size, size, 3), padding=padding
        )
        # Identity BN, centre-tap 3x3 kernels, channel-averaging 1x1 kernels: the backbone is a
        # pure subsampler, so an impulse reaches exactly the features whose strided layers read
        # its pixel.
        for layer in backbone.layers:
            weights = layer.get_weights()
            if not weights:
                continue
            if "BN" in layer.name or layer.name == "bn_Conv1":
                weights = [
                    np.ones_like(weights[0]),
                    np.zeros_like(weights[1]),
                    np.zeros_like(weights[2]),
                    np.ones_like(weights[3]) - layer.epsilon,
                ]
            else:
                kernel = np.zeros_like(weights[0])
                kernel[kernel.shape[0] // 2, kernel.shape[1] // 2] = 1.0
                if "depthwise" not in layer.name:
                    kernel /= kernel.shape[2]
                weights = [kernel]
            layer.set_weights(weights)
        # Mid-grey is 0 in MobileNetV2's [-1, 1] range; the impulse is white at pixel (32, 32),
        # the centre of feature 2 of the stride-16 grid.
        pixels = np.full((1, size, size, 3), 127.5, np.float32)
        base = backbone.predict(np.asarray(preprocessing.normalize_image(pixels)), verbose=0)
        pixels[0, 32, 32] = 255.0
        hit = backbone.predict(np.asarray(preprocessing.normalize_image(pixels)), verbose=0)
        response = np.abs(hit["features"] - base["features"]).sum(-1)[0]
        assert (response[2, 2] > 0) == exact, (padding, size, response.round(3))
        assert np.count_nonzero(response) == (1 if exact else 0), (padding, size)


def test_plan_is_the_authors_at_every_output_stride():
    # The authors' released OS-16 model: expanded_conv_13 stride 1 rate 1, 14..16 rate 2.
    plan16 = mobilenet.mobilenet_plan(16)
    assert [s for s, _ in plan16] == [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    assert [r for _, r in plan16] == [1] * 14 + [2, 2, 2]
    plan8 = mobilenet.mobilenet_plan(8)
    assert [s for s, _ in plan8][6] == 1 and [r for _, r in plan8] == [1] * 7 + [2] * 7 + [4] * 3
    plan32 = mobilenet.mobilenet_plan(32)
    assert [s for s, _ in plan32] == [s for _, _, s in mobilenet.BLOCKS]
    assert {r for _, r in plan32} == {1}
    with pytest.raises(ValueError, match="not available for MobileNetV2"):
        mobilenet.mobilenet_plan(64)


def test_stride_plan_rates_before_and_after():
    points = stride_plan.convert_strides([2, 1, 2, 2], output_stride=4, initial_stride=1)
    assert [(p.stride, p.rate_before, p.rate_after, p.output_stride) for p in points] == [
        (2, 1, 1, 2),
        (1, 1, 1, 2),
        (2, 1, 1, 4),
        (1, 1, 2, 4),
    ]


@pytest.mark.parametrize("output_stride, feature_size", [(8, 9), (16, 5), (32, 3)])
@pytest.mark.slow
def test_model_output_strides_and_switch(output_stride, feature_size):
    model = deeplab.build_model(
        backbone="mobilenet_v2_dm05",
        num_classes=4,
        multi_grid=None,
        atrous_rates=(),
        output_stride=16,
        aspp_dropout=0.0,
    )
    images = np.random.default_rng(1).normal(0, 40, (1, 65, 65, 3)).astype("float32")
    switched = deeplab.rebuild_with_output_stride(model, output_stride)
    features = switched.backbone_model(images)["features"]
    assert features.shape[1:3] == (feature_size, feature_size)
    assert switched(images).shape == (1, 65, 65, 4)
    if output_stride == 16:
        np.testing.assert_allclose(switched(images), model(images), atol=1e-5)


def test_authors_channel_rounding_at_depth_half():
    backbone = deeplab.build_model(
        backbone="mobilenet_v2_dm05", num_classes=2, multi_grid=None, atrous_rates=()
    ).backbone_model
    # The authors build depth 0.5 without rounding to 8: 24 * 0.5 = 12 channels after block 1.
    assert backbone.get_layer("block_1_project").filters == 12
    assert backbone.get_layer("Conv1").filters == 16
    assert backbone.get_layer("block_16_project").filters == 160


def test_mobilenet_rejects_resnet_only_options():
    with pytest.raises(ConfigError, match="cascaded blocks"):
        deeplab.build_model(backbone="mobilenet_v2", num_cascaded_blocks=1, multi_grid=None)
    with pytest.raises(ConfigError, match="multi_grid=1,1,1"):
        deeplab.build_model(backbone="mobilenet_v2", multi_grid=(1, 2, 4))


@pytest.mark.slow
def test_load_imagenet_backbone_mobilenet(tmp_path):
    reference = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(None, None, 3)
    )
    _randomize(reference, seed=5)
    path = str(tmp_path / "mobilenet_v2.weights.h5")
    reference.save_weights(path)
    model = deeplab.build_model(
        backbone="mobilenet_v2", num_classes=3, multi_grid=None, atrous_rates=(), output_stride=32
    )
    loaded = deeplab.load_imagenet_backbone(model, path)
    assert loaded == sum(1 for layer in reference.layers if layer.weights) - 2
    np.testing.assert_array_equal(
        model.backbone_model.get_layer("block_7_depthwise").get_weights()[0],
        reference.get_layer("block_7_depthwise").get_weights()[0],
    )
    dm05 = deeplab.build_model(
        backbone="mobilenet_v2_dm05", num_classes=3, multi_grid=None, atrous_rates=()
    )
    with pytest.raises(ConfigError, match="rounds channels like the authors"):
        deeplab.load_imagenet_backbone(dm05, path)


@pytest.mark.slow
def test_describe_prints_the_mobilenet_plan():
    from deeplab.model import description  # pylint: disable=import-outside-toplevel

    text = description.describe(
        {
            "backbone": "mobilenet_v2",
            "num_classes": 21,
            "multi_grid": None,
            "atrous_rates": (),
            "output_stride": 8,
        },
        (129, 129),
    )
    assert "feature map at 129x129: 17x17x320" in text
    rows = {
        line.split()[0]: line.split() for line in text.splitlines() if line.startswith("block_")
    }
    assert rows["block_6"][3:] == ["1", "8", "1"]  # converted: stride 1, keeps rate 1
    assert rows["block_7"][3:] == ["1", "8", "2"]
    assert rows["block_16"][3:] == ["1", "8", "4"]
