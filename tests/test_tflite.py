"""deeplab.export.tflite: float32 and full-integer int8 conversion, the runner, the mIOU comparison,
and the official DeepLab v3 MobileNetV2 PASCAL int8 model run through our predict path."""

import os

import numpy as np
import pytest
from PIL import Image

import export_fixtures as fx
from deeplab.common.inference_options import InferenceOptions
from deeplab.export import tflite

INPUT_SIZE = (33, 41)  # not square: catches H/W swaps


def _interpreter(path):
    interpreter = tflite._make_interpreter(path, None)  # pylint: disable=protected-access
    interpreter.allocate_tensors()
    return interpreter


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return fx.shared_tiny_run(tmp_path_factory)["model"]


@pytest.fixture(scope="module")
def float_model(tiny, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("float") / "m.tflite")
    content = tflite.convert_float(tiny, INPUT_SIZE)
    meta = tflite.make_metadata(
        input_size=INPUT_SIZE,
        quantization="none",
        class_names=fx.CLASS_NAMES,
        palette=fx.PALETTE,
        options=InferenceOptions(scales=(1.0,), flip=False),
    )
    return tflite.write_tflite(path, content, meta)


# ----------------------------------------------------------------------------- letterbox


def test_letterbox_is_identity_at_the_input_size():
    image = np.random.default_rng(0).integers(0, 256, (33, 41, 3), dtype=np.uint8)
    padded, inner = tflite.letterbox(image, (33, 41), (1, 2, 3))
    assert inner == (33, 41) and padded is image
    labels = np.arange(33 * 41).reshape(33, 41)
    np.testing.assert_array_equal(tflite.unletterbox(labels, inner, (33, 41)), labels)


def test_letterbox_keeps_the_aspect_ratio_and_pads_bottom_right():
    image = np.full((30, 60, 3), 200, np.uint8)
    padded, inner = tflite.letterbox(image, (40, 40), (124, 117, 104))
    assert padded.shape == (40, 40, 3) and inner == (20, 40)
    assert (padded[:20] == 200).all()
    assert (padded[20:] == np.array([124, 117, 104], np.uint8)).all()


def test_unletterbox_crops_padding_and_upsamples_by_nearest_neighbour():
    # A 2x2 checkerboard of classes inside a 3x3 model output whose last row / column are
    # padding (class 9): back at 4x4, every 2x2 block is one class, no 9 anywhere.
    labels = np.array([[0, 1, 9], [2, 3, 9], [9, 9, 9]])
    restored = tflite.unletterbox(labels, (2, 2), (4, 4))
    np.testing.assert_array_equal(
        restored, np.kron(np.array([[0, 1], [2, 3]]), np.ones((2, 2), int))
    )


