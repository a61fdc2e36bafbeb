"""The model of Sec. 3: atrous plan, shapes, exact parameter counts, keras.applications
equivalence, serialization, output-stride weight reuse, and the JAX backend."""

import json
import math

import h5py
import keras
import numpy as np
import pytest

import deeplab
import harness
from deeplab.common.errors import ConfigError
from deeplab.common.errors import UserError
from deeplab.model import deeplabv3 as model_lib
from deeplab.model import resnet
from deeplab.model.aspp import ASPP

# ----------------------------------------------------------------------------- the plan


@pytest.mark.parametrize(
    "output_stride, cascaded, multi_grid, expected",
    [
        # (stride, rates) of block1..blockN.
        (16, 0, (1, 2, 4), [(1, (1,) * 3), (2, (1,) * 4), (2, (1,) * 6), (1, (2, 4, 8))]),
        (8, 0, (1, 2, 4), [(1, (1,) * 3), (2, (1,) * 4), (1, (2,) * 6), (1, (4, 8, 16))]),
        (32, 0, None, [(1, (1,) * 3), (2, (1,) * 4), (2, (1,) * 6), (2, (1, 1, 1))]),
        (4, 0, None, [(1, (1,) * 3), (1, (2,) * 4), (1, (4,) * 6), (1, (8, 8, 8))]),
        # Fig. 3(b) / Table 2: block4..7 at OS 16 have rates 2, 4, 8, 16.
        (
            16,
            3,
            (1, 2, 1),
            [
                (1, (1,) * 3),
                (2, (1,) * 4),
                (2, (1,) * 6),
                (1, (2, 4, 2)),
                (1, (4, 8, 4)),
                (1, (8, 16, 8)),
                (1, (16, 32, 16)),
            ],
        ),
        # Table 1: block7 without atrous convolution reaches output stride 256.
        (
            256,
            3,
            None,
            [
                (1, (1,) * 3),
                (2, (1,) * 4),
                (2, (1,) * 6),
                (2, (1, 1, 1)),
                (2, (1, 1, 1)),
                (2, (1, 1, 1)),
                (2, (1, 1, 1)),
            ],
        ),
        (
            64,
            3,
            None,
            [
                (1, (1,) * 3),
                (2, (1,) * 4),
                (2, (1,) * 6),
                (2, (1, 1, 1)),
                (2, (1, 1, 1)),
                (1, (2, 2, 2)),
                (1, (4, 4, 4)),
            ],
        ),
    ],
)
def test_atrous_plan_table(output_stride, cascaded, multi_grid, expected):
    plan = resnet.atrous_plan(output_stride, cascaded, multi_grid, depth=50)
    assert [(b.stride, b.rates) for b in plan] == expected
    assert plan[-1].output_stride == output_stride
    assert [b.name for b in plan] == [f"block{i + 1}" for i in range(4 + cascaded)]


@pytest.mark.parametrize("output_stride, cascaded", [(64, 0), (128, 1), (512, 3), (2, 0), (12, 0)])
def test_atrous_plan_rejects_unreachable_strides(output_stride, cascaded):
    with pytest.raises(ValueError, match="output_stride"):
        resnet.atrous_plan(output_stride, cascaded)


def test_atrous_plan_rejects_bad_multi_grid_and_blocks():
    with pytest.raises(ValueError, match="multi_grid"):
        resnet.atrous_plan(16, 0, (1, 2))
    with pytest.raises(ValueError, match="num_cascaded_blocks"):
        resnet.atrous_plan(16, 4)


