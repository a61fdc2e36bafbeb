"""The DeepLabv3+ decoder: every backbone and output stride, its geometry, training at the
decoder's stride (Table 8 path too), and the OS switch."""

import numpy as np
import pytest

import deeplab
from deeplab import checkpoints
from deeplab import train as train_lib
from deeplab.decoder import Decoder
from deeplab.errors import ConfigError
from tests.test_train import _config

MOBILENET = {"backbone": "mobilenet_v2_dm05", "multi_grid": None, "atrous_rates": ()}
TINY = {"backbone": "resnet14_tiny", "atrous_rates": (1, 2, 3), "aspp_filters": 16}


@pytest.mark.parametrize("kwargs", [TINY, MOBILENET], ids=["resnet", "mobilenet"])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_every_backbone_and_output_stride(kwargs, output_stride):
    model = deeplab.build_model(num_classes=3, output_stride=16, decoder_output_stride=4,
                                aspp_dropout=0.0, **kwargs)
    switched = deeplab.rebuild_with_output_stride(model, output_stride)
    images = np.random.default_rng(0).normal(0, 40, (1, 65, 49, 3)).astype("float32")
    assert switched(images).shape == (1, 65, 49, 3)
    assert switched.logits_stride == 4 and switched.get_layer("decoder").feature_stride == output_stride
    # The decoder's variables do not depend on the output stride.
    assert [v.path for v in switched.weights] == [v.path for v in model.weights]


def test_decoder_places_feature_i_at_stride_position():
    """An impulse at ASPP feature (i, j) of a stride-s map lands on decoder position
    (i * s / 4, j * s / 4): pixel s * i of the image, as everywhere in this project."""
    for stride in (8, 16):
        layer = Decoder(stride, 4, low_level_filters=1, filters=1)
        size = 8 * stride // 4 + 1
        features = np.zeros((1, 9, 9, 1), np.float32)
        low = np.zeros((1, size, size, 1), np.float32)
        layer.build(((1, 9, 9, 1), low.shape))
        (low_conv, low_bn), (conv0, bn0), (conv1, bn1) = layer.low_level, *layer.convs
        low_conv.set_weights([np.zeros((1, 1, 1, 1), np.float32)])
        for conv in (conv0, conv1):
            kernel = np.zeros(conv.kernel.shape, np.float32)
            kernel[1, 1, 0, 0] = 1.0  # centre tap of the upsampled channel
            conv.set_weights([kernel])
        for bn in (low_bn, bn0, bn1):
            bn.set_weights([np.ones(1, np.float32), np.zeros(1, np.float32),
                            np.zeros(1, np.float32), np.full(1, 1 - bn.epsilon, np.float32)])
        for i, j in ((2, 5), (7, 1)):
            features[:] = 0
            features[0, i, j, 0] = 1.0
            out = np.asarray(layer([features, low]))[0, :, :, 0]
            peak = np.unravel_index(np.argmax(out), out.shape)
            assert peak == (i * stride // 4, j * stride // 4)
            assert out[peak] == pytest.approx(1.0, abs=1e-6)


def test_decoder_flag_errors():
    with pytest.raises(ConfigError, match="decoder_output_stride=2"):
        deeplab.build_model(num_classes=3, decoder_output_stride=2, **TINY)
    with pytest.raises(ConfigError, match="above --output_stride=4"):
        deeplab.build_model(num_classes=3, output_stride=4, decoder_output_stride=8, **TINY)


def test_training_with_the_decoder(data_dir, tmp_path):
    model = {"decoder_output_stride": 4}
    result = train_lib.train(_config(data_dir, tmp_path / "plus", training_steps=2, model=model,
                                     image_summary_steps=0))
    assert np.isfinite(result.history[2]["loss"])
    loaded = checkpoints.load_model(str(tmp_path / "plus"))
    assert loaded.decoder_output_stride == 4
    # Table 8 path: the loss at the logits' stride (4 with the decoder: 9x9 for 33 px crops).
    down = train_lib.train(_config(data_dir, tmp_path / "down", training_steps=1,
                                   model={"decoder_output_stride": 4, "upsample_logits": False},
                                   image_summary_steps=0))
    assert 4 * 3 * 3 < down.history[1]["valid_pixels"] <= 4 * 9 * 9
