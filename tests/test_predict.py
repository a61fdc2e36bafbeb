"""deeplab.predict: image reading in any mode, SavedModel / checkpoint / TFLite backends, outputs,
skipped files and exit codes. (The official TFLite model through predict: test_tflite.py.)"""

import os

import numpy as np
import pytest
from PIL import Image

import export_fixtures as fx
import harness
from deeplab.common.errors import UserError
from deeplab.common.inference_options import InferenceOptions
from deeplab.evaluation.visualization import colorize_labels
from deeplab.export import predictor


def _write_inputs(folder, images):
    """Writes the test's inputs: RGB PNG, RGB JPEG, grayscale, RGBA, a broken file, a text file."""
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(images[0]).save(os.path.join(folder, "scene.png"))
    Image.fromarray(images[1]).save(os.path.join(folder, "scene.jpg"), quality=95)
    Image.fromarray(images[2]).convert("L").save(os.path.join(folder, "gray.png"))
    Image.fromarray(images[0]).convert("RGBA").save(os.path.join(folder, "alpha.png"))
    with open(os.path.join(folder, "broken.png"), "wb") as f:
        f.write(b"\x89PNG this is not really a PNG")
    with open(os.path.join(folder, "notes.txt"), "w") as f:
        f.write("not an image: not listed from a folder")


# ----------------------------------------------------------------------------- reading


def test_read_image_converts_every_mode_with_a_note(tmp_path):
    rgb = fx.structured_images(1, (9, 7), seed=4)[0]
    cases = {
        "rgb.png": (Image.fromarray(rgb), None),
        "gray.png": (Image.fromarray(rgb).convert("L"), "grayscale"),
        "graya.png": (Image.fromarray(rgb).convert("LA"), "alpha dropped"),
        "rgba.png": (Image.fromarray(rgb).convert("RGBA"), "alpha dropped"),
        "palette.png": (Image.fromarray(rgb).convert("P"), "palette"),
        "cmyk.jpg": (Image.fromarray(rgb).convert("CMYK"), "CMYK"),
    }
    for name, (image, note) in cases.items():
        image.save(tmp_path / name)
        array, got_note = predictor.read_image(str(tmp_path / name))
        assert array.dtype == np.uint8 and array.shape == (9, 7, 3), name
        assert (got_note is None) if note is None else (note in got_note), (name, got_note)
    np.testing.assert_array_equal(predictor.read_image(str(tmp_path / "rgb.png"))[0], rgb)
    gray = predictor.read_image(str(tmp_path / "gray.png"))[0]
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    np.testing.assert_array_equal(predictor.read_image(str(tmp_path / "rgba.png"))[0], rgb)


def test_read_image_scales_16_bit_grayscale(tmp_path):
    values = np.array([[0, 257, 65535], [257 * 100, 257 * 200, 128]], np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    array, note = predictor.read_image(str(tmp_path / "deep.png"))
    np.testing.assert_array_equal(array[..., 0], [[0, 1, 255], [100, 200, 0]])
    assert "8 bits" in note


def test_collect_inputs_expands_folders_and_reports_missing(tmp_path):
    _write_inputs(str(tmp_path / "in"), fx.structured_images(3, (9, 9)))
    paths, problems = predictor.collect_inputs(
        [str(tmp_path / "in"), str(tmp_path / "missing.jpg"), str(tmp_path / "in" / "notes.txt")]
    )
    names = [os.path.basename(p) for p in paths]
    # A folder lists image files only, sorted; a file named explicitly is tried anyway.
    assert names == ["alpha.png", "broken.png", "gray.png", "scene.jpg", "scene.png", "notes.txt"]
    assert problems == [(str(tmp_path / "missing.jpg"), "no such file or folder")]
    assert predictor.output_stems(paths)[3:5] == ["scene", "scene_2"]


def test_output_names_never_collide():
    """x.jpg writes x_color.png; an input named x_color.jpg must not overwrite it."""
    stems = predictor.output_stems(
        ["a/x.jpg", "b/x_color.jpg", "c/x.png", "d/X_Color.png", "e/x_2.png"]
    )
    files = [stem + suffix for stem in stems for suffix in predictor.OUTPUT_SUFFIXES]
    assert len({name.lower() for name in files}) == len(files) == 15
    assert stems[:2] == ["x", "x_color_2"]


# ----------------------------------------------------------------------------- backends


@pytest.fixture(scope="module")
def inputs_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("predict_inputs"))
    _write_inputs(folder, fx.structured_images(3, (37, 45), seed=11))
    return folder