@pytest.mark.slow
def test_model_convolutions_follow_the_plan():
    """Every 3x3 conv of block4 gets rate x multi-grid, every stride lands where planned."""
    model = deeplab.build_model(
        backbone="resnet50",
        output_stride=8,
        multi_grid=(1, 2, 4),
        num_cascaded_blocks=1,
        num_classes=3,
    )
    backbone = model.backbone_model
    assert [backbone.get_layer(f"conv5_block{i}_2_conv").dilation_rate for i in (1, 2, 3)] == [
        (4, 4),
        (8, 8),
        (16, 16),
    ]
    assert [backbone.get_layer(f"block5_unit{i}_2_conv").dilation_rate for i in (1, 2, 3)] == [
        (8, 8),
        (16, 16),
        (32, 32),
    ]
    assert backbone.get_layer("conv4_block1_1_conv").strides == (1, 1)
    assert backbone.get_layer("conv4_block1_2_conv").dilation_rate == (2, 2)
    assert backbone.get_layer("conv3_block1_1_conv").strides == (2, 2)
    assert model.get_layer("aspp").rates == (12, 24, 36)  # doubled at OS 8 (Sec. 3.3)


# ----------------------------------------------------------------------------- shapes


def _expected_size(size, output_stride):
    """Each stride-2 step (7x7 conv, max-pool, 1x1 convs) maps n -> ceil(n / 2)."""
    for _ in range(int(math.log2(output_stride))):
        size = math.ceil(size / 2)
    return size


def _valid_combinations(depths):
    for depth in depths:
        for cascaded in range(4):
            for output_stride in resnet.VALID_OUTPUT_STRIDES:
                if output_stride <= 32 * 2**cascaded:
                    yield depth, cascaded, output_stride


# The full grid for ResNet-50 and the tiny net; ResNet-101 differs from ResNet-50 only in the
# number of block3 units, which no output stride changes, so it gets a representative subset
# (each Keras build of it costs ~4 s on 2 cores).
SHAPE_CASES = list(_valid_combinations((50,))) + [
    (101, 0, 4),
    (101, 0, 8),
    (101, 0, 16),
    (101, 0, 32),
    (101, 3, 16),
    (101, 3, 256),
]


