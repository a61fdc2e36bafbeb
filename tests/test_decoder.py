"""The DeepLabv3+ decoder: every backbone and output stride, its geometry, training at the
decoder's stride (Table 8 path too), and the OS switch."""

import numpy as np
import pytest

import deeplab
from deeplab.common.errors import ConfigError
from deeplab.logdir import checkpoints
from deeplab.model.decoder import Decoder
from deeplab.training import trainer as train_lib
from tests.test_train import _config

MOBILENET = {"backbone": "mobilenet_v2_dm05", "multi_grid": None, "atrous_rates": ()}
TINY = {"backbone": "resnet14_tiny", "atrous_rates": (1, 2, 3), "aspp_filters": 16}


@pytest.mark.parametrize("kwargs", [TINY, MOBILENET], ids=["resnet", "mobilenet"])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.slow
def test_every_backbone_and_output_stride(kwargs, output_stride):
    model = deeplab.build_model(
        num_classes=3, output_stride=16, decoder_output_stride=4, aspp_dropout=0.0, **kwargs
    )
    switched = deeplab.rebuild_with_output_stride(model, output_stride)
    images = np.random.default_rng(0).normal(0, 40, (1, 65, 49, 3)).astype("float32")
    assert switched(images).shape == (1, 65, 49, 3)
    assert (
        switched.logits_stride == 4
        and switched.get_layer("decoder").feature_stride == output_stride
    )
    # The decoder's variables do not depend on the output stride.
    assert [v.path for v in switched.weights] == [v.path for v in model.weights]


