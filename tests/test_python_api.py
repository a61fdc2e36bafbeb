"""deeplab.load (one segmenter for a run, an export, a .tflite file or an import), readable
overlays, model cards, progress lines and the quiet export."""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

import deeplab
import export_fixtures as fx
import harness
from deeplab.common.errors import UserError
from deeplab.common.progress import Progress
from deeplab.evaluation import visualization
from deeplab.export import model_card
from deeplab.export import serving


@pytest.fixture(scope="module")
def photo():
    return fx.structured_images(1, (45, 37), seed=7)[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return fx.shared_tiny_run(tmp_path_factory)


def _reference_labels(model, image, scales=(1.0,), flip=False):
    return np.argmax(fx.keras_probabilities(model, image[None], scales, flip)[0], axis=-1)


@pytest.mark.slow
def test_load_a_training_run_every_image_kind(run, photo, tmp_path):
    seg = deeplab.load(run["run_dir"])
    assert isinstance(seg, deeplab.Segmenter) and seg.kind == "keras"
    assert seg.classes == fx.CLASS_NAMES
    np.testing.assert_array_equal(seg.colors, np.asarray(fx.PALETTE, np.uint8))
    expected = _reference_labels(run["model"], photo)
    labels = seg.predict(photo)
    assert labels.dtype == np.int32 and labels.shape == photo.shape[:2]
    assert (labels == expected).mean() >= 0.999  # BN folded: the same classes
    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    for image in (str(path), path, path.read_bytes(), Image.open(path)):
        np.testing.assert_array_equal(seg.predict(image), labels)
    gray = seg.predict(photo[..., 0])  # [H, W] is taken as grayscale
    assert gray.shape == photo.shape[:2]
    rgba = np.concatenate([photo, np.full(photo.shape[:2] + (1,), 9, np.uint8)], axis=-1)
    np.testing.assert_array_equal(seg.predict(rgba), labels)  # alpha dropped
    many = seg.predict([photo, photo[:20, :30]])
    assert [m.shape for m in many] == [photo.shape[:2], (20, 30)]
    labels2, probabilities = seg.predict(photo, probabilities=True)
    assert probabilities.shape == photo.shape[:2] + (fx.NUM_CLASSES,)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(np.argmax(probabilities, -1), labels2)
    # A run has no card file: one is built from its recorded files.
    assert seg.card["kind"] == "training_run" and seg.card["provenance"]["step"] == 5
    assert seg.card["evaluation"] is None and "not evaluated" in seg.summary()


@pytest.mark.slow
def test_load_options_reach_the_keras_model(run, photo):
    seg = deeplab.load(run["run_dir"], scales=(1.0, 0.75), flip=True)
    expected = _reference_labels(run["model"], photo, (1.0, 0.75), True)
    assert (seg.predict(photo) == expected).mean() >= 0.999
    tiled = deeplab.load(run["run_dir"], tile_size=(17, 17), tile_overlap=0.5)
    assert tiled.predict(photo).shape == photo.shape[:2]


@pytest.mark.slow
def test_load_an_export_and_its_tflite(tmp_path_factory, photo):
    export = fx.shared_export(tmp_path_factory)
    seg = deeplab.load(export["export_dir"])
    assert seg.kind == "saved_model" and seg.classes == fx.CLASS_NAMES
    expected = _reference_labels(export["model"], photo, fx.EXPORT_SCALES, fx.EXPORT_FLIP)
    assert (seg.predict(photo) == expected).mean() >= 0.999
    labels, probabilities = seg.predict(photo, probabilities=True)
    np.testing.assert_array_equal(np.argmax(probabilities, -1), labels)
    # The export wrote its card; load reads it.
    assert seg.card["kind"] == "export" and seg.card["provenance"]["step"] == 5
    assert [c["name"] for c in seg.card["classes"]] == fx.CLASS_NAMES
    with pytest.raises(UserError, match="an export runs the scales, flip"):
        deeplab.load(export["export_dir"], flip=True)
    tflite_path = fx.shared_float_tflite(tmp_path_factory)
    lite = deeplab.load(tflite_path)
    assert lite.kind == "tflite" and lite.classes == fx.CLASS_NAMES
    image = fx.structured_images(1, (33, 33), seed=3)[0]  # the file's own input size
    labels, probabilities = lite.predict(image, probabilities=True)
    assert probabilities.shape == (33, 33, fx.NUM_CLASSES)
    np.testing.assert_array_equal(np.argmax(probabilities, -1), labels)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-3)