@pytest.mark.parametrize("depth, cascaded, output_stride", SHAPE_CASES)
@pytest.mark.slow
def test_backbone_endpoint_shapes(depth, cascaded, output_stride):
    backbone = resnet.build_resnet(
        depth=depth, output_stride=output_stride, num_cascaded_blocks=cascaded, multi_grid=(1, 2, 4)
    )
    height, width = 37, 50  # odd and even, non-square
    spec = backbone.compute_output_spec(keras.KerasTensor((2, height, width, 3)))
    plan = resnet.atrous_plan(output_stride, cascaded, (1, 2, 4), depth)
    assert spec["stem"].shape == (2, _expected_size(height, 4), _expected_size(width, 4), 256 // 4)
    for block in plan:
        channels = (
            2048
            if block.name >= "block4"
            else {"block1": 256, "block2": 512, "block3": 1024}[block.name]
        )
        assert spec[block.name].shape == (
            2,
            _expected_size(height, block.output_stride),
            _expected_size(width, block.output_stride),
            channels,
        )
    assert spec["features"].shape[1:3] == (
        _expected_size(height, output_stride),
        _expected_size(width, output_stride),
    )


@pytest.mark.parametrize("head, upsample", [("aspp", True), ("aspp", False), ("cascade", True)])
def test_logits_shapes_on_any_input_size(head, upsample):
    model = deeplab.build_model(
        backbone="resnet14_tiny",
        num_classes=7,
        output_stride=8,
        head=head,
        num_cascaded_blocks=1,
        upsample_logits=upsample,
        aspp_filters=16,
    )
    for height, width in [(33, 33), (40, 57)]:
        logits = model(np.random.rand(2, height, width, 3).astype("float32"))
        expected = (
            (height, width) if upsample else (_expected_size(height, 8), _expected_size(width, 8))
        )
        assert tuple(logits.shape) == (2, *expected, 7)
        assert logits.dtype == "float32"


# ----------------------------------------------------------------------------- parameters


@pytest.mark.slow
def test_backbone_parameter_counts_match_keras_applications():
    assert resnet.build_resnet(depth=50).count_params() == 23_587_712
    assert resnet.build_resnet(depth=101).count_params() == 42_658_176


@pytest.mark.slow
def test_paper_model_parameter_count():
    model = deeplab.build_model(
        backbone="resnet101",
        num_classes=21,
        output_stride=16,
        multi_grid=(1, 2, 4),
        atrous_rates=(6, 12, 18),
        image_pooling=True,
        head="aspp",
    )
    assert model.count_params() == 58_201_749
    assert model.backbone_model.count_params() == 42_658_176
    # ASPP convs feed BN and carry no bias; the logits conv has one.
    aspp = model.get_layer("aspp")
    assert all(not conv.use_bias for conv, _ in aspp.branches)
    assert model.get_layer("logits").use_bias


@pytest.mark.slow
def test_cascaded_blocks_add_three_block4_units_each():
    base = resnet.build_resnet(depth=50).count_params()
    # One block4 unit without projection: 1x1 2048->512, 3x3 512->512, 1x1 512->2048 (+bias),
    # BN with 4 values per channel.
    unit = (2048 * 512 + 512) + (9 * 512 * 512 + 512) + (512 * 2048 + 2048) + 4 * (512 + 512 + 2048)
    for cascaded in (1, 3):
        assert (
            resnet.build_resnet(
                depth=50, num_cascaded_blocks=cascaded, output_stride=16
            ).count_params()
            == base + 3 * cascaded * unit
        )


# ----------------------------------------------------------------------------- keras.applications


def _randomize(model, seed):
    """Random weights everywhere, BN statistics included, so an equivalence test can fail."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = weights
            weights = [
                rng.uniform(0.5, 1.5, gamma.shape),
                rng.normal(0, 0.1, beta.shape),
                rng.normal(0, 0.1, mean.shape),
                rng.uniform(0.5, 2.0, var.shape),
            ]
        else:
            weights = [
                rng.normal(0, 0.5 / math.sqrt(w[..., 0].size if w.ndim > 1 else 1), w.shape)
                for w in weights
            ]
        layer.set_weights([w.astype("float32") for w in weights])


def _write_legacy_h5(model, path):
    """The layout of Keras' downloadable ``*_notop.h5`` files (attrs layer_names / weight_names)."""
    with h5py.File(path, "w") as handle:
        names = [layer.name for layer in model.layers]
        handle.attrs["layer_names"] = [n.encode() for n in names]
        handle.attrs["backend"] = b"tensorflow"
        handle.attrs["keras_version"] = b"2.2.4"
        for layer in model.layers:
            group = handle.create_group(layer.name)
            weight_names = [f"{layer.name}/{v.name}:0".encode() for v in layer.weights]
            group.attrs["weight_names"] = weight_names
            for name, value in zip(weight_names, layer.get_weights()):
                group.create_dataset(name.decode(), data=value)


@pytest.fixture(scope="module")
def keras_resnet50():
    reference = keras.applications.ResNet50(
        weights=None, include_top=False, input_shape=(None, None, 3)
    )
    _randomize(reference, seed=1)
    return reference


@pytest.mark.parametrize("file_format", ["weights.h5", "legacy_h5"])
@pytest.mark.slow
def test_equivalence_with_keras_applications_resnet50(keras_resnet50, tmp_path, file_format):
    if file_format == "weights.h5":
        path = str(tmp_path / "resnet50.weights.h5")
        keras_resnet50.save_weights(path)
    else:
        path = str(tmp_path / "resnet50_notop.h5")
        _write_legacy_h5(keras_resnet50, path)
    model = deeplab.build_model(
        backbone="resnet50", output_stride=32, multi_grid=None, num_classes=3
    )
    loaded = deeplab.load_imagenet_backbone(model, path)
    assert loaded == sum(1 for layer in keras_resnet50.layers if layer.weights)

    ours = model.backbone_model
    names = {
        "block1": "conv2_block3_out",
        "block2": "conv3_block4_out",
        "block3": "conv4_block6_out",
        "block4": "conv5_block3_out",
    }
    reference = keras.Model(
        keras_resnet50.inputs, {k: keras_resnet50.get_layer(v).output for k, v in names.items()}
    )
    # Even sizes are where "same" padding would differ from keras' explicit padding.
    images = np.random.default_rng(0).normal(0, 50, (2, 64, 48, 3)).astype("float32")
    expected = reference.predict(images, verbose=0)
    got = ours.predict(images, verbose=0)
    for key in names:
        scale = float(np.abs(expected[key]).max())
        assert scale > 1e-3
        np.testing.assert_allclose(got[key] / scale, expected[key] / scale, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_load_imagenet_backbone_rejects_the_other_depth(keras_resnet50, tmp_path):
    path = str(tmp_path / "resnet50.weights.h5")
    keras_resnet50.save_weights(path)
    model = deeplab.build_model(backbone="resnet101", num_classes=3)
    with pytest.raises(UserError, match="ResNet-50 weights.*resnet101"):
        deeplab.load_imagenet_backbone(model, path)
    with pytest.raises(UserError, match="not found"):
        deeplab.load_imagenet_backbone(model, str(tmp_path / "missing.h5"))
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not an hdf5 file")
    with pytest.raises(UserError, match="cannot load"):
        deeplab.load_imagenet_backbone(model, str(garbage))


# ----------------------------------------------------------------------------- serialization


def _tiny(**overrides):
    kwargs = dict(
        backbone="resnet14_tiny",
        num_classes=5,
        output_stride=16,
        aspp_filters=16,
        multi_grid=(1, 2, 4),
        atrous_rates=(6, 12, 18),
        image_pooling=True,
    )
    kwargs.update(overrides)
    return deeplab.build_model(**kwargs)


def _randomize_all(model, seed):
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if "moving_variance" in variable.path:
            value = rng.uniform(0.5, 2.0, shape)
        else:
            value = rng.normal(0, 0.3, shape)
        variable.assign(value.astype("float32"))


def test_get_config_round_trip():
    model = _tiny(num_cascaded_blocks=2, head="cascade", upsample_logits=False)
    config = model.get_config()
    json.dumps(config)  # plain values only
    clone = model_lib.DeepLabV3.from_config(config)
    assert clone.get_config() == config
    aspp = ASPP(rates=(3, 6), image_pooling=False, filters=8, name="a")
    assert ASPP.from_config(aspp.get_config()).get_config() == aspp.get_config()


@pytest.mark.slow
def test_performance_options_are_not_config(tmp_path):
    """PerformanceOptions choose kernels: not in get_config / model_config.json, so configs
    written before they existed load, a config rebuilds with the defaults, and load_model /
    rebuild_with_output_stride keep the options they are given."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from deeplab.logdir import checkpoints  # pylint: disable=import-outside-toplevel
    from deeplab.model.options import PerformanceOptions  # pylint: disable=import-outside-toplevel

    slow = PerformanceOptions(fused_batch_norm=False, native_dilation=False)
    model = _tiny(performance=slow)
    assert model.performance == slow and "performance" not in model.get_config()
    assert "performance" not in model_lib.DeepLabV3.complete_config(model.get_config())
    assert model.get_config() == _tiny().get_config()
    _randomize_all(model, 5)
    checkpoints.write_run_info(str(tmp_path), model)
    tf.train.CheckpointManager(
        checkpoints.make_checkpoint(model),
        str(tmp_path),
        max_to_keep=1,
        checkpoint_name=checkpoints.CHECKPOINT_NAME,
    ).save(checkpoint_number=1)
    images = np.random.default_rng(1).normal(0, 1, (1, 33, 33, 3)).astype("float32")
    expected = model(images).numpy()
    loaded = checkpoints.load_model(str(tmp_path))
    assert loaded.performance == PerformanceOptions()
    given = checkpoints.load_model(str(tmp_path), performance=slow, output_stride=8)
    assert given.performance == slow and given.output_stride == 8
    assert given.get_layer("aspp").native_dilation is False
    np.testing.assert_allclose(loaded(images).numpy(), expected, atol=1e-5)
    folded = checkpoints.load_model(str(tmp_path), performance=slow, fuse_batch_norm=True)
    assert folded.performance == slow
    np.testing.assert_allclose(folded(images).numpy(), expected, atol=1e-4)
    assert deeplab.rebuild_with_output_stride(model, 8).performance == slow
    assert (
        deeplab.rebuild_with_output_stride(model, 8, performance=None).performance
        == PerformanceOptions()
    )


@pytest.mark.slow
def test_keras_file_round_trip(tmp_path):
    model = _tiny()
    _randomize_all(model, 3)
    images = np.random.default_rng(1).normal(0, 1, (2, 33, 41, 3)).astype("float32")
    expected = model.predict(images, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, model_lib.DeepLabV3)
    assert restored.get_config() == model.get_config()
    np.testing.assert_allclose(restored.predict(images, verbose=0), expected, atol=1e-5)


@pytest.mark.slow
def test_output_stride_16_weights_load_at_8(tmp_path):
    """Tables 4, 6, 10: a model trained at OS 16 is evaluated at OS 8 with the same weights."""
    model16 = _tiny(output_stride=16, num_cascaded_blocks=1)
    _randomize_all(model16, 4)
    path = str(tmp_path / "os16.weights.h5")
    model16.save_weights(path)
    model8 = _tiny(output_stride=8, num_cascaded_blocks=1)
    assert [v.path for v in model8.weights] == [v.path for v in model16.weights]
    model8.load_weights(path)
    for a, b in zip(model8.weights, model16.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    switched = deeplab.rebuild_with_output_stride(model16, 8)
    images = np.random.default_rng(2).normal(0, 1, (1, 65, 65, 3)).astype("float32")
    out8, switched8 = model8.predict(images, verbose=0), switched.predict(images, verbose=0)
    np.testing.assert_allclose(switched8, out8, atol=1e-5)
    assert switched.get_layer("aspp").rates == (12, 24, 36)
    # The stride really changed: OS 8 features differ from OS 16 ones.
    assert np.abs(model16.predict(images, verbose=0) - out8).max() > 1e-3


# ----------------------------------------------------------------------------- training knobs


@pytest.mark.slow
def test_freeze_batch_norm_freezes_the_statistics_and_trains_gamma_and_beta():
    """--freeze_batch_norm as in the authors' code: moving statistics used and never updated,
    gamma and beta still trained (slim's is_training=False BN keeps them trainable)."""
    model = _tiny(freeze_batch_norm=True, aspp_dropout=0.0)
    _randomize_all(model, 5)
    bn_layers = [
        l for l in model_lib.iter_layers(model) if isinstance(l, keras.layers.BatchNormalization)
    ]
    assert bn_layers and all(l.freeze_statistics and l.trainable for l in bn_layers)
    trainable = {v.path for v in model.trainable_weights}
    assert sum("gamma" in p for p in trainable) == len(bn_layers)
    assert sum("beta" in p for p in trainable) == len(bn_layers)
    assert not any("moving" in p for p in trainable)
    images = np.random.default_rng(3).normal(0, 1, (2, 33, 33, 3)).astype("float32")
    before = [np.asarray(l.moving_mean).copy() for l in bn_layers]
    np.testing.assert_allclose(
        np.asarray(model(images, training=True)),
        np.asarray(model(images, training=False)),
        atol=1e-5,
    )
    for layer, mean in zip(bn_layers, before):
        np.testing.assert_array_equal(np.asarray(layer.moving_mean), mean)
    # A gradient reaches gamma and beta.
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(images, training=True)))
    gammas = [l.gamma for l in bn_layers]
    grads = tape.gradient(loss, gammas)
    assert all(g is not None for g in grads) and any(
        float(tf.reduce_max(tf.abs(g))) > 0 for g in grads
    )
    unfrozen = _tiny(aspp_dropout=0.0)
    _randomize_all(unfrozen, 5)
    assert len(unfrozen.trainable_weights) == len(model.trainable_weights)
    assert (
        np.abs(
            np.asarray(unfrozen(images, training=True))
            - np.asarray(unfrozen(images, training=False))
        ).max()
        > 1e-3
    )


def test_aspp_dropout_is_training_only_and_has_no_variables():
    with_dropout, without = _tiny(aspp_dropout=0.5), _tiny(aspp_dropout=0.0)
    assert [v.path for v in with_dropout.weights] == [v.path for v in without.weights]
    without.set_weights(with_dropout.get_weights())
    images = np.random.default_rng(4).normal(0, 1, (2, 33, 33, 3)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(with_dropout(images, training=False)),
        np.asarray(without(images, training=False)),
        atol=1e-6,
    )
    assert with_dropout.get_config()["aspp_dropout"] == 0.5
    with pytest.raises(ConfigError, match="aspp_dropout"):
        _tiny(aspp_dropout=1.0)


def test_weight_decay_is_half_l2_on_conv_kernels():
    model = _tiny(weight_decay=1e-4)
    kernels = [l.kernel for l in model_lib.iter_layers(model) if isinstance(l, keras.layers.Conv2D)]
    assert len(model.losses) == len(kernels)
    expected = sum(1e-4 / 2 * float(np.sum(np.square(np.asarray(k)))) for k in kernels)
    assert float(sum(np.asarray(l) for l in model.losses)) == pytest.approx(expected, rel=1e-4)
    assert not _tiny(weight_decay=0.0).losses


def test_batch_norm_momentum_reaches_every_bn_layer():
    model = _tiny(batch_norm_momentum=0.95)
    momenta = {
        l.momentum
        for l in model_lib.iter_layers(model)
        if isinstance(l, keras.layers.BatchNormalization)
    }
    assert momenta == {0.95}


def test_bad_configs_raise_config_errors():
    with pytest.raises(ConfigError, match="backbone"):
        deeplab.build_model(backbone="vgg16")
    with pytest.raises(ConfigError, match="head"):
        deeplab.build_model(backbone="resnet14_tiny", head="fcn")
    with pytest.raises(ConfigError, match="output_stride"):
        deeplab.build_model(backbone="resnet14_tiny", output_stride=64)
    with pytest.raises(ConfigError, match="num_classes"):
        deeplab.build_model(backbone="resnet14_tiny", num_classes=0)


def test_scale_atrous_rates():
    assert model_lib.scale_atrous_rates((6, 12, 18), 16) == (6, 12, 18)
    assert model_lib.scale_atrous_rates((6, 12, 18), 8) == (12, 24, 36)
    assert model_lib.scale_atrous_rates((6, 12, 18, 24), 4) == (24, 48, 72, 96)
    assert model_lib.scale_atrous_rates((6, 12, 18), 32) == (3, 6, 9)


def test_image_pooling_branch_is_a_constant_map():
    """Bilinear upsampling of the 1x1 pooled features equals broadcasting them."""
    aspp = ASPP(rates=(2,), image_pooling=True, filters=4, name="aspp_test")
    features = np.random.default_rng(6).normal(0, 1, (1, 5, 7, 8)).astype("float32")
    aspp(features)
    conv, bn = aspp.pool_branch
    pooled = np.maximum(np.asarray(bn(conv(features.mean(axis=(1, 2), keepdims=True)))), 0)
    resized = keras.ops.image.resize(pooled, (5, 7), interpolation="bilinear")
    np.testing.assert_allclose(
        np.asarray(resized), np.broadcast_to(pooled, (1, 5, 7, 4)), atol=1e-6
    )


# ----------------------------------------------------------------------------- JAX backend

JAX_SCRIPT = r"""
import sys, numpy as np, keras, deeplab
assert keras.backend.backend() == "jax", keras.backend.backend()
model = deeplab.build_model(**__KWARGS__)
model.load_weights(sys.argv[1])
np.save(sys.argv[3], np.asarray(model.predict(np.load(sys.argv[2]), verbose=0)))
"""


@pytest.mark.slow
def test_jax_backend_gives_the_same_logits(tmp_path):
    pytest.importorskip("jax")
    kwargs = dict(
        backbone="resnet14_tiny",
        num_classes=5,
        output_stride=8,
        aspp_filters=16,
        multi_grid=(1, 2, 4),
        atrous_rates=(6, 12, 18),
        image_pooling=True,
        num_cascaded_blocks=1,
    )
    model = deeplab.build_model(**kwargs)
    _randomize_all(model, 7)
    images = np.random.default_rng(8).normal(0, 1, (2, 45, 37, 3)).astype("float32")
    expected = model.predict(images, verbose=0)
    model.save_weights(str(tmp_path / "w.weights.h5"))
    np.save(tmp_path / "images.npy", images)
    script = tmp_path / "run_jax.py"
    script.write_text(JAX_SCRIPT.replace("__KWARGS__", repr(kwargs)))
    result = harness.run(
        script,
        tmp_path / "w.weights.h5",
        tmp_path / "images.npy",
        tmp_path / "out.npy",
        env={"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = np.load(tmp_path / "out.npy")
    assert got.shape == expected.shape == (2, 45, 37, 5)
    assert np.abs(expected).max() > 1e-2
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_plan_lists_one_rate_per_unit():
    for depth in (14, 50, 101):
        plan = resnet.atrous_plan(16, 2, (1, 2, 4), depth)
        units = resnet.BLOCK_UNITS[depth] + (3, 3)
        assert [len(b.rates) for b in plan] == list(units)


@pytest.mark.slow
def test_logits_start_from_the_authors_truncated_normal():
    """The authors initialise the logits kernel from a truncated normal of stddev 0.01
    (``--logits_init_stddev``, the default); 0 keeps Keras' Glorot uniform."""
    keras.utils.set_random_seed(0)
    kernel = _tiny(num_classes=21).get_layer("logits").kernel.numpy()
    assert kernel.std() == pytest.approx(0.0088, abs=0.0015)  # 0.01 truncated at 2 sigma
    assert np.abs(kernel).max() <= 0.02 + 1e-7
    glorot = _tiny(num_classes=21, logits_init_stddev=0.0).get_layer("logits").kernel.numpy()
    limit = np.sqrt(6.0 / (kernel.shape[2] + 21))
    assert np.abs(glorot).max() > 0.02 and np.abs(glorot).max() <= limit
    with pytest.raises(ConfigError, match="--logits_init_stddev"):
        _tiny(logits_init_stddev=-1.0)


@pytest.mark.slow
def test_batch_norm_decay_follows_the_authors_per_backbone():
    """The authors' MobileNetV2 backbone decays BN statistics at 0.997 (slim's training_scope),
    their ASPP at 0.9997; the ResNet backbone keeps the paper's 0.9997 unless set."""

    def momenta(model):
        found = {}
        for layer in model_lib.iter_layers(model):
            if isinstance(layer, keras.layers.BatchNormalization):
                where = "head" if layer.path.startswith(("aspp", "decoder")) else "backbone"
                found.setdefault(where, set()).add(layer.momentum)
        return found

    mnv2 = deeplab.build_model(
        backbone="mobilenet_v2", num_classes=3, multi_grid=(1, 1, 1), atrous_rates=()
    )
    assert momenta(mnv2) == {"backbone": {0.997}, "head": {0.9997}}
    resnet = _tiny()
    assert momenta(resnet) == {"backbone": {0.9997}, "head": {0.9997}}
    both = _tiny(backbone_batch_norm_momentum=0.95, batch_norm_momentum=0.99)
    assert momenta(both) == {"backbone": {0.95}, "head": {0.99}}
    assert (
        deeplab.build_model(**{**mnv2.get_config(), "name": "again"}).get_config()[
            "backbone_batch_norm_momentum"
        ]
        == 0.0
    )


# ----------------------------------------------------------------------------- the parts


def test_the_settings_are_the_config_keys_and_the_model_config_section():
    """ModelSettings is the one list of model settings: DeepLabV3's get_config keys, and (under
    the flags' names, without num_classes and input_shape) the config's model section with the
    same defaults."""
    from deeplab.config.experiment import ModelConfig  # pylint: disable=import-outside-toplevel
    from deeplab.model.settings import ModelSettings  # pylint: disable=import-outside-toplevel

    model = _tiny()
    assert set(model.get_config()) == {"name", "trainable"} | set(ModelSettings.names())
    assert model.settings == ModelSettings(backbone="resnet14_tiny", num_classes=5, aspp_filters=16)
    defaults = ModelSettings.defaults()
    del defaults["input_shape"]
    assert ModelConfig().build_kwargs(defaults["num_classes"]) == defaults
    assert ModelConfig.from_build_kwargs(ModelSettings().config()) == ModelConfig()


@pytest.mark.parametrize("name", ["resnet14_tiny", "mobilenet_v2_dm05"])
def test_the_backbone_factory_returns_the_backbone_and_its_plan(name):
    from deeplab.model import backbones  # pylint: disable=import-outside-toplevel
    from deeplab.model import mobilenet  # pylint: disable=import-outside-toplevel
    from deeplab.model.settings import ModelSettings  # pylint: disable=import-outside-toplevel

    settings = ModelSettings(backbone=name, output_stride=8, multi_grid=(1, 1, 1))
    backbone = backbones.build_backbone(settings)
    assert backbone.model.name == name and backbone.spec is backbones.BACKBONES[name]
    expected = (
        resnet.atrous_plan(8, 0, (1, 1, 1), 14)
        if name == "resnet14_tiny"
        else mobilenet.mobilenet_plan(8)
    )
    assert backbone.plan == expected == backbones.stride_plan(settings)
    assert set(backbone.model.output) >= {"stem", "block1", "block2", "features"}
    with pytest.raises(ConfigError, match="--backbone='vgg16'"):
        backbones.build_backbone(settings.replace(backbone="vgg16"))


def test_the_head_factory():
    """ASPP with its rates scaled to the output stride; ASPP-lite (no atrous rates): the 1x1
    branch and image pooling; the cascade: no layer, the logits read the last block."""
    from deeplab.model import heads  # pylint: disable=import-outside-toplevel
    from deeplab.model.options import PerformanceOptions  # pylint: disable=import-outside-toplevel
    from deeplab.model.settings import ModelSettings  # pylint: disable=import-outside-toplevel

    options = PerformanceOptions()
    aspp = heads.build_head(ModelSettings(output_stride=8, aspp_filters=4), options)
    assert aspp.name == "aspp" and aspp.rates == (12, 24, 36) and aspp.image_pooling
    lite = heads.build_head(ModelSettings(atrous_rates=()), options)
    assert len(lite.branches) == 1 and lite.pool_branch is not None
    assert heads.build_head(ModelSettings(head="cascade"), options) is None
    assert heads.HEADS["cascade"].layer_names == () and heads.HEADS["aspp"].layer_names == ("aspp",)
    with pytest.raises(ConfigError, match="--head='fcn'"):
        heads.check_head(ModelSettings(head="fcn"))