@pytest.mark.parametrize("separable", [True, False], ids=["separable", "plain"])
def test_decoder_places_feature_i_at_stride_position(separable):
    """An impulse at ASPP feature (i, j) of a stride-s map lands on decoder position
    (i * s / 4, j * s / 4): pixel s * i of the image, as everywhere in this project."""
    for stride in (8, 16):
        layer = Decoder(stride, 4, low_level_filters=1, filters=1, separable=separable)
        size = 8 * stride // 4 + 1
        features = np.zeros((1, 9, 9, 1), np.float32)
        low = np.zeros((1, size, size, 1), np.float32)
        layer.build(((1, 9, 9, 1), low.shape))
        low_conv, low_bn = layer.low_level
        low_conv.set_weights([np.zeros((1, 1, 1, 1), np.float32)])
        bns = [low_bn]
        for stage in layer.convs:
            for conv, bn in stage:
                kernel = np.zeros(tuple(conv.kernel.shape), np.float32)
                if kernel.shape[0] == 3:
                    kernel[1, 1, 0, 0] = 1.0  # centre tap of the upsampled channel
                else:
                    kernel[0, 0, 0, 0] = 1.0
                conv.set_weights([kernel])
                bns.append(bn)
        for bn in bns:
            bn.set_weights(
                [
                    np.ones(bn.gamma.shape, np.float32),
                    np.zeros(bn.gamma.shape, np.float32),
                    np.zeros(bn.gamma.shape, np.float32),
                    np.full(bn.gamma.shape, 1 - bn.epsilon, np.float32),
                ]
            )
        for i, j in ((2, 5), (7, 1)):
            features[:] = 0
            features[0, i, j, 0] = 1.0
            out = np.asarray(layer([features, low]))[0, :, :, 0]
            peak = np.unravel_index(np.argmax(out), out.shape)
            assert peak == (i * stride // 4, j * stride // 4)
            assert out[peak] == pytest.approx(1.0, abs=1e-6)


def test_separable_decoder_layers_and_config():
    """The authors' decoder: per 3x3 stage a depthwise 3x3 + BN + ReLU and a 1x1 + BN + ReLU,
    no decay on the depthwise kernel; the plain one a 3x3 conv. Both survive get_config."""
    rng = np.random.default_rng(1)
    features = rng.normal(size=(2, 3, 3, 8)).astype("float32")
    low = rng.normal(size=(2, 9, 9, 5)).astype("float32")
    for separable, kinds in ((True, ["DepthwiseConv2D", "Conv2D"]), (False, ["Conv2D"])):
        layer = Decoder(
            16, 4, low_level_filters=4, filters=6, separable=separable, weight_decay=1e-4
        )
        out = np.asarray(layer([features, low], training=False))
        assert out.shape == (2, 9, 9, 6) and out.min() >= 0.0
        for stage in layer.convs:
            assert [type(conv).__name__ for conv, _ in stage] == kinds
        regularized = [
            conv
            for stage in layer.convs
            for conv, _ in stage
            if getattr(conv, "kernel_regularizer", None) is not None
        ]
        assert len(regularized) == 2  # the 3x3 (plain) or the 1x1 pointwise (separable) ones
        assert len(layer.losses) == 3  # + the low-level projection
        # Depthwise 3x3 (8+4 ch) + BN + 1x1 -> 6 + BN, then 3x3 depthwise (6) + 1x1 -> 6 + BNs.
        expected = (
            4 * 5
            + 4 * 4
            + (
                (9 * 12 + 4 * 12 + 12 * 6 + 4 * 6 + 9 * 6 + 4 * 6 + 6 * 6 + 4 * 6)
                if separable
                else (9 * 12 * 6 + 4 * 6 + 9 * 6 * 6 + 4 * 6)
            )
        )
        assert sum(int(np.prod(w.shape)) for w in layer.weights) == expected
        clone = Decoder.from_config(layer.get_config())
        clone([features, low])
        clone.set_weights(layer.get_weights())
        np.testing.assert_allclose(
            np.asarray(clone([features, low], training=False)), out, rtol=1e-5, atol=1e-5
        )
    model = deeplab.build_model(
        num_classes=3, decoder_output_stride=4, decoder_separable=False, **TINY
    )
    assert not model.get_layer("decoder").separable
    assert not type(model).from_config(model.get_config()).get_layer("decoder").separable


def test_decoder_flag_errors():
    with pytest.raises(ConfigError, match="decoder_output_stride=2"):
        deeplab.build_model(num_classes=3, decoder_output_stride=2, **TINY)
    with pytest.raises(ConfigError, match="above --output_stride=4"):
        deeplab.build_model(num_classes=3, output_stride=4, decoder_output_stride=8, **TINY)


@pytest.mark.slow
def test_training_with_the_decoder(data_dir, tmp_path):
    model = {"decoder_output_stride": 4}
    result = train_lib.train(
        _config(data_dir, tmp_path / "plus", training_steps=2, model=model, image_summary_steps=0)
    )
    assert np.isfinite(result.history[2]["loss"])
    loaded = checkpoints.load_model(str(tmp_path / "plus"))
    assert loaded.decoder_output_stride == 4
    # Table 8 path: the loss at the logits' stride (4 with the decoder: 9x9 for 33 px crops).
    down = train_lib.train(
        _config(
            data_dir,
            tmp_path / "down",
            training_steps=1,
            model={"decoder_output_stride": 4, "upsample_logits": False},
            image_summary_steps=0,
        )
    )
    assert 4 * 3 * 3 < down.history[1]["valid_pixels"] <= 4 * 9 * 9


@pytest.mark.parametrize("separable", [True, False], ids=["separable", "plain"])
def test_new_decoder_keeps_the_activation_scale(separable):
    """A fine-tuned model's decoder starts from its initializers with BN statistics frozen at
    identity (camvid_from_pascal.flags): its output must keep the scale of its input. Keras'
    default depthwise initializer shrank it ~200x through two stages (logits ~0, no learning)."""
    rng = np.random.default_rng(2)
    features = np.maximum(rng.normal(size=(1, 9, 9, 256)), 0).astype("float32")
    low = np.maximum(rng.normal(size=(1, 33, 33, 24)), 0).astype("float32")
    layer = Decoder(32, 4, separable=separable)
    out = np.asarray(layer([features, low], training=False))
    ratio = np.sqrt((out**2).mean()) / np.sqrt((features**2).mean())
    assert 0.05 < ratio < 5.0, ratio
