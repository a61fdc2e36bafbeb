"""deeplab.export.official and python -m deeplab.import_official: our int8 export round trip, the
authors' files (../shared), TF1 slim checkpoints, and bad files."""

import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import deeplab
import harness
from deeplab.common.errors import UserError
from deeplab.common.inference_options import InferenceOptions
from deeplab.export import official
from deeplab.export import tflite
from deeplab.logdir import checkpoints
from deeplab.model.batch_norm import BatchNormalization
from tests.test_model import _randomize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFICIAL_DIR = os.path.join(REPO, "..", "shared", "data", "deeplab_tflite")
OFFICIAL = os.path.join(OFFICIAL_DIR, "deeplabv3_mnv2_pascal_quant.tflite")
CAMVID_VAL = os.path.join(REPO, "..", "shared", "data", "camvid", "val")
SIZE = (33, 33)


def _random_model(seed=0):
    model = deeplab.build_model(
        backbone="mobilenet_v2_dm05",
        num_classes=5,
        multi_grid=None,
        atrous_rates=(),
        output_stride=16,
        aspp_dropout=0.0,
    )
    _randomize(model.backbone_model, seed)
    rng = np.random.default_rng(seed + 1)
    for layer in deeplab.model.deeplabv3.iter_layers(model.get_layer("aspp")):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, layer.gamma.shape).astype("float32"),
                    rng.normal(0, 0.1, layer.beta.shape).astype("float32"),
                    rng.normal(0, 0.1, layer.gamma.shape).astype("float32"),
                    rng.uniform(0.5, 2.0, layer.gamma.shape).astype("float32"),
                ]
            )
    return model


def _folded(conv, bn):
    """The folded (kernel, bias) of a conv + BN pair, per output channel on the last axis."""
    gamma, beta, mean, var = bn.get_weights()
    factor = gamma / np.sqrt(var + bn.epsilon)
    kernel = conv.get_weights()[0]
    if isinstance(conv, keras.layers.DepthwiseConv2D):
        kernel = kernel * factor.reshape(1, 1, -1, 1)
    else:
        kernel = kernel * factor
    return kernel, beta - mean * factor


def _pairs(model):
    backbone = model.backbone_model
    for conv in official._conv_layers(backbone):  # pylint: disable=protected-access
        yield conv.name, conv, official._following_bn(backbone, conv)  # pylint: disable=protected-access
    aspp = model.get_layer("aspp")
    for conv, bn in list(aspp.branches) + [aspp.pool_branch, aspp.projection]:
        yield conv.name, conv, bn


@pytest.fixture(scope="module")
def int8_roundtrip(tmp_path_factory):
    model = _random_model()
    rng = np.random.default_rng(2)
    calibration = [rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8) for _ in range(4)]
    path = str(tmp_path_factory.mktemp("export") / "ours_int8.tflite")
    with open(path, "wb") as handle:
        handle.write(tflite.convert_int8(model, SIZE, calibration))
    imported, report = official.import_tflite(path)
    return model, imported, report, path


@pytest.mark.slow
def test_int8_export_imports_back_within_quantization_error(int8_roundtrip):
    model, imported, report, _ = int8_roundtrip
    assert report["backbone"] == "mobilenet_v2_dm05" and report["num_classes"] == 5
    assert report["output_stride"] == 16 and report["image_pooling"]
    original = {name: (conv, bn) for name, conv, bn in _pairs(model)}
    checked = 0
    for name, conv, bn in _pairs(imported):
        want_kernel, want_bias = _folded(*original[name])
        got_kernel, got_bias = _folded(conv, bn)
        # int8 weights: symmetric per output channel, step max|w| / 127.
        axis = (0, 1, 3) if isinstance(conv, keras.layers.DepthwiseConv2D) else (0, 1, 2)
        step = np.abs(want_kernel).max(axis=axis, keepdims=True) / 127.0
        assert np.all(np.abs(got_kernel - want_kernel) <= 0.5 * step + 1e-6), name
        assert np.abs(got_bias - want_bias).max() <= 0.02 * (np.abs(want_bias).max() + 1), name
        checked += 1
    assert checked == 51 + 3  # the backbone's convolutions, ASPP 1x1 + pooling + projection
    logits_got = imported.get_layer("logits").get_weights()[0]
    logits_want = model.get_layer("logits").get_weights()[0]
    assert np.abs(logits_got - logits_want).max() <= np.abs(logits_want).max() / 127 + 1e-6