def test_letterbox_geometry_against_numpy():
    """The letterbox resize is half-pixel (like the model's multi-scale path): a ramp whose value
    is the source column comes out, away from the edges, as (x + 0.5) / r - 0.5, both when
    shrinking (PIL's bilinear filter widens symmetrically, which keeps a ramp) and when
    enlarging; unletterbox maps back with the same half-pixel grid, so a class boundary moves by
    less than one original pixel."""
    for width, in_w in [(120, 80), (40, 100)]:
        ramp = np.tile(np.arange(width, dtype=np.float64), (6, 1))
        image = np.repeat((ramp * 2)[..., None], 3, axis=2).astype(np.uint8)  # value = 2 * column
        padded, (h, w) = tflite.letterbox(image, (in_w, in_w), (0, 0, 0))
        ratio = w / width
        x = np.arange(w)
        expected = 2 * ((x + 0.5) / ratio - 0.5)
        inner = slice(int(np.ceil(2 / ratio)) + 1, w - int(np.ceil(2 / ratio)) - 1)
        np.testing.assert_allclose(padded[h // 2, x[inner], 0], expected[inner], atol=1.0)
        # A boundary at original column c comes back within one pixel of c.
        c = width // 3
        labels = (padded[:h, :w, 0] >= 2 * c).astype(np.int32)
        restored = tflite.unletterbox(labels, (h, w), (6, width))
        first = int(np.argmax(restored[3]))
        assert abs(first - c) <= 1, (width, in_w, first, c)


def test_parse_input_size():
    assert tflite.parse_input_size("65") == (65, 65)
    assert tflite.parse_input_size(["33", "41"]) == (33, 41)
    assert tflite.parse_input_size("33x41") == (33, 41)
    from deeplab.common.errors import ConfigError

    with pytest.raises(ConfigError, match="--tflite_input_size"):
        tflite.parse_input_size("0")


# ----------------------------------------------------------------------------- float32


@pytest.mark.slow
def test_float_tflite_matches_keras(tiny, float_model):
    interpreter = _interpreter(float_model)
    (inp,) = interpreter.get_input_details()
    assert tuple(inp["shape"]) == (1, *INPUT_SIZE, 3) and inp["dtype"] == np.uint8
    outputs = {len(d["shape"]): d for d in interpreter.get_output_details()}
    assert outputs[3]["dtype"] == np.int32 and outputs[4]["dtype"] == np.float32
    segmenter = tflite.TFLiteSegmenter(float_model)
    assert segmenter.input_size == INPUT_SIZE and segmenter.class_names == fx.CLASS_NAMES
    for image in fx.structured_images(2, INPUT_SIZE, seed=1):
        expected = fx.keras_probabilities(tiny, image[None])[0]
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        probabilities = interpreter.get_tensor(outputs[4]["index"])[0]
        assert np.abs(probabilities - expected).max() <= 1e-4
        labels = segmenter(image)
        assert labels.dtype == np.int32 and labels.shape == INPUT_SIZE
        assert (labels == expected.argmax(-1)).mean() >= 0.999
        assert len(np.unique(labels)) >= 2


def test_runner_letterboxes_other_sizes(float_model):
    segmenter = tflite.TFLiteSegmenter(float_model)
    image = fx.structured_images(1, (50, 30), seed=2)[0]
    labels = segmenter(image)
    assert labels.shape == (50, 30)
    model_input, inner = tflite.letterbox(image, INPUT_SIZE, tflite.model_pad_value())
    np.testing.assert_array_equal(
        labels, tflite.unletterbox(segmenter.run(model_input), inner, (50, 30))
    )


# ----------------------------------------------------------------------------- int8


@pytest.fixture(scope="module")
def int8_model(tiny, tmp_path_factory):
    data = fx.shared_data(tmp_path_factory)
    images = tflite.calibration_images(data, "train", 6, (33, 33))
    assert len(images) == 6 and images[0].shape == (33, 33, 3)
    content = tflite.convert_int8(tiny, (33, 33), images)
    path = str(tmp_path_factory.mktemp("int8") / "m.tflite")
    meta = tflite.make_metadata(
        input_size=(33, 33),
        quantization="int8",
        class_names=fx.CLASS_NAMES,
        palette=fx.PALETTE,
        options=InferenceOptions(scales=(1.0,), flip=False),
    )
    return data, tflite.write_tflite(path, content, meta)


@pytest.mark.slow
def test_int8_model_is_full_integer_with_uint8_pixel_input(int8_model):
    _, path = int8_model
    interpreter = _interpreter(path)
    (inp,) = interpreter.get_input_details()
    assert inp["dtype"] == np.uint8
    # The calibration images span 0..255, so the input quantization is the identity: raw bytes.
    assert inp["quantization"] == (1.0, 0)
    float_ops = fx.float_ops(interpreter)
    assert float_ops == []
    ops = {op["op_name"] for op in interpreter._get_ops_details()}  # pylint: disable=protected-access
    assert {"CONV_2D", "SOFTMAX", "ARG_MAX"} <= ops
    # 33 = 2 * 16 + 1: the stride grid is align_corners', so each upsampling is one int8
    # RESIZE_BILINEAR instead of the grid's gathers and blends.
    assert "RESIZE_BILINEAR" in ops and "GATHER" not in ops, ops


@pytest.mark.slow
def test_miou_comparison_float_keras_float_tflite_int8(tiny, int8_model, tmp_path_factory):
    from deeplab.export import serving

    data, int8_path = int8_model
    float_path = fx.shared_float_tflite(tmp_path_factory)
    results = tflite.evaluate_segmenters(
        {
            "float Keras": serving.KerasSegmenter(tiny),
            "float32 TFLite": tflite.TFLiteSegmenter(float_path),
            "int8 TFLite": tflite.TFLiteSegmenter(int8_path),
        },
        data,
        "val",
    )
    keras_r, float_r, int8_r = (
        results[k] for k in ("float Keras", "float32 TFLite", "int8 TFLite")
    )
    assert keras_r["images"] == 4
    assert float_r["agreement"] >= 0.999
    assert abs(float_r["miou"] - keras_r["miou"]) <= 0.002
    # int8 of an untrained, randomized model: most pixels keep their class. (Measured on the
    # trained quick-start model: 99.8% of pixels, mIOU 94.54 vs 94.66; see the README.)
    assert int8_r["agreement"] >= 0.8
    assert abs(int8_r["miou"] - keras_r["miou"]) <= 0.05
    table = tflite.format_comparison(results)
    assert "int8 TFLite" in table and "(4 images)" in table


# ----------------------------------------------------------------------------- official model


def _official_dir():
    for candidate in (
        os.path.join(fx.REPO, "..", "shared", "data", "deeplab_tflite"),
        "/work/shared/data/deeplab_tflite",
    ):
        if os.path.isfile(os.path.join(candidate, "deeplabv3_mnv2_pascal_quant.tflite")):
            return os.path.abspath(candidate)
    return None


def _camvid_image():
    for candidate in (
        os.path.join(fx.REPO, "..", "shared", "data", "camvid", "val"),
        "/work/shared/data/camvid/val",
    ):
        path = os.path.join(candidate, "0016E5_07959.png")
        if os.path.isfile(path):
            return path
    return None


OFFICIAL = _official_dir()
CAMVID_IMAGE = _camvid_image()
needs_official = pytest.mark.skipif(
    OFFICIAL is None or CAMVID_IMAGE is None,
    reason="../shared/data/deeplab_tflite or camvid not present",
)


def _official_path():
    return os.path.join(OFFICIAL, "deeplabv3_mnv2_pascal_quant.tflite")


def _invoke_official(image):
    """The interpreter's own output for one uint8 [513, 513, 3] image."""
    interpreter = _interpreter(_official_path())
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    interpreter.set_tensor(inp["index"], image[None])
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])[0]