def test_load_says_what_is_wrong_in_one_line(tmp_path, run, photo):
    with pytest.raises(UserError, match=r"^deeplab.load\('.*nothing'\): no such file or folder$"):
        deeplab.load(str(tmp_path / "nothing"))
    seg = deeplab.load(run["run_dir"])
    with pytest.raises(UserError, match="must be uint8 pixels"):
        seg.predict(photo.astype(np.float32))
    with pytest.raises(UserError, match=r"expected an image \[H, W, 3\]"):
        seg.predict(np.zeros((4, 4, 2), np.uint8))


def test_overlay_leaves_the_background_unpainted_and_has_a_legend():
    image = np.full((60, 80, 3), 200, np.uint8)
    image[:, :40] = 90
    labels = np.zeros((60, 80), np.int32)
    labels[10:40, 20:60] = 2  # a "car" on background
    labels[50:, :] = 255  # ignored pixels stay as the photo too
    palette = [[0, 0, 0], [128, 0, 0], [128, 128, 128]]
    names = ["background", "aeroplane", "car"]
    assert visualization.background_class(names) == 0
    assert visualization.background_class(["sky", "road"]) is None
    picture = visualization.legend_overlay(image, labels, palette, names, background=0, alpha=0.6)
    assert picture.shape[1] == 320 and picture.shape[0] > 60
    top = picture[:60, :80]
    background = labels == 0
    np.testing.assert_array_equal(
        top[background | (labels == 255)], image[background | (labels == 255)]
    )
    inside = np.zeros_like(background)
    inside[13:37, 23:57] = True
    expected = np.rint(0.4 * image[inside] + 0.6 * np.array([128, 128, 128]))
    np.testing.assert_array_equal(top[inside], expected.astype(np.uint8))
    # The car's outline is drawn dark so a grey class on a grey photo keeps its shape.
    assert (top[10, 30] < 80).all()
    legend = picture[60:]
    assert (legend == 255).mean() > 0.5 and (legend < 128).any()  # text on white
    # The legend's swatches: the car's colour appears in it.
    assert (legend.reshape(-1, 3) == [128, 128, 128]).all(axis=1).any()
    shares = visualization.class_shares(labels, names)
    assert [s["name"] for s in shares] == ["background", "car"]
    assert shares[1]["share"] == pytest.approx(30 * 40 / (60 * 80))
    assert visualization.format_shares(shares) == "background 58.3%, car 25.0%"  # of all pixels


