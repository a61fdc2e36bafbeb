"""deeplab.model.description and python -m deeplab.describe: parameter count, conv GFLOPs,
plan table, feature size."""

import keras
import pytest

import deeplab
import harness
from deeplab.model import description


def test_conv_flops_counts_atrous_convs_at_their_logical_size():
    inputs = keras.Input((20, 30, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)  # 20x30
    x = keras.layers.Conv2D(4, 3, padding="same", dilation_rate=4)(x)  # atrous
    x = keras.layers.Conv2D(6, 1, strides=2)(x)  # 10x15
    model = keras.Model(inputs, x)
    total, per_op = description.conv_flops(model, 20, 30)
    expected = (2 * 9 * 3 * 8 * 20 * 30) + (2 * 9 * 8 * 4 * 20 * 30) + (2 * 1 * 4 * 6 * 10 * 15)
    assert len(per_op) == 3
    assert total == expected


@pytest.mark.slow
def test_resnet50_output_stride_16_at_513_matches_the_reference_count():
    # README.md: ResNet-50 OS 16 at 513x513 = 99.2 GFLOPs over all convolutions.
    model = deeplab.build_model(backbone="resnet50", output_stride=16, num_classes=21)
    total, per_op = description.conv_flops(model, 513, 513)
    assert len(per_op) == 53 + 6 + 1  # backbone, ASPP (4 + pooling + projection), logits
    assert total / 1e9 == pytest.approx(99.2, abs=0.05)


@pytest.mark.slow
def test_describe_binary_prints_parameters_flops_and_plan():
    result = harness.run(
        "deeplab.describe",
        "--backbone=resnet14_tiny",
        "--num_classes=5",
        "--output_stride=8",
        "--multi_grid=1,2,4",
        "--crop_size=65",
        "--aspp_filters=16",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    model = deeplab.build_model(
        backbone="resnet14_tiny",
        num_classes=5,
        output_stride=8,
        multi_grid=(1, 2, 4),
        aspp_filters=16,
    )
    assert f"parameters: {model.count_params():,}" in out
    total, _ = description.conv_flops(model, 65, 65)
    assert f"forward GFLOPs at 65x65: {total / 1e9:.1f}" in out
    assert "feature map at 65x65: 9x9x512" in out  # ceil(65 / 8) = 9; 2048 / 4 channels
    assert "block3  1      1       8              2" in out
    assert "block4  1      1       8              4\n" in out  # one unit: multi-grid r1 x 4
    assert "ASPP rates at this output stride: (12, 24, 36)" in out


@pytest.mark.slow
def test_describe_binary_reports_bad_flags_in_one_line():
    result = harness.run(
        "deeplab.describe", "--backbone=resnet14_tiny", "--output_stride=64", timeout=120
    )
    assert result.returncode == 2  # a usage error: a setting the model refuses
    assert "deeplab.describe: error: " in result.stderr and "output_stride=64" in result.stderr
    assert "Traceback" not in result.stderr