@pytest.mark.slow
def test_predict_saved_model_writes_maps_colors_overlays(
    tmp_path_factory, inputs_dir, tmp_path, library_log
):
    from deeplab.export import serving

    export = fx.shared_export(tmp_path_factory)
    segmenter = predictor.make_segmenter(model=export["export_dir"])
    assert segmenter.class_names == fx.CLASS_NAMES and segmenter.palette == fx.PALETTE
    result = predictor.predict_files(segmenter, [inputs_dir], str(tmp_path))
    lines = library_log()
    processed = {os.path.basename(p): out for p, out in result["processed"]}
    assert sorted(processed) == ["alpha.png", "gray.png", "scene.jpg", "scene.png"]
    assert [os.path.basename(p) for p, _ in result["skipped"]] == ["broken.png"]
    assert "unreadable image" in result["skipped"][0][1]
    assert sorted(os.path.basename(p) for p, _ in result["notes"]) == ["alpha.png", "gray.png"]
    assert sum(" ms -> " in line for line in lines) == 4  # one timing line per image
    class_lines = [line for line in lines if line.startswith("    classes: ")]
    assert len(class_lines) == 4  # and one line of the classes found, with their shares
    for (path, shares), line in zip(result["classes"], class_lines):
        assert abs(sum(s["share"] for s in shares) - 1.0) < 1e-6
        assert {s["name"] for s in shares} <= set(fx.CLASS_NAMES)
        assert line == "    classes: " + ", ".join(
            f"{s['name']} {100 * s['share']:.1f}%" for s in shares
        )
    reference = serving.KerasSegmenter(
        export["model"], options=InferenceOptions(scales=fx.EXPORT_SCALES, flip=fx.EXPORT_FLIP)
    )
    for name, index_png in processed.items():
        image, _ = predictor.read_image(os.path.join(inputs_dir, name))
        labels = np.asarray(Image.open(index_png))
        assert labels.shape == image.shape[:2] and labels.dtype == np.uint8
        assert (labels == reference(image)).mean() >= 0.999, name
        stem = index_png[: -len(".png")]
        colored = np.asarray(Image.open(stem + "_color.png"))
        np.testing.assert_array_equal(colored, colorize_labels(labels, fx.PALETTE))
        overlay = np.asarray(Image.open(stem + "_overlay.png")).astype(int)
        height, width = labels.shape
        assert overlay.shape[0] > height and overlay.shape[1] == max(width, 320)  # + legend
        # Inside each region (not at a class boundary) the photo and the class colour blend at
        # 0.6; no class of this dataset is a background, so every pixel is painted.
        padded = np.pad(labels, 2, mode="edge")
        inside = np.ones_like(labels, bool)
        for dy in range(5):
            for dx in range(5):
                inside &= padded[dy : dy + height, dx : dx + width] == labels
        expected = 0.4 * image.astype(int) + 0.6 * colored
        blend = overlay[:height, :width]
        assert inside.mean() > 0.3
        np.testing.assert_array_less(np.abs(blend - expected)[inside], 1.0)
    scene = np.asarray(Image.open(processed["scene.png"]))
    assert len(np.unique(scene)) >= 2
    # RGBA with alpha dropped is the same picture as scene.png.
    np.testing.assert_array_equal(np.asarray(Image.open(processed["alpha.png"])), scene)


@pytest.mark.slow
def test_checkpoint_backend_agrees_with_the_saved_model(tmp_path_factory, inputs_dir):
    export = fx.shared_export(tmp_path_factory)
    from_checkpoint = predictor.make_segmenter(
        checkpoint=export["run_dir"],
        options=InferenceOptions(scales=fx.EXPORT_SCALES, flip=fx.EXPORT_FLIP),
    )
    assert from_checkpoint.palette == fx.PALETTE
    from_export = predictor.make_segmenter(model=export["export_dir"])
    image, _ = predictor.read_image(os.path.join(inputs_dir, "scene.png"))
    assert (from_checkpoint(image) == from_export(image)).mean() >= 0.999


def test_refuses_to_overwrite_inputs(inputs_dir):
    with pytest.raises(UserError, match="would overwrite an input image"):
        predictor.predict_files(
            lambda image: np.zeros(image.shape[:2], np.int32), [inputs_dir], inputs_dir
        )


def test_model_argument_errors(tmp_path):
    with pytest.raises(UserError, match="--model=.*neither a .tflite file nor a SavedModel"):
        predictor.make_segmenter(model=str(tmp_path / "nothing"))
    with pytest.raises(UserError, match="no saved_model.pb"):
        predictor.make_segmenter(model=str(tmp_path))
    with pytest.raises(UserError, match="pass --model=EXPORT"):
        predictor.make_segmenter()


# ----------------------------------------------------------------------------- the binary


@pytest.mark.slow
def test_binary_runs_a_tflite_model_and_sets_the_exit_code(tmp_path, tmp_path_factory, inputs_dir):
    from deeplab.export import tflite

    model_path = fx.shared_float_tflite(tmp_path_factory)
    out = tmp_path / "out"
    result = harness.run(
        "deeplab.predict",
        f"--model={model_path}",
        f"--input={inputs_dir}",
        f"--output_dir={out}",
        str(tmp_path / "missing.png"),
    )
    # Two inputs were skipped: the run says so and exits 1 (the rest is still written).
    assert result.returncode == 1, result.stderr[-2000:]
    assert "error: 2 of 6 inputs were skipped: " in result.stderr
    text = result.stdout
    assert text.count(" ms -> ") == 4
    assert text.count("    classes: ") == 4
    # The shared .tflite has a sidecar but no export folder's card: predict says so in one line.
    assert text.splitlines()[0] == "model: no model card"
    assert "note: " in text and "grayscale image converted to RGB" in text
    assert "skipped " + os.path.join(inputs_dir, "broken.png") in text
    assert "skipped " + str(tmp_path / "missing.png") in text
    assert "processed 4, skipped 2" in text
    # scene.jpg sorts first and keeps the stem "scene"; scene.png is written as scene_2.png.
    labels = np.asarray(Image.open(out / "scene_2.png"))
    image, _ = predictor.read_image(os.path.join(inputs_dir, "scene.png"))
    np.testing.assert_array_equal(labels, tflite.TFLiteSegmenter(model_path)(image))
    for suffix in ("_color.png", "_overlay.png"):
        assert (out / f"scene{suffix}").is_file() and (out / f"scene_2{suffix}").is_file()

    nothing = harness.run(
        "deeplab.predict",
        f"--model={model_path}",
        f"--input={tmp_path / 'missing.png'}",
        f"--output_dir={out}",
    )
    assert nothing.returncode == 1 and "processed 0 images" in nothing.stdout

    usage = harness.run("deeplab.predict", f"--input={inputs_dir}", f"--output_dir={out}")
    assert usage.returncode == 2 and "pass --model=EXPORT" in usage.stderr
    assert "Traceback" not in usage.stderr