@pytest.mark.slow
def test_export_card_and_evaluation(tmp_path_factory, tmp_path):
    """The binary's card: architecture, classes, provenance with the run's config, and the
    evaluation it ran with its per-class IoU and each variant's agreement."""
    run = fx.shared_tiny_run(tmp_path_factory)
    data = fx.shared_data(tmp_path_factory)
    out = str(tmp_path / "export")
    result = harness.run(
        "deeplab.export_saved_model",
        f"--checkpoint={run['run_dir']}",
        f"--export_dir={out}",
        f"--dataset_dir={data}",
        "--tflite",
        "--tflite_input_size=33",
        "--quantize=int8",
        "--num_calibration_images=4",
        "--evaluate_split=val",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr
    # TensorFlow's and the converter's own lines went to export.log, not the console.
    for noise in ("fully_quantize", "lite.py:", "XNNPACK", "UserWarning"):
        assert noise not in console, noise
    with open(os.path.join(out, "export.log"), encoding="utf-8") as handle:
        log = handle.read()
    assert "fully_quantize" in log
    # One line per stage, with the count: nothing redrawn in a log.
    assert "evaluate 4 models on val: 4/4 img in " in result.stderr
    assert "\r" not in console
    card = model_card.read_card(out)
    assert card["kind"] == "export" and card["architecture"]["backbone"] == "resnet14_tiny"
    assert card["architecture"]["gflops_input"] == [33, 33] and card["architecture"]["gflops"] > 0
    assert [c["color"] for c in card["classes"]] == fx.PALETTE
    assert card["provenance"]["step"] == 5 and card["input"]["max_pixels"] == 4096 * 4096
    evaluation = card["evaluation"]
    assert evaluation["split"] == "val" and evaluation["images"] == 4
    assert set(evaluation["per_class_iou"]) == set(fx.CLASS_NAMES)
    with open(os.path.join(out, "tflite_eval.json"), encoding="utf-8") as handle:
        printed = json.load(handle)["results"]
    assert evaluation["miou"] == pytest.approx(printed["float Keras"]["miou"])
    variants = {v["precision"]: v for v in card["variants"]}
    assert set(variants) == {"float32", "int8"} and len(card["variants"]) == 3
    int8 = variants["int8"]
    assert int8["agreement_with_float"] == pytest.approx(printed["int8 TFLite"]["agreement"])
    markdown = open(os.path.join(out, model_card.CARD_MARKDOWN), encoding="utf-8").read()
    assert (
        "## Evaluation" in markdown and "| car |" in markdown and "deeplab_int8.tflite" in markdown
    )
    assert f"model card: {out}" in result.stdout
    assert model_card.summary(card) in result.stdout


def test_progress_draws_on_a_terminal_and_writes_one_line_to_a_log():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    log = io.StringIO()
    with Progress(3, "evaluate val", unit="img", stream=log) as bar:
        for _ in range(3):
            bar.update()
    assert log.getvalue().count("\n") == 1
    assert log.getvalue().startswith("evaluate val: 3/3 img in ") and "img/s" in log.getvalue()
    terminal = Terminal()
    bar = Progress(4, "convert train", unit="img", stream=terminal)
    bar.update(2)
    assert "\rconvert" in terminal.getvalue().replace("\033[K", "")
    assert "2/4 img" in bar.status() and "ETA" in bar.status()
    bar.update(2)
    bar.close()
    assert terminal.getvalue().endswith("\n")
    with pytest.raises(RuntimeError):
        with Progress(5, "x", stream=log) as failing:
            failing.update()
            raise RuntimeError("boom")
    assert "x: 1/5" not in log.getvalue()  # no summary line for a step that failed


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, run):
    """The README's "The model in Python" block, with its paths pointed at what this machine
    has: the authors' imported model and a CamVid photo when ../shared has them, else the tiny
    run and a synthetic photo."""
    from test_tflite import CAMVID_IMAGE  # pylint: disable=import-outside-toplevel
    from test_tflite import OFFICIAL  # pylint: disable=import-outside-toplevel

    with open(os.path.join(fx.REPO, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    marker = "<!-- python-api-example -->"
    assert marker in readme
    block = readme.split(marker, 1)[1].split("```python", 1)[1].split("```", 1)[0]
    if OFFICIAL and CAMVID_IMAGE:
        result = harness.run(
            "deeplab.import_official",
            f"--tflite={os.path.join(OFFICIAL, 'deeplabv3_mnv2_pascal_quant.tflite')}",
            f"--output={tmp_path / 'mnv2_pascal'}",
        )
        assert result.returncode == 0, result.stderr[-2000:]
        model, photo = str(tmp_path / "mnv2_pascal"), CAMVID_IMAGE
    else:
        model = run["run_dir"]
        photo = str(tmp_path / "photo.png")
        Image.fromarray(fx.structured_images(1, (48, 64))[0]).save(photo)
    block = block.replace("weights/mnv2_pascal", model).replace("photo.jpg", photo)
    block = block.replace("overlay.png", str(tmp_path / "overlay.png"))
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)  # pylint: disable=exec-used
    assert os.path.isfile(tmp_path / "overlay.png")
    labels = namespace["labels"]
    assert labels.ndim == 2 and labels.dtype == np.int32


@pytest.mark.slow
def test_saved_model_segmenter_probabilities_match_labels(tmp_path_factory, photo):
    export = fx.shared_export(tmp_path_factory)
    runner = serving.SavedModelSegmenter(export["export_dir"])
    labels, probabilities = runner.probabilities(photo)
    np.testing.assert_array_equal(labels, runner(photo))
    assert probabilities.shape == photo.shape[:2] + (fx.NUM_CLASSES,)
