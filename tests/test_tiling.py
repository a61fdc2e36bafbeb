"""Sliding-window (tiled) inference: window placement, the average against NumPy, whole-image
equality where the tile covers the image, graph = eager, and the exported SavedModel."""

import numpy as np
import pytest
import tensorflow as tf

import deeplab
from deeplab.common.inference_options import InferenceOptions
from deeplab.evaluation import inference
from deeplab.export import serving
from deeplab.model import preprocessing


@pytest.fixture(scope="module")
def model():
    return deeplab.build_model(
        backbone="resnet14_tiny",
        num_classes=4,
        atrous_rates=(1, 2),
        aspp_filters=8,
        aspp_dropout=0.0,
        output_stride=16,
    )


def _images(height, width, seed=0):
    return np.random.default_rng(seed).normal(0, 50, (1, height, width, 3)).astype("float32")


def test_tile_starts_cover_the_side_and_end_on_the_border():
    assert inference.tile_starts(40, 64, 0.25) == [0]  # fits: one window, no padding
    assert inference.tile_starts(64, 64, 0.25) == [0]
    assert inference.tile_starts(100, 40, 0.25) == [0, 30, 60]  # stride 30, last ends at 100
    assert inference.tile_starts(100, 40, 0.0) == [0, 40, 60]
    assert inference.tile_starts(100, 40, 0.5) == [0, 20, 40, 60]
    for length, tile, overlap in ((513, 200, 0.25), (1000, 321, 0.4), (77, 10, 0.9)):
        starts = inference.tile_starts(length, tile, overlap)
        covered = np.zeros(length, bool)
        for start in starts:
            covered[start : start + tile] = True
        assert covered.all() and starts[-1] + tile == length and starts == sorted(set(starts))


@pytest.mark.slow
def test_a_tile_covering_the_image_is_whole_image_inference(model):
    images = _images(45, 61)
    whole = inference.predict_probabilities(
        model, images, options=InferenceOptions(scales=(0.75, 1.0), flip=True)
    )
    tiled = inference.predict_probabilities(
        model, images, options=InferenceOptions(scales=(0.75, 1.0), flip=True, tile_size=(45, 64))
    )
    np.testing.assert_array_equal(np.asarray(tiled), np.asarray(whole))


def test_tiled_probabilities_match_a_numpy_average(model):
    images = _images(50, 70, seed=1)
    got = np.asarray(
        inference.tiled_probabilities(
            model, images, InferenceOptions(tile_size=(33, 40), tile_overlap=0.25)
        )
    )
    total = np.zeros((1, 50, 70, 4))
    count = np.zeros((1, 50, 70, 1))
    for top in (0, 17):  # rows: stride round(33 * 0.75) = 25 -> [0] + last start 17
        for left in (0, 30):  # cols: stride 30 -> [0] + last start 30
            logits = np.asarray(model(images[:, top : top + 33, left : left + 40], training=False))
            shifted = logits - logits.max(-1, keepdims=True)
            probabilities = np.exp(shifted) / np.exp(shifted).sum(-1, keepdims=True)
            total[:, top : top + 33, left : left + 40] += probabilities
            count[:, top : top + 33, left : left + 40] += 1
    np.testing.assert_allclose(got, total / count, atol=1e-5)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_graph_with_dynamic_sizes_equals_eager(model):
    images = _images(50, 70, seed=2)
    eager = inference.predict_probabilities(
        model, images, options=InferenceOptions(tile_size=(33, 40), tile_overlap=0.3)
    )

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def graph(x):
        return inference.predict_probabilities(
            model, x, options=InferenceOptions(tile_size=(33, 40), tile_overlap=0.3)
        )

    np.testing.assert_allclose(np.asarray(graph(images)), np.asarray(eager), atol=1e-6)
    small = _images(20, 30, seed=3)  # smaller than the tile: one window inside the graph too
    np.testing.assert_allclose(
        np.asarray(graph(small)),
        np.asarray(inference.predict_probabilities(model, small)),
        atol=1e-6,
    )


@pytest.mark.slow
def test_saved_model_and_keras_segmenter_tile(model, tmp_path):
    pixels = np.random.default_rng(4).integers(0, 256, (57, 83, 3), dtype=np.uint8)
    expected = np.argmax(
        np.asarray(
            inference.predict_probabilities(
                model,
                preprocessing.normalize_image(pixels[None]),
                options=InferenceOptions(tile_size=(33, 33)),
            )[0]
        ),
        -1,
    )
    keras_tiled = serving.KerasSegmenter(
        model, class_names=list("abcd"), options=InferenceOptions(tile_size=(33, 33))
    )
    np.testing.assert_array_equal(keras_tiled(pixels), expected)
    export_dir = str(tmp_path / "tiled")
    serving.export_saved_model(
        model, export_dir, class_names=list("abcd"), options=InferenceOptions(tile_size=(33, 33))
    )
    loaded = serving.SavedModelSegmenter(export_dir)
    np.testing.assert_array_equal(loaded(pixels), expected)


@pytest.mark.slow
def test_saved_model_pixel_cap_set_at_export(model, tmp_path):
    """--serving_max_pixels: a call of N x H x W above the cap is refused before the model
    runs; at the cap it is served; 0 turns the cap off."""
    pixels = np.random.default_rng(5).integers(0, 256, (2, 21, 30, 3), dtype=np.uint8)
    serving.export_saved_model(
        model, str(tmp_path / "capped"), class_names=list("abcd"), max_pixels=21 * 30
    )
    serve = tf.saved_model.load(str(tmp_path / "capped")).signatures["serving_default"]
    assert serve(images=tf.constant(pixels[:1]))["semantic"].shape == (1, 21, 30)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"exceeds the cap of 630 pixels"):
        serve(images=tf.constant(pixels))
    serving.export_saved_model(
        model, str(tmp_path / "uncapped"), class_names=list("abcd"), max_pixels=0
    )
    serve = tf.saved_model.load(str(tmp_path / "uncapped")).signatures["serving_default"]
    assert serve(images=tf.constant(pixels))["semantic"].shape == (2, 21, 30)


@pytest.mark.slow
def test_evaluation_with_windows(data_dir, tmp_path):
    from deeplab.evaluation import evaluator as evaluation  # pylint: disable=import-outside-toplevel
    from deeplab.training import trainer as train_lib  # pylint: disable=import-outside-toplevel
    from tests.test_train import _config  # pylint: disable=import-outside-toplevel

    train_lib.train(_config(data_dir, tmp_path / "run", training_steps=1, image_summary_steps=0))
    whole = evaluation.evaluate_checkpoint(str(tmp_path / "run"), data_dir)
    covering = evaluation.evaluate_checkpoint(
        str(tmp_path / "run"), data_dir, options=InferenceOptions(tile_size=(40, 40))
    )
    assert covering["miou"] == whole["miou"]  # 40x40 images: one window each
    tiled = evaluation.evaluate_checkpoint(
        str(tmp_path / "run"),
        data_dir,
        options=InferenceOptions(tile_size=(24, 24), tile_overlap=0.5),
    )
    assert 0.0 <= tiled["miou"] <= 1.0 and tiled["tile_size"] == (24, 24)
    tag = evaluation.results_tag("val", InferenceOptions(output_stride=16, tile_size=(24, 24)))
    assert tag == "val-os16-tile24x24"