@needs_official
def test_official_model_io():
    interpreter = _interpreter(_official_path())
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    assert tuple(inp["shape"]) == (1, 513, 513, 3) and inp["dtype"] == np.uint8
    assert inp["quantization"] == (0.0078125, 128)  # sees (q - 128) / 128: raw bytes go in
    assert tuple(out["shape"]) == (1, 513, 513) and out["dtype"] == np.int64  # ArgMax
    segmenter = tflite.TFLiteSegmenter(_official_path())
    assert segmenter.input_size == (513, 513) and segmenter.pad_value == (128, 128, 128)


@needs_official
def test_predict_reproduces_the_official_interpreter_at_its_input_size(tmp_path):
    from deeplab.export import predictor

    # The CamVid image resized by the test to the model's input size: predict must feed it
    # unchanged and return the interpreter's own class map, pixel for pixel.
    image = np.asarray(Image.open(CAMVID_IMAGE).convert("RGB").resize((513, 513), Image.BILINEAR))
    Image.fromarray(image).save(tmp_path / "street.png")
    result = predictor.predict_files(
        tflite.TFLiteSegmenter(_official_path()),
        [str(tmp_path / "street.png")],
        str(tmp_path / "out"),
    )
    written = np.asarray(Image.open(result["processed"][0][1]))
    np.testing.assert_array_equal(written, _invoke_official(image))


@needs_official
def test_predict_reproduces_the_official_interpreter_on_a_camvid_image(tmp_path):
    from deeplab.export import predictor

    result = predictor.predict_files(
        tflite.TFLiteSegmenter(_official_path()), [CAMVID_IMAGE], str(tmp_path)
    )
    written = np.asarray(Image.open(result["processed"][0][1]))
    original = Image.open(CAMVID_IMAGE).convert("RGB")
    assert written.shape == (original.height, original.width) == (360, 480)
    # The documented rule, done independently here: longer side to 513 (bilinear), pad the
    # bottom with 128, run, crop, back to 480x360 by nearest neighbour.
    resized = np.asarray(original.resize((513, 385), Image.BILINEAR))
    model_input = np.full((513, 513, 3), 128, np.uint8)
    model_input[:385] = resized
    cropped = _invoke_official(model_input)[:385].astype(np.uint8)
    expected = np.asarray(Image.fromarray(cropped).resize((480, 360), Image.NEAREST))
    assert (written == expected).mean() >= 0.999
    # A street scene through a PASCAL model: mostly background, with cars and a person.
    counts = np.bincount(written.ravel(), minlength=21) / written.size
    assert counts[0] > 0.8
    assert counts[7] > 0.01  # car
    assert counts[15] > 0.002  # person


def test_int8_softmax_runs_at_the_feature_resolution(int8_model):
    """The int8 graph takes the softmax before the upsampling (XNNPACK has no int8 softmax: at
    the output resolution it was a quarter of a ResNet-101 call); its class map is still the
    argmax of the upsampled logits, at the input size."""
    _, path = int8_model
    interpreter = _interpreter(path)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    softmax = [
        op
        for op in interpreter._get_ops_details()  # pylint: disable=protected-access
        if op["op_name"] == "SOFTMAX"
    ]
    assert len(softmax) == 1
    height, width = tensors[softmax[0]["outputs"][0]]["shape"][1:3]
    (inp,) = interpreter.get_input_details()
    assert height * 4 <= inp["shape"][1] and width * 4 <= inp["shape"][2]
    outputs = {len(d["shape"]): d for d in interpreter.get_output_details()}
    assert tuple(outputs[3]["shape"][1:]) == tuple(inp["shape"][1:3])
    assert tuple(outputs[4]["shape"][1:3]) == tuple(inp["shape"][1:3])
