"""Visualization: PNGs, panels, evaluation-server formats (VOC, Cityscapes) and the binary."""

import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver
from PIL import Image

from deeplab.common.inference_options import InferenceOptions
from deeplab.data import datasets_info
from deeplab.data import input_pipeline
from deeplab.data import synthetic
from deeplab.evaluation import evaluator as evaluation
from deeplab.evaluation import vis_export
from deeplab.evaluation import visualization
from deeplab.logdir import checkpoints
from deeplab.model.deeplabv3 import build_model

# Cityscapes label ids of the 19 train ids (road 7, sidewalk 8, ..., bicycle 33), from the
# Cityscapes label definitions.
CITYSCAPES_LABEL_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]


def read_png(path):
    with Image.open(path) as image:
        return image.mode, np.asarray(image), image.getpalette()


def test_cityscapes_train_ids_map_back_to_label_ids():
    lut = visualization.cityscapes_train_id_to_label_id()
    assert lut[:19].tolist() == CITYSCAPES_LABEL_IDS
    assert not lut[19:].any()


def test_voc_server_layout_is_an_indexed_png_of_class_indices(tmp_path):
    prediction = np.arange(21 * 3).reshape(7, 9) % 21
    path = visualization.save_raw_prediction(
        str(tmp_path),
        "2008_000123",
        prediction,
        dataset_name="pascal_voc_seg",
        palette=datasets_info.pascal_voc().palette,
    )
    assert path == str(tmp_path / "results/VOC2012/Segmentation/comp6_test_cls/2008_000123.png")
    mode, values, palette = read_png(path)
    assert mode == "P"
    np.testing.assert_array_equal(values, prediction)
    colors = np.asarray(palette[: 21 * 3]).reshape(21, 3)
    np.testing.assert_array_equal(colors, np.asarray(datasets_info.pascal_voc().palette))
    path5 = visualization.save_raw_prediction(
        str(tmp_path), "x", prediction, dataset_name="coco_voc", competition="comp5"
    )
    assert "comp5_test_cls" in path5
    with pytest.raises(ValueError, match="competition"):
        visualization.save_raw_prediction(
            str(tmp_path), "x", prediction, dataset_name="pascal_voc_seg", competition="comp9"
        )


def test_cityscapes_server_layout_holds_label_ids(tmp_path):
    prediction = np.tile(np.arange(19), (4, 1))
    path = visualization.save_raw_prediction(
        str(tmp_path), "berlin_000123_000019_leftImg8bit", prediction, dataset_name="cityscapes"
    )
    assert os.path.basename(path) == "berlin_000123_000019_pred_labelIds.png"
    # The Cityscapes script finds a prediction as the one "<city>_<seq>_<frame>*.png".
    assert len(glob.glob(str(tmp_path / "**" / "berlin_000123_000019*.png"), recursive=True)) == 1
    mode, values, _ = read_png(path)
    assert mode == "L"
    np.testing.assert_array_equal(values[0], CITYSCAPES_LABEL_IDS)
    with pytest.raises(ValueError, match="train ids"):
        visualization.save_raw_prediction(
            str(tmp_path), "a_1_2", np.full((2, 2), 19), dataset_name="cityscapes"
        )


def test_other_datasets_get_plain_index_pngs(tmp_path):
    prediction = np.array([[0, 1], [4, 2]])
    path = visualization.save_raw_prediction(
        str(tmp_path), "val_000001", prediction, dataset_name="synthetic"
    )
    assert path == str(tmp_path / "raw" / "val_000001.png")
    np.testing.assert_array_equal(read_png(path)[1], prediction)