@pytest.mark.slow
def test_imported_bn_is_identity_plus_bias(int8_roundtrip):
    _, imported, _, _ = int8_roundtrip
    bn = imported.backbone_model.get_layer("block_3_expand_BN")
    assert isinstance(bn, BatchNormalization)
    gamma, _, mean, var = bn.get_weights()
    np.testing.assert_array_equal(gamma, 1.0)
    np.testing.assert_array_equal(mean, 0.0)
    np.testing.assert_allclose(var + bn.epsilon, 1.0, atol=1e-7)


@pytest.mark.slow
def test_cli_writes_a_logdir_the_binaries_read(int8_roundtrip, tmp_path):
    _, imported, _, path = int8_roundtrip
    output = str(tmp_path / "imported")
    result = harness.run("deeplab.import_official", f"--tflite={path}", f"--output={output}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "mobilenet_v2_dm05, output stride 16, 5 classes" in result.stdout
    for name in (
        "checkpoint",
        "model_config.json",
        "dataset_info.json",
        "model.weights.h5",
        "import_report.json",
    ):
        assert os.path.exists(os.path.join(output, name)), name
    loaded = checkpoints.load_model(output)
    images = np.random.default_rng(3).normal(0, 40, (1, *SIZE, 3)).astype("float32")
    np.testing.assert_allclose(loaded(images), imported(images), atol=1e-5)
    again = harness.run("deeplab.import_official", f"--tflite={path}", f"--output={output}")
    # A usage error (choose --overwrite or another --output): exit 2.
    assert again.returncode == 2 and "exists and is not empty" in again.stderr
    assert os.path.exists(os.path.join(output, "checkpoint"))  # the first import is kept


@pytest.mark.slow
def test_bad_files_give_one_clear_error(int8_roundtrip, tmp_path):
    _, _, _, path = int8_roundtrip
    with open(path, "rb") as handle:
        content = handle.read()
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(content[: len(content) // 3])
    with pytest.raises(UserError, match="truncated.tflite: corrupt or truncated"):
        official.import_tflite(str(truncated))
    text = tmp_path / "notes.tflite"
    text.write_text("hello")
    with pytest.raises(UserError, match="not a TFLite flatbuffer"):
        official.import_tflite(str(text))
    with pytest.raises(UserError, match="cannot read it"):
        official.import_tflite(str(tmp_path / "missing.tflite"))
    resnet = deeplab.build_model(
        backbone="resnet14_tiny", num_classes=3, multi_grid=None, output_stride=16
    )
    other = tmp_path / "resnet.tflite"
    other.write_bytes(tflite.convert_float(resnet, SIZE))
    with pytest.raises(UserError, match="another architecture"):
        official.import_tflite(str(other))


# ----------------------------------------------------------------------------- TF1 checkpoints


def _slim_checkpoint(model, prefix, extra=None):
    """Writes ``model`` as the authors' TF1 slim checkpoint: their names, BN unfolded, their
    concatenation order [image_pooling, aspp0] in concat_projection/weights."""
    values = {}
    backbone = model.backbone_model
    scopes = {
        "Conv1": "MobilenetV2/Conv",
        "expanded_conv_depthwise": "MobilenetV2/expanded_conv/depthwise",
        "expanded_conv_project": "MobilenetV2/expanded_conv/project",
    }
    for index in range(1, 17):
        for role in ("expand", "depthwise", "project"):
            scopes[f"block_{index}_{role}"] = f"MobilenetV2/expanded_conv_{index}/{role}"
    bn_names = {"Conv1": "bn_Conv1"}
    for name, scope in scopes.items():
        conv = backbone.get_layer(name)
        weight = "depthwise_weights" if "depthwise" in name else "weights"
        values[f"{scope}/{weight}"] = conv.get_weights()[0]
        gamma, beta, mean, var = backbone.get_layer(bn_names.get(name, name + "_BN")).get_weights()
        values.update(
            {
                f"{scope}/BatchNorm/gamma": gamma,
                f"{scope}/BatchNorm/beta": beta,
                f"{scope}/BatchNorm/moving_mean": mean,
                f"{scope}/BatchNorm/moving_variance": var,
            }
        )
    aspp = model.get_layer("aspp")
    for scope, (conv, bn) in (
        ("aspp0", aspp.branches[0]),
        ("image_pooling", aspp.pool_branch),
        ("concat_projection", aspp.projection),
    ):
        kernel = conv.get_weights()[0]
        if scope == "concat_projection":
            filters = kernel.shape[-1]
            kernel = np.concatenate([kernel[:, :, filters:], kernel[:, :, :filters]], axis=2)
        values[f"{scope}/weights"] = kernel
        gamma, beta, mean, var = bn.get_weights()
        values.update(
            {
                f"{scope}/BatchNorm/gamma": gamma,
                f"{scope}/BatchNorm/beta": beta,
                f"{scope}/BatchNorm/moving_mean": mean,
                f"{scope}/BatchNorm/moving_variance": var,
            }
        )
    kernel, bias = model.get_layer("logits").get_weights()
    values["logits/semantic/weights"], values["logits/semantic/biases"] = kernel, bias
    values["global_step"] = np.array(30000, np.int64)
    values["logits/semantic/weights/Momentum"] = np.zeros_like(kernel)
    values.update(extra or {})
    names = sorted(values)
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.constant(values[n]) for n in names],
    )
    return prefix


def test_tf1_slim_checkpoint_maps_every_variable(tmp_path):
    model = _random_model(seed=7)
    prefix = _slim_checkpoint(model, str(tmp_path / "model.ckpt-30000"))
    imported, report = official.import_tf1_checkpoint(prefix, output_stride=16)
    assert report["backbone"] == "mobilenet_v2_dm05" and report["num_classes"] == 5
    assert report["variables"] == 51 * 5 + 3 * 5 + 2
    images = np.random.default_rng(4).normal(0, 40, (2, *SIZE, 3)).astype("float32")
    np.testing.assert_allclose(imported(images), model(images), atol=1e-4)


@pytest.mark.slow
def test_tf1_checkpoint_with_an_unplaced_variable_is_an_error(tmp_path):
    model = _random_model(seed=8)
    prefix = _slim_checkpoint(
        model,
        str(tmp_path / "model.ckpt-1"),
        extra={"decoder/feature_projection0/weights": np.zeros((1, 1, 12, 48), np.float32)},
    )
    with pytest.raises(UserError, match="decoder/feature_projection0/weights has no place"):
        official.import_tf1_checkpoint(prefix)
    with pytest.raises(UserError, match="not a readable checkpoint"):
        official.import_tf1_checkpoint(str(tmp_path / "nothing"))


# ----------------------------------------------------------------------------- the authors' file


@pytest.mark.skipif(
    not (os.path.exists(OFFICIAL) and os.path.isdir(CAMVID_VAL)),
    reason="needs ../shared/data/deeplab_tflite and ../shared/data/camvid",
)
@pytest.mark.slow
def test_official_model_agrees_with_the_authors_interpreter():
    sys.path.insert(0, os.path.join(REPO, "experiments"))
    import official_agreement  # pylint: disable=import-outside-toplevel

    _, images = official_agreement.load_images(CAMVID_VAL, (513, 513), 2)
    shares, classes = official_agreement.agreement(OFFICIAL, images, [], stages=("keras",))
    assert shares["keras"] >= 0.97, shares
    # Real street photos: the PASCAL model finds cars and people in them.
    assert "car" in classes and "person" in classes


# ----------------------------------------------------------------------------- use it


@pytest.mark.slow
def test_imported_folder_works_in_every_binary(data_dir, tmp_path):
    """evaluate (OS 8, multi-scale + flip), export and predict take an import like a run."""
    # pylint: disable=import-outside-toplevel
    from deeplab.evaluation import evaluator as evaluation
    from deeplab.export import predictor
    from deeplab.export import saved_model
    from deeplab.model import fuse

    model = deeplab.build_model(
        backbone="mobilenet_v2_dm05",
        num_classes=3,
        multi_grid=None,
        atrous_rates=(),
        output_stride=16,
        aspp_dropout=0.0,
    )
    _randomize(model.backbone_model, 9)
    folder = official.write_imported(
        model,
        {"backbone": model.backbone, "num_classes": 3, "class_names": ["a", "b", "c"]},
        str(tmp_path / "imported"),
    )
    # BN folding covers the depthwise convolutions too, and keeps the logits.
    fused = fuse.fuse_batch_norm(model)
    images = np.random.default_rng(5).normal(0, 40, (1, 40, 40, 3)).astype("float32")
    np.testing.assert_allclose(fused(images), model(images), atol=1e-4)
    assert fused.batch_norm_folded == 51 + 3  # every conv + BN pair, depthwise included
    results = evaluation.evaluate_checkpoint(
        folder,
        data_dir,
        split="val",
        options=InferenceOptions(output_stride=8, scales=(0.75, 1.0), flip=True),
    )
    assert 0.0 <= results["miou"] <= 1.0 and results["output_stride"] == 8
    exported = saved_model.run_export(folder, str(tmp_path / "export"))
    assert os.path.exists(os.path.join(exported["saved_model"], "saved_model.pb"))
    segmenter = predictor.make_segmenter(model=folder)
    labels = segmenter(np.zeros((40, 40, 3), np.uint8))
    assert labels.shape == (40, 40) and segmenter.class_names == ["a", "b", "c"]
