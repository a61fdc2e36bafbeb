"""deeplab.model.quantize: quantization-aware training (fake quantization where the int8 TFLite
graph rounds, BN folded, straight-through gradients) and its int8 export without calibration."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers
from keras import ops

import export_fixtures as fx
from deeplab.common.errors import ConfigError
from deeplab.common.errors import UserError
from deeplab.export import tflite
from deeplab.model import fuse
from deeplab.model import quantize
from deeplab.model.deeplabv3 import build_model
from deeplab.model.deeplabv3 import freeze_batch_norm_statistics
from deeplab.model.deeplabv3 import iter_layers
from deeplab.model.preprocessing import normalize_image

SIZE = (41, 49)  # not square, odd: catches H/W swaps
SETTINGS = {
    "resnet": dict(fx.TINY),
    "mobilenet": {
        "backbone": "mobilenet_v2_dm05",
        "atrous_rates": (),
        "multi_grid": (1, 1, 1),
        "aspp_filters": 8,
    },
}


def _models(kind, seed=0):
    """(float model, quantization-aware model holding the same weights, its ranges set by
    training-mode passes over synthetic scenes)."""
    keras.utils.set_random_seed(seed)  # the dropout masks of the range-setting passes too
    float_model = build_model(num_classes=fx.NUM_CLASSES, **SETTINGS[kind])
    fx.randomize(float_model, seed)
    fx.calibrate_batch_norm(float_model, fx.structured_images(4, SIZE, seed=seed))
    freeze_batch_norm_statistics(float_model)
    qat = build_model(
        num_classes=fx.NUM_CLASSES, freeze_batch_norm=True, quantize_aware=True, **SETTINGS[kind]
    )
    _copy_weights(float_model, qat)
    for batch in range(3):
        images = fx.structured_images(4, SIZE, seed=10 + seed + batch)
        qat(normalize_image(images), training=True)
    return float_model, qat


def _all_layers(model):
    return list(iter_layers(model))


def _copy_weights(source, target):
    values = {v.path: v for v in source.weights}
    for variable in target.weights:
        if variable.path in values:
            variable.assign(values[variable.path])


@pytest.fixture(scope="module", params=["resnet", "mobilenet"])
def pair(request):
    return _models(request.param)


# ----------------------------------------------------------------------------- the model


def test_quantization_aware_model_keeps_the_float_variables(pair):
    float_model, qat = pair
    float_paths = {v.path for v in float_model.weights}
    qat_paths = {v.path for v in qat.weights}
    # Every float variable under the same path (a float checkpoint restores into it and back);
    # the rest are the activation ranges and the weights' grids.
    assert float_paths <= qat_paths
    ranges = {v.path for q in quantize.range_quantizers(qat) for v in q.weights}
    grids = quantize.weight_grid_paths(qat)
    assert len(ranges) >= 3 * 10 and len(grids) >= 10 and not ranges & grids
    assert qat_paths - float_paths == ranges | grids == quantize.training_state_paths(qat)
    assert qat.get_config()["quantize_aware"] is True


def test_ranges_are_set_by_training_batches_and_frozen_at_inference(pair):
    _, qat = pair
    quantizers = quantize.range_quantizers(qat)
    assert all(float(q.range_set.numpy()) == 1.0 for q in quantizers)
    assert all(float(q.range_max.numpy()) > float(q.range_min.numpy()) for q in quantizers)
    before = [q.range_max.numpy() for q in quantizers]
    qat(normalize_image(fx.structured_images(2, SIZE, seed=99)) * 3.0, training=False)
    assert [q.range_max.numpy() for q in quantizers] == before


def test_range_is_a_moving_average_seeded_by_the_first_batch():
    layer = quantize.RangeQuantizer(decay=0.9)
    layer(np.array([[-1.0, 2.0]], np.float32), training=True)
    assert (float(layer.range_min.numpy()), float(layer.range_max.numpy())) == (-1.0, 2.0)
    layer(np.array([[0.5, 4.0]], np.float32), training=True)
    # The batch minimum counts as 0 (zero is always in the range).
    np.testing.assert_allclose([layer.range_min.numpy(), layer.range_max.numpy()], [-0.9, 2.2])


def test_fake_quantization_rounds_to_the_8_bit_grid():
    values = np.linspace(-1.0, 3.0, 1001, dtype=np.float32)
    rounded = ops.convert_to_numpy(quantize.fake_quant(values, -1.0, 3.0))
    step = 4.0 / 255.0
    assert len(np.unique(rounded)) <= 256
    assert np.abs(rounded - values).max() <= step / 2 + 1e-6
    assert 0.0 in rounded  # zero is exact
    kernel = np.random.default_rng(0).normal(size=(3, 3, 4, 5)).astype(np.float32)
    weights = ops.convert_to_numpy(quantize.fake_quant_weights(kernel, 3))
    for channel in range(5):
        scale = np.abs(kernel[..., channel]).max() / 127.0
        levels = weights[..., channel] / scale
        np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
        assert np.abs(levels).max() <= 127.0 + 1e-3


def _on_grid_kernel(seed=0):
    """A (3, 3, 8, 7) kernel whose channels 0-4 lie on grids with their largest weight 127,
    100, 64, 37 and 5 steps from 0, whose channel 5 is random and whose channel 6 lies on a
    grid of 50 steps but for one weight, a third of a step off."""
    rng = np.random.default_rng(seed)
    channels = []
    for steps in (127, 100, 64, 37, 5, 50):
        levels = rng.integers(-steps, steps + 1, size=(3, 3, 8)).astype(np.float64)
        levels[0, 0, 0] = steps
        channels.append(levels * 0.013)
    channels[-1][1, 1, 1] += 0.013 / 3
    channels.insert(5, rng.normal(size=(3, 3, 8)))
    return np.stack(channels, axis=-1).astype(np.float32)


def test_weight_grids_keep_weights_that_already_lie_on_a_grid():
    kernel = _on_grid_kernel()
    steps = ops.convert_to_numpy(quantize.weight_grid_steps(kernel, 3))
    # The finest grid (of those at most 127 steps long) that holds each channel's levels: m
    # itself, or its largest multiple up to 127. Weights on no grid (random, or one weight
    # off) take the finest, 127 steps.
    np.testing.assert_array_equal(steps, [127, 100, 64, 111, 125, 127, 127])
    rounded = ops.convert_to_numpy(quantize.fake_quant_weights(kernel, 3, steps))
    np.testing.assert_allclose(rounded[..., :5], kernel[..., :5], rtol=0, atol=1e-6)
    finest = ops.convert_to_numpy(quantize.fake_quant_weights(kernel, 3))
    assert np.abs(finest[..., 1:5] - kernel[..., 1:5]).max() > 1e-3  # 127 steps would move them
    np.testing.assert_array_equal(rounded[..., 5:], finest[..., 5:])
    for channel in range(7):  # still int8: at most 127 steps of max|w| / k
        levels = rounded[..., channel] / (np.abs(kernel[..., channel]).max() / steps[channel])
        np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)


def test_weight_grids_are_chosen_by_the_first_training_batch_and_kept():
    conv = layers.Conv2D(7, 3, use_bias=False)
    conv.build((None, 8, 8, 8))
    conv.kernel.assign(_on_grid_kernel())
    layer = quantize.QuantizedConv(conv, None)
    images = np.random.default_rng(1).normal(size=(1, 8, 8, 8)).astype(np.float32)
    # Before any training batch: the finest grid.
    layer(images, training=False)
    assert np.all(layer.weight_steps.numpy() == 0)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(layer.grid_steps(conv.kernel, training=False)), [127] * 7
    )
    layer(images, training=True)
    chosen = layer.weight_steps.numpy()
    np.testing.assert_array_equal(chosen, [127, 100, 64, 111, 125, 127, 127])
    # Kept while the weights move (a search now would choose other grids).
    conv.kernel.assign(conv.kernel.numpy() + 0.004)
    layer(images, training=True)
    np.testing.assert_array_equal(layer.weight_steps.numpy(), chosen)


def test_a_checkpoint_without_weight_grids_restores_and_rounds_on_127_steps(pair, tmp_path):
    from deeplab.logdir import checkpoints  # pylint: disable=import-outside-toplevel

    _, qat = pair
    grids = quantize.weight_grid_paths(qat)
    variables = checkpoints.variables_by_path(qat)
    older = {path: v for path, v in variables.items() if path not in grids}
    prefix = tf.train.Checkpoint(**{checkpoints.WEIGHTS_KEY: older}).write(str(tmp_path / "c-1"))
    kind = "mobilenet" if "mobilenet" in qat.get_config()["backbone"] else "resnet"
    model = build_model(
        num_classes=fx.NUM_CLASSES, freeze_batch_norm=True, quantize_aware=True, **SETTINGS[kind]
    )
    checkpoints.restore_weights(model, prefix)
    restored = checkpoints.variables_by_path(model)
    assert all(np.all(restored[path].numpy() == 0) for path in grids)
    for path in older:
        np.testing.assert_array_equal(restored[path].numpy(), variables[path].numpy())
    # Any other variable missing is still refused.
    del older[sorted(older)[0]]
    prefix = tf.train.Checkpoint(**{checkpoints.WEIGHTS_KEY: older}).write(str(tmp_path / "c-2"))
    with pytest.raises(UserError, match="does not match the model"):
        checkpoints.restore_weights(model, prefix)


def test_folded_convolutions_equal_the_exports_folding(pair):
    float_model, qat = pair
    folded = fuse.fuse_batch_norm(float_model)
    checked = 0
    for layer in _all_layers(qat):
        if isinstance(layer, quantize.QuantizedConv) and layer.batch_norm is not None:
            kernel, bias = layer.folded()
            reference = [
                l for l in _all_layers(folded) if l.name == layer.name and hasattr(l, "kernel")
            ]
            if not reference:
                continue
            np.testing.assert_allclose(
                ops.convert_to_numpy(kernel), reference[0].kernel.numpy(), rtol=1e-5, atol=1e-6
            )
            np.testing.assert_allclose(
                ops.convert_to_numpy(bias), reference[0].bias.numpy(), rtol=1e-5, atol=1e-5
            )
            checked += 1
    assert checked >= 5


def test_quantized_forward_stays_close_to_the_float_one(pair):
    float_model, qat = pair
    images = normalize_image(fx.structured_images(2, SIZE, seed=7))
    float_logits = ops.convert_to_numpy(float_model(images, training=False))
    qat_logits = ops.convert_to_numpy(qat(images, training=False))
    assert not np.array_equal(float_logits, qat_logits)  # it does round
    # Seeded random tiny models (measured: correlation 0.98 / 0.94, same class 90.5% / 90.0%
    # for the ResNet / MobileNetV2; other seeds 0.83-0.99 and 50-100%: a random model's classes
    # are often near-ties).
    correlation = np.corrcoef(float_logits.ravel(), qat_logits.ravel())[0, 1]
    assert correlation > 0.9, correlation
    same = (float_logits.argmax(-1) == qat_logits.argmax(-1)).mean()
    assert same > 0.8, same


def test_gradients_pass_straight_through_to_the_float_weights(pair):
    _, qat = pair
    images = normalize_image(fx.structured_images(2, SIZE, seed=8))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(qat(images, training=False)))
    kernels = [v for v in qat.trainable_variables if v.path.endswith("kernel")]
    gradients = tape.gradient(loss, kernels)
    assert all(g is not None for g in gradients)
    assert sum(float(tf.reduce_sum(tf.abs(g))) > 0 for g in gradients) >= len(kernels) - 1


def test_quantize_aware_needs_frozen_batch_norm():
    with pytest.raises(ConfigError, match="--freeze_batch_norm"):
        build_model(num_classes=3, quantize_aware=True, **fx.TINY)


def test_what_the_rounding_forbids(pair):
    _, qat = pair
    assert fuse.fuse_batch_norm(qat) is qat  # its forward folds already
    with pytest.raises(ConfigError, match="quantize_aware"):
        fuse.cast_model(qat, "bfloat16")
    with pytest.raises(Exception, match="activation ranges"):
        qat.recompute_segments("block1")


# ----------------------------------------------------------------------------- the int8 export


def _simulated_and_interpreted(qat, images):
    """(the Keras graph the export freezes, the interpreter) outputs on ``images``."""
    content = tflite.convert_int8(qat, SIZE, None)
    function = tflite._frozen_function(  # pylint: disable=protected-access
        qat, SIZE, None, input_dtype=tf.float32, feature_softmax=True
    )
    interpreter = tf.lite.Interpreter(model_content=content)
    interpreter.allocate_tensors()
    semantic, probabilities = [], []
    for image in images:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
        interpreter.invoke()
        reference = function(tf.constant(image[None], tf.float32))
        reference = reference if isinstance(reference, list) else list(reference.values())
        reference = {np.asarray(r).ndim: np.asarray(r) for r in reference}
        for output in interpreter.get_output_details():
            value = interpreter.get_tensor(output["index"])
            if value.ndim == 3:
                semantic.append(value == reference[3])
            else:
                scale, zero_point = output["quantization"]
                steps = np.abs((value.astype(np.float32) - zero_point) * scale - reference[4])
                probabilities.append(steps <= scale * 1.001)
    return content, np.mean(semantic), np.mean(probabilities)


def _dequantized(interpreter, index):
    detail = next(t for t in interpreter.get_tensor_details() if t["index"] == index)
    scale, zero_point = detail["quantization"]
    return (interpreter.get_tensor(index).astype(np.float32) - zero_point) * scale, scale


def _op_by_op(qat, image, size=SIZE):
    """{op: share of its output values within one quantization step of the Keras layer's
    output on the same (dequantized) input}: every convolution with a range of its own (and
    its activation), the softmax and the upsampling of the probabilities. The interpreter keeps
    every tensor, so each op is checked on the interpreter's own input."""
    content = tflite.convert_int8(qat, size, None)
    interpreter = tf.lite.Interpreter(model_content=content, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
    interpreter.invoke()
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    convs = {
        l.name: l
        for l in _all_layers(qat)
        if isinstance(l, quantize.QuantizedConv) and l.output_quantizer is not None
    }
    shares = {}
    for op in interpreter._get_ops_details():  # pylint: disable=protected-access
        output = op["outputs"][0]
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            layer = [c for n, c in convs.items() if f"/{n}_1/" in names[output]]
            if len(layer) != 1:
                continue
            expected = layer[0](tf.constant(_dequantized(interpreter, op["inputs"][0])[0]))
            name = layer[0].name
        elif op["op_name"] == "SOFTMAX":
            logits = _dequantized(interpreter, op["inputs"][0])[0]
            expected = quantize.fake_quant(tf.nn.softmax(logits), *quantize.SOFTMAX_RANGE)
            probabilities = expected
            name = "softmax"
        else:
            continue
        actual, scale = _dequantized(interpreter, output)
        shares[name] = float(np.mean(np.abs(np.asarray(expected) - actual) <= scale * 1.001))
    (output,) = [o for o in interpreter.get_output_details() if len(o["shape"]) == 4]
    actual, scale = _dequantized(interpreter, output["index"])
    stride = qat.get_layer("upsample_logits").stride
    expected = tflite.quantized_upsample(probabilities, size, stride, quantize.SOFTMAX_RANGE)
    shares["upsample probabilities"] = float(
        np.mean(np.abs(np.asarray(expected) - actual) <= scale * 1.001)
    )
    return content, shares


@pytest.mark.slow
@pytest.mark.parametrize("size", [SIZE, (33, 49)], ids=["stride_grid", "corners_aligned"])
def test_int8_export_takes_the_trained_ranges_and_rounds_as_the_keras_forward(pair, size):
    _, qat = pair
    stride = qat.get_layer("upsample_logits").stride
    aligned = tflite.corners_aligned([-(-n // stride) for n in size], size, stride)
    assert aligned == (size != SIZE)  # each path of the upsampling is checked
    image = fx.structured_images(1, size, seed=21)[0]
    content, shares = _op_by_op(qat, image, size)
    interpreter = tf.lite.Interpreter(model_content=content)
    interpreter.allocate_tensors()
    # At 16k + 1 (33 x 49 at stride 16) each upsampling is one int8 RESIZE_BILINEAR, as in the
    # authors' files; elsewhere the stride grid's gathers, differences and blends.
    op_names = {op["op_name"] for op in interpreter._get_ops_details()}  # pylint: disable=protected-access
    assert ("RESIZE_BILINEAR" in op_names) == aligned, op_names
    (inp,) = interpreter.get_input_details()
    assert inp["dtype"] == np.uint8 and inp["quantization"] == (1.0, 0)  # raw pixel bytes
    float_ops = fx.float_ops(interpreter)
    assert float_ops == []  # full integer, and no calibration image was given
    # Each op, fed the interpreter's own input, gives the Keras layer's output to within one
    # step (measured: all values; a tie broken apart by float vs. fixed-point arithmetic may
    # differ by one step).
    assert {"logits", "softmax", "upsample probabilities"} <= set(shares)
    assert len(shares) >= 6, shares
    assert min(shares.values()) >= 0.99, shares


@pytest.mark.slow
def test_int8_file_holds_the_weights_the_keras_forward_rounds_to():
    """Weights already on coarser grids (as an imported int8 model's are) reach the int8 file
    unchanged; the file's weights are the Keras forward's, whatever the grid."""
    float_model, _ = _models("mobilenet", seed=3)
    for layer in _all_layers(float_model):
        if isinstance(layer, layers.Conv2D | layers.DepthwiseConv2D):
            kernel = layer.kernel.numpy()
            step = np.abs(kernel).max() / 100.0  # per tensor: at most 100 steps per channel
            layer.kernel.assign(np.round(kernel / step) * step)
    qat = build_model(
        num_classes=fx.NUM_CLASSES,
        freeze_batch_norm=True,
        quantize_aware=True,
        **SETTINGS["mobilenet"],
    )
    _copy_weights(float_model, qat)
    qat(normalize_image(fx.structured_images(2, SIZE, seed=5)), training=True)
    interpreter = tf.lite.Interpreter(
        model_content=tflite.convert_int8(qat, SIZE, None), experimental_preserve_all_tensors=True
    )
    interpreter.allocate_tensors()
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    convs = {l.name: l for l in _all_layers(qat) if isinstance(l, quantize.QuantizedConv)}
    checked = 0
    for op in interpreter._get_ops_details():  # pylint: disable=protected-access
        if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        layer = [c for n, c in convs.items() if f"/{n}_1/" in names[op["outputs"][0]]]
        if len(layer) != 1:
            continue
        (layer,) = layer
        folded = ops.convert_to_numpy(layer.folded()[0])
        steps = ops.convert_to_numpy(layer.grid_steps(folded, training=False))
        keras_weights = ops.convert_to_numpy(
            quantize.fake_quant_weights(folded, layer._channel_axis, steps)  # pylint: disable=protected-access
        )
        weights = details[op["inputs"][1]]
        parameters = weights["quantization_parameters"]
        axis = parameters["quantized_dimension"]
        shape = [1] * 4
        shape[axis] = -1
        stored = interpreter.get_tensor(op["inputs"][1]).astype(np.float32)
        stored = stored * parameters["scales"].reshape(shape)
        # TFLite's OHWI (depthwise 1HWC) against Keras' HWIO (HWC1).
        stored = np.transpose(stored, (1, 2, 3, 0))
        np.testing.assert_allclose(stored, keras_weights, rtol=1e-5, atol=1e-7)
        # Here they are the float weights themselves: every channel found its grid.
        np.testing.assert_allclose(stored, folded, rtol=1e-5, atol=1e-6)
        checked += 1
    assert checked >= 10


@pytest.mark.slow
def test_int8_export_agrees_with_the_keras_forward_end_to_end(pair):
    _, qat = pair
    images = fx.structured_images(3, SIZE, seed=21)
    _, same_class, _ = _simulated_and_interpreted(qat, images)
    # Whole network: one-step differences (float vs. fixed-point rounding of near-ties) grow
    # layer by layer in these random tiny models (ResNet 97%, MobileNetV2 82% same class,
    # measured); a trained model drifts far less (CamVid MobileNetV2: 99.0%,
    # experiments/RESULTS.md, "Issue 33").
    assert same_class >= 0.75, same_class


def test_multi_scale_int8_export_of_a_quantization_aware_model_is_refused(pair):
    from deeplab.common.inference_options import InferenceOptions  # pylint: disable=import-outside-toplevel

    _, qat = pair
    with pytest.raises(ConfigError, match="one scale"):
        tflite.convert_int8(qat, SIZE, None, InferenceOptions(scales=(1.0, 0.5)))


# ----------------------------------------------------------------------------- the binaries


@pytest.mark.slow
def test_train_quantize_aware_from_a_float_run_then_export_int8_without_images(tmp_path):
    """The recipes of experiments/camvid_qat.flags and official_qat.flags on the tiny model: a
    float run, fine-tuned with --quantize_aware from it (its softmax the target:
    --distill_from), exported --quantize=int8 with no --dataset_dir (no calibration)."""
    import json  # pylint: disable=import-outside-toplevel

    import harness  # pylint: disable=import-outside-toplevel
    from deeplab.data import synthetic  # pylint: disable=import-outside-toplevel
    from deeplab.logdir import checkpoints  # pylint: disable=import-outside-toplevel

    data = str(tmp_path / "data")
    synthetic.build_synthetic_dataset(
        data, num_train=8, num_val=2, image_size=(33, 33), num_classes=3, seed=5
    )
    tiny = [
        f"--dataset_dir={data}",
        "--backbone=resnet14_tiny",
        "--atrous_rates=1,2,3",
        "--aspp_filters=8",
        "--crop_size=33",
        "--batch_size=4",
        "--image_summary_steps=0",
        "--min_scale_factor=1",
        "--max_scale_factor=1",
        "--logits_init_stddev=0",
        "--noeval_after_training",
    ]
    float_run, qat_run = str(tmp_path / "float"), str(tmp_path / "qat")
    first = harness.run("deeplab.train", *tiny, f"--logdir={float_run}", "--training_steps=3")
    assert first.returncode == 0, first.stderr[-2000:]
    second = harness.run(
        "deeplab.train",
        *tiny,
        f"--logdir={qat_run}",
        f"--init_checkpoint={float_run}",
        "--quantize_aware",
        "--freeze_batch_norm",
        f"--distill_from={float_run}",
        "--base_learning_rate=1e-4",
        "--training_steps=2",
    )
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"Initialized from {float_run}; skipped: none" in second.stdout
    assert f"Distilling from {float_run}" in second.stdout
    with open(os.path.join(qat_run, "model_config.json"), encoding="utf-8") as f:
        assert json.load(f)["quantize_aware"] is True
    model = checkpoints.load_model(qat_run)
    quantizers = quantize.range_quantizers(model)
    assert quantizers and all(float(q.range_set.numpy()) == 1.0 for q in quantizers)
    grids = [v.numpy() for v in model.weights if v.path in quantize.weight_grid_paths(model)]
    assert grids and all(np.all((g >= 64) & (g <= 127)) for g in grids)

    export_dir = str(tmp_path / "export")
    exported = harness.run(
        "deeplab.export_saved_model",
        f"--checkpoint={qat_run}",
        f"--export_dir={export_dir}",
        "--nosaved_model",
        "--tflite",
        "--quantize=int8",
        "--tflite_input_size=33,33",
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert "calibration: none: ranges from quantization-aware training" in exported.stdout
    with open(os.path.join(export_dir, "deeplab_int8.json"), encoding="utf-8") as f:
        sidecar = json.load(f)
    assert sidecar["quantization"] == "int8"
    segmenter = tflite.TFLiteSegmenter(os.path.join(export_dir, "deeplab_int8.tflite"))
    classes = segmenter(fx.structured_images(1, (33, 33), seed=3)[0])
    assert classes.shape == (33, 33) and set(np.unique(classes)) <= {0, 1, 2}

    # The float run's int8 export still needs images (its recorded --dataset_dir gives them;
    # without one it says so in one line).
    refused = harness.run(
        "deeplab.export_saved_model",
        f"--checkpoint={float_run}",
        f"--export_dir={tmp_path / 'float_export'}",
        "--dataset_dir=",
        "--nosaved_model",
        "--tflite",
        "--quantize=int8",
    )
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "--quantize=int8 needs --dataset_dir" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_distillation_loss_is_the_cross_entropy_to_the_teachers_softmax():
    from deeplab.training import step  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(0)
    student = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    teacher = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=(2, 3, 4)).astype(np.int32)
    labels[0, 0] = 255  # ignored pixels stay out
    total, count, valid = step.distillation_loss(student, teacher, labels, 255)

    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    pixel = -(softmax(teacher) * np.log(softmax(student))).sum(-1)
    mask = labels != 255
    np.testing.assert_allclose(float(total), pixel[mask].sum(), rtol=1e-5)
    assert float(count) == mask.sum() == 20
    np.testing.assert_array_equal(np.asarray(valid), mask.astype(np.float32))
    # Its minimum over the student is the teacher itself: the teacher's entropy.
    same, _, _ = step.distillation_loss(teacher, teacher, labels, 255)
    entropy = -(softmax(teacher) * np.log(softmax(teacher))).sum(-1)[mask].sum()
    np.testing.assert_allclose(float(same), entropy, rtol=1e-5)
    assert float(same) < float(total)


def test_distillation_refuses_the_label_losses(tmp_path):
    from deeplab.config.experiment import ExperimentConfig  # pylint: disable=import-outside-toplevel
    from deeplab.training import trainer  # pylint: disable=import-outside-toplevel

    for extra in (
        {"focal_gamma": 2.0},
        {"top_k_percent_pixels": 0.25},
        {"class_weights": (1.0, 2.0, 3.0)},
    ):
        config = ExperimentConfig.create(
            dataset_dir=str(tmp_path), logdir=str(tmp_path / "run"), distill_from="teacher", **extra
        )
        with pytest.raises(ConfigError, match="--distill_from trains to the teacher's softmax"):
            trainer.check_config(config)
        assert not os.path.exists(tmp_path / "run")  # refused before the logdir is made