@pytest.mark.slow
def test_panel_has_one_tile_per_view():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(30, 40, 3), dtype=np.uint8)
    label = rng.integers(0, 3, size=(30, 40))
    label[0] = 255
    prediction = rng.integers(0, 3, size=(30, 40))
    palette = [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
    with_label = visualization.panel(
        image, prediction, palette, label=label, class_names=["a", "b", "c"], title="x"
    )
    without = visualization.panel(image, prediction, palette)
    assert with_label.dtype == np.uint8 and with_label.shape[-1] == 3
    # image x groundtruth x prediction x overlay: 4 tiles of 3 inches at 100 dpi, 3 without labels
    assert with_label.shape[1] == 1200 and without.shape[1] == 900
    # The prediction's red is drawn somewhere.
    assert ((with_label[..., 0] == 255) & (with_label[..., 1] == 0)).any()


def test_index_png_rejects_values_outside_a_byte(tmp_path):
    with pytest.raises(ValueError, match="0..255"):
        visualization.save_index_png(str(tmp_path / "x.png"), np.array([[256]]))


# ------------------------------------------------------------------------------------------------
# visualize() and the binary on a tiny checkpoint.
# ------------------------------------------------------------------------------------------------


def make_run(logdir, num_classes, dataset_info):
    keras.utils.set_random_seed(5)
    model = build_model(backbone="resnet14_tiny", num_classes=num_classes, aspp_filters=8)
    checkpoint = checkpoints.make_checkpoint(model, step=tf.Variable(1, dtype=tf.int64))
    tf.train.CheckpointManager(checkpoint, logdir, max_to_keep=1, checkpoint_name="ckpt").save(1)
    checkpoints.write_run_info(logdir, model, dataset_info)
    return model


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    from deeplab.data import tfrecord  # pylint: disable=import-outside-toplevel

    dataset_dir = str(tmp_path_factory.mktemp("data"))
    synthetic.build_synthetic_dataset(
        dataset_dir, num_train=1, num_val=3, image_size=(33, 41), size_jitter=0.3, num_classes=5
    )
    logdir = str(tmp_path_factory.mktemp("run"))
    model = make_run(logdir, 5, tfrecord.read_dataset_info(dataset_dir))
    return dataset_dir, logdir, model


@pytest.mark.slow
def test_visualize_split_writes_pngs_panels_and_raw_predictions(synthetic_run, tmp_path):
    dataset_dir, logdir, model = synthetic_run
    result = vis_export.visualize(
        logdir,
        vis_dir=str(tmp_path),
        dataset_dir=dataset_dir,
        split="val",
        vis_num_images=2,
        save_raw_predictions=True,
        options=InferenceOptions(scales=(0.75, 1.0), flip=True),
    )
    assert result == {
        "vis_dir": str(tmp_path),
        "num_images": 3,
        "num_raw": 3,
        "server_format": None,
    }
    names = sorted(os.listdir(tmp_path))
    for kind in ("prediction", "overlay", "groundtruth", "panel"):
        assert [n for n in names if n.endswith(f"_{kind}.png")] == [
            f"val_00000{i}_{kind}.png" for i in range(2)
        ]
    assert sorted(os.listdir(tmp_path / "raw")) == [f"val_00000{i}.png" for i in range(3)]
    # The raw prediction is the evaluation prediction (same scales and flip).
    example = next(iter(input_pipeline.make_eval_dataset(dataset_dir, "val")))
    expected = evaluation.Predictor(
        model, options=InferenceOptions(scales=(0.75, 1.0), flip=True)
    ).labels(example["image"])
    np.testing.assert_array_equal(read_png(tmp_path / "raw" / "val_000000.png")[1], expected)
    colored = read_png(tmp_path / "val_000000_prediction.png")[1]
    np.testing.assert_array_equal(
        colored, visualization.colorize_labels(expected.numpy(), synthetic.class_colors(5))
    )


@pytest.mark.slow
def test_binary_writes_the_voc_server_layout_for_raw_test_images(tmp_path, capsys):
    from deeplab import _console  # pylint: disable=import-outside-toplevel
    from deeplab import visualize  # pylint: disable=import-outside-toplevel

    logdir = str(tmp_path / "run")
    model = make_run(logdir, 21, datasets_info.pascal_voc().as_dict())
    image_dir = tmp_path / "JPEGImages"
    image_dir.mkdir()
    rng = np.random.default_rng(1)
    sizes = {"2008_000001": (29, 37), "2008_000002": (33, 25), "2008_000003": (20, 20)}
    for name, size in sizes.items():
        Image.fromarray(rng.integers(0, 255, size=size + (3,), dtype=np.uint8)).save(
            image_dir / f"{name}.jpg"
        )
    (tmp_path / "test.txt").write_text("2008_000002\n2008_000001\n")
    if not flags.FLAGS.is_parsed():
        flags.FLAGS(["pytest"], known_only=True)
    with flagsaver.flagsaver(
        checkpoint=logdir,
        vis_images=str(image_dir / "*.jpg"),
        vis_image_list=str(tmp_path / "test.txt"),
        save_raw_predictions=True,
        vis_num_images=1,
        vis_dir=str(tmp_path / "vis"),
        dataset_dir=None,
        eval_output_stride=8,
        eval_scales=["1.0"],
        eval_flip=False,
    ):
        assert _console.run_main(visualize.main, ["visualize"], **visualize.RUN) == 0
    assert "Wrote 1 visualizations and 2 raw predictions (voc)" in capsys.readouterr().out
    results = tmp_path / "vis" / "results" / "VOC2012" / "Segmentation" / "comp6_test_cls"
    assert sorted(os.listdir(results)) == ["2008_000001.png", "2008_000002.png"]
    for name in ("2008_000001", "2008_000002"):
        mode, values, _ = read_png(results / f"{name}.png")
        assert mode == "P" and values.shape == sizes[name]
        assert values.max() < 21
    assert os.path.exists(tmp_path / "vis" / "2008_000002_panel.png")  # list order
    assert not os.path.exists(tmp_path / "vis" / "2008_000002_groundtruth.png")
    assert model.num_classes == 21


def test_binary_reports_a_listed_image_that_is_missing(tmp_path, capsys, synthetic_run):
    from deeplab import _console  # pylint: disable=import-outside-toplevel
    from deeplab import visualize  # pylint: disable=import-outside-toplevel

    _, logdir, _ = synthetic_run
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "list.txt").write_text("b\n")
    if not flags.FLAGS.is_parsed():
        flags.FLAGS(["pytest"], known_only=True)
    with flagsaver.flagsaver(
        checkpoint=logdir,
        vis_images=str(tmp_path / "*.png"),
        vis_image_list=str(tmp_path / "list.txt"),
    ):
        status = _console.run_main(visualize.main, ["visualize"], **visualize.RUN)
    assert status == 1  # a failure (a listed file is missing), not a usage error
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "not among --vis_images" in error[0]
