"""Evaluation: the split-level metric, multi-scale + flip inference, OS switch, files, binary."""

import csv
import glob
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver

import event_tags
import harness
from deeplab.common.errors import ConfigError
from deeplab.common.errors import DataError
from deeplab.common.inference_options import InferenceOptions
from deeplab.data import input_pipeline
from deeplab.data import synthetic
from deeplab.evaluation import continuous
from deeplab.evaluation import evaluator as evaluation
from deeplab.evaluation import visualization
from deeplab.logdir import checkpoints
from deeplab.logdir import summaries
from deeplab.model.deeplabv3 import build_model
from deeplab.model.deeplabv3 import rebuild_with_output_stride

NUM_CLASSES = 5


class OneHotModel:
    """A "model" whose logits are a one-hot of channel 0 of its input: the prediction is chosen."""

    num_classes = NUM_CLASSES

    def __call__(self, images, training=False):
        del training
        return 10.0 * tf.one_hot(tf.cast(images[..., 0], tf.int32), NUM_CLASSES)


def numpy_scores(pairs, num_classes, ignore_label):
    """Independent reference: per-class TP / FP / FN counted with boolean masks."""
    tp, fp, fn = (np.zeros(num_classes) for _ in range(3))
    correct = valid_total = 0
    for prediction, label in pairs:
        valid = label != ignore_label
        correct += np.sum((prediction == label) & valid)
        valid_total += np.sum(valid)
        for c in range(num_classes):
            tp[c] += np.sum((prediction == c) & (label == c) & valid)
            fp[c] += np.sum((prediction == c) & (label != c) & valid)
            fn[c] += np.sum((prediction != c) & (label == c) & valid)
    union = tp + fp + fn
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    return iou, float(np.nanmean(iou)), correct / valid_total


def random_examples(rng, count, absent_class=NUM_CLASSES - 1):
    """Images whose channel 0 holds the prediction; labels with ~15% ignored pixels."""
    examples = []
    for index in range(count):
        height, width = rng.integers(17, 34, size=2)
        prediction = rng.integers(0, absent_class, size=(height, width))
        label = rng.integers(0, absent_class, size=(height, width))
        # Bias towards agreement so IOUs are not all tiny.
        agree = rng.random((height, width)) < 0.5
        label = np.where(agree, prediction, label)
        label = np.where(rng.random((height, width)) < 0.15, 255, label)
        image = np.zeros((height, width, 3), np.float32)
        image[..., 0] = prediction
        examples.append(
            {
                "image": image,
                "label": label.astype(np.int32),
                "filename": f"img_{index}",
                "prediction": prediction,
            }
        )
    return examples


def test_metric_matches_independent_numpy_on_random_predictions():
    rng = np.random.default_rng(0)
    examples = random_examples(rng, 6)
    results = evaluation.evaluate(
        OneHotModel(),
        examples,
        num_classes=NUM_CLASSES,
        ignore_label=255,
        class_names=[f"c{i}" for i in range(NUM_CLASSES)],
    )
    pairs = [(e["prediction"], e["label"]) for e in examples]
    iou, miou, accuracy = numpy_scores(pairs, NUM_CLASSES, 255)

    expected_cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for prediction, label in pairs:
        valid = label != 255
        np.add.at(expected_cm, (label[valid], prediction[valid]), 1)
    np.testing.assert_array_equal(results["confusion_matrix"], expected_cm)
    assert results["num_images"] == 6
    assert results["num_pixels"] == sum(int(np.sum(l != 255)) for _, l in pairs)
    assert results["miou"] == pytest.approx(miou, abs=1e-12)
    assert results["pixel_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    for c in range(NUM_CLASSES - 1):
        assert results["per_class_iou"][f"c{c}"] == pytest.approx(iou[c], abs=1e-12)
    # The class absent from groundtruth and predictions is reported NaN and left out of the mean.
    assert np.isnan(results["per_class_iou"][f"c{NUM_CLASSES - 1}"])
    assert 0.2 < results["miou"] < 0.9

    limited = evaluation.evaluate(
        OneHotModel(), examples, num_classes=NUM_CLASSES, ignore_label=255, limit=2
    )
    assert limited["num_images"] == 2
    assert limited["miou"] == pytest.approx(numpy_scores(pairs[:2], NUM_CLASSES, 255)[1], abs=1e-12)


def test_label_outside_the_classes_names_the_image():
    examples = random_examples(np.random.default_rng(1), 2)
    examples[1]["label"][0, 0] = 7
    with pytest.raises(DataError, match="img_1"):
        evaluation.evaluate(OneHotModel(), examples, num_classes=NUM_CLASSES, ignore_label=255)


def test_num_classes_must_match_the_model():
    with pytest.raises(ConfigError, match="5 classes"):
        evaluation.evaluate(OneHotModel(), [], num_classes=4, ignore_label=255)


@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(3)
    return build_model(backbone="resnet14_tiny", num_classes=NUM_CLASSES, aspp_filters=8)


def hand_computed_probabilities(model, image, scales, flip):
    """Sec. 4.2 written out: resize, run, softmax, resize back, unflip; mean over all passes."""
    height, width = image.shape[:2]
    total = np.zeros((height, width, NUM_CLASSES), np.float64)
    passes = 0
    for flipped in (False, True) if flip else (False,):
        x = image[:, ::-1] if flipped else image
        for scale in scales:
            size = (int(np.floor(scale * height + 0.5)), int(np.floor(scale * width + 0.5)))
            resized = tf.image.resize(x[None], size, method="bilinear") if scale != 1.0 else x[None]
            logits = model(resized, training=False)
            probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
            probabilities = tf.image.resize(probabilities, (height, width), method="bilinear")
            probabilities = probabilities.numpy()[0]
            total += probabilities[:, ::-1] if flipped else probabilities
            passes += 1
    return total / passes


@pytest.mark.slow
def test_multiscale_flip_equals_hand_computed_average(tiny_model):
    rng = np.random.default_rng(2)
    image = rng.normal(0.0, 40.0, size=(33, 41, 3)).astype(np.float32)
    scales = (0.5, 0.75, 1.0, 1.25)
    predictor = evaluation.Predictor(tiny_model, options=InferenceOptions(scales=scales, flip=True))
    ours = predictor.probabilities(image).numpy()
    expected = hand_computed_probabilities(tiny_model, image, scales, flip=True)
    assert predictor.graph_mode is True
    assert ours.shape == (33, 41, NUM_CLASSES)
    np.testing.assert_allclose(ours, expected, atol=2e-5)
    np.testing.assert_allclose(ours.sum(-1), 1.0, atol=1e-5)
    # The average is not the single-scale prediction (else this test could not fail).
    single = hand_computed_probabilities(tiny_model, image, (1.0,), flip=False)
    assert np.abs(single - expected).max() > 1e-3

    # The metric of evaluate() is computed on the argmax of that average.
    label = rng.integers(0, NUM_CLASSES, size=(33, 41)).astype(np.int32)
    label[::7] = 255
    results = evaluation.evaluate(
        tiny_model,
        [{"image": image, "label": label}],
        num_classes=NUM_CLASSES,
        ignore_label=255,
        options=InferenceOptions(scales=scales, flip=True),
    )
    prediction = expected.argmax(-1)
    valid = label != 255
    expected_cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    np.add.at(expected_cm, (label[valid], prediction[valid]), 1)
    np.testing.assert_array_equal(results["confusion_matrix"], expected_cm)
    assert results["scales"] == list(scales) and results["flip"] is True


@pytest.mark.slow
def test_images_of_many_sizes_share_one_trace(tiny_model):
    predictor = evaluation.Predictor(
        tiny_model, options=InferenceOptions(scales=(0.75, 1.0), flip=True)
    )
    for size in ((17, 23), (33, 29), (40, 47)):
        assert predictor.labels(np.zeros(size + (3,), np.float32)).shape == size
    assert predictor._forward_graph.experimental_get_tracing_count() == 1  # pylint: disable=protected-access


def test_falls_back_to_eager_for_a_model_that_cannot_trace_unknown_sizes():
    class StaticOnly(OneHotModel):
        def __call__(self, images, training=False):
            if images.shape[1] is None:
                raise TypeError("needs a static size")
            return super().__call__(images, training)

    examples = random_examples(np.random.default_rng(4), 2)
    reference = evaluation.evaluate(
        OneHotModel(), examples, num_classes=NUM_CLASSES, ignore_label=255
    )
    predictor = evaluation.Predictor(StaticOnly())
    predictor.labels(examples[0]["image"])
    assert predictor.graph_mode is False
    results = evaluation.evaluate(StaticOnly(), examples, num_classes=NUM_CLASSES, ignore_label=255)
    np.testing.assert_array_equal(results["confusion_matrix"], reference["confusion_matrix"])


# ------------------------------------------------------------------------------------------------
# Checkpoints: OS 16 -> OS 8, result files, the binary, --watch.
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("data") / "synthetic")
    synthetic.build_synthetic_dataset(
        path, num_train=2, num_val=3, image_size=(33, 41), size_jitter=0.3, num_classes=NUM_CLASSES
    )
    return path


def write_checkpoint(logdir, model, step, dataset_dir):
    """A checkpoint in the layout deeplab.train writes (checkpoints module), at ``step``."""
    from deeplab.data import tfrecord

    checkpoint = checkpoints.make_checkpoint(model, step=tf.Variable(step, dtype=tf.int64))
    manager = tf.train.CheckpointManager(
        checkpoint, logdir, max_to_keep=5, checkpoint_name=checkpoints.CHECKPOINT_NAME
    )
    prefix = manager.save(checkpoint_number=step)
    checkpoints.write_run_info(logdir, model, tfrecord.read_dataset_info(dataset_dir))
    return prefix


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model, dataset_dir):
    logdir = str(tmp_path_factory.mktemp("run"))
    prefix = write_checkpoint(logdir, tiny_model, 7, dataset_dir)
    return logdir, prefix


@pytest.mark.slow
def test_checkpoint_trained_at_os16_evaluates_at_os8(trained, tiny_model, dataset_dir):
    logdir, prefix = trained
    assert tiny_model.output_stride == 16
    at8 = evaluation.evaluate_checkpoint(
        logdir, dataset_dir, split="val", options=InferenceOptions(output_stride=8)
    )
    assert at8["output_stride"] == 8 and at8["train_output_stride"] == 16
    assert at8["checkpoint"] == prefix and at8["step"] == 7
    assert at8["num_images"] == 3 and at8["dataset"] == "synthetic"
    assert at8["class_names"] == synthetic.class_names(NUM_CLASSES)

    # Same numbers as the weights rebuilt at OS 8 directly, evaluated on the same images.
    direct = evaluation.evaluate(
        rebuild_with_output_stride(tiny_model, 8),
        input_pipeline.make_eval_dataset(dataset_dir, "val"),
        num_classes=NUM_CLASSES,
        ignore_label=255,
    )
    np.testing.assert_array_equal(at8["confusion_matrix"], direct["confusion_matrix"])
    at16 = evaluation.evaluate_checkpoint(logdir, dataset_dir, split="val")
    assert at16["output_stride"] == 16
    # The two strides are different networks: their probabilities differ.
    image = next(iter(input_pipeline.make_eval_dataset(dataset_dir, "val")))["image"]
    p16 = evaluation.Predictor(tiny_model).probabilities(image).numpy()
    p8 = (
        evaluation.Predictor(rebuild_with_output_stride(tiny_model, 8)).probabilities(image).numpy()
    )
    assert np.abs(p16 - p8).max() > 1e-4
    assert at16["num_pixels"] == at8["num_pixels"]


def test_wrong_num_classes_for_the_checkpoint_or_dataset(trained, dataset_dir):
    logdir, _ = trained
    with pytest.raises(ConfigError, match="num_classes=4"):
        evaluation.evaluate_checkpoint(logdir, dataset_dir, num_classes=4)


def test_result_files(tmp_path):
    cm = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    results = evaluation.summarize(cm, ["bg", "cat", "dog"])
    results.update(num_images=2, scales=[1.0], flip=False)
    evaluation.write_results(str(tmp_path), results)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["miou"] == pytest.approx((5 / 8 + 3 / 6) / 2)
    assert saved["miou_percent"] == pytest.approx(56.25)
    assert saved["per_class_iou"]["dog"] is None  # absent class: JSON null, not NaN
    assert saved["pixel_accuracy"] == pytest.approx(8 / 11)
    np.testing.assert_array_equal(np.load(tmp_path / "confusion_matrix.npy"), cm)
    rows = list(csv.reader((tmp_path / "confusion_matrix.csv").read_text().splitlines()))
    assert rows[0] == ["groundtruth \\ prediction", "bg", "cat", "dog"]
    assert rows[2] == ["cat", "2", "3", "0"]
    back = evaluation.read_results(str(tmp_path))
    np.testing.assert_array_equal(back["confusion_matrix"], cm)
    assert np.isnan(back["per_class_iou"]["dog"])
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


@pytest.mark.slow
def test_binary_evaluates_at_another_output_stride_with_ms_and_flip(trained, dataset_dir, tmp_path):
    logdir, _ = trained
    result = harness.run(
        "deeplab.evaluate",
        f"--dataset_dir={dataset_dir}",
        f"--checkpoint={logdir}",
        "--eval_output_stride=8",
        "--eval_scales=0.75,1.0",
        "--eval_flip",
        f"--results_dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["output_stride"] == 8 and saved["train_output_stride"] == 16
    assert saved["scales"] == [0.75, 1.0] and saved["flip"] is True and saved["num_images"] == 3
    assert f"val mIOU {100 * saved['miou']:.2f}%" in result.stdout
    assert "shape_4" in result.stdout  # the per-class table names the classes
    assert np.load(tmp_path / "confusion_matrix.npy").sum() == saved["num_pixels"]


@pytest.fixture
def parsed_flags():
    from deeplab import evaluate  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel

    if not flags.FLAGS.is_parsed():
        flags.FLAGS(["pytest"], known_only=True)
    with flagsaver.flagsaver():
        yield flags.FLAGS


@pytest.mark.parametrize(
    "override, message, status",
    [
        ({"num_classes": 7}, "num_classes=7 disagrees", 2),  # a usage error (a ConfigError)
        ({"checkpoint": "/nonexistent/run"}, "--checkpoint=/nonexistent/run", 1),  # a failure
    ],
)
def test_binary_user_errors_are_one_line(
    parsed_flags, trained, dataset_dir, capsys, override, message, status
):
    from deeplab import _console  # pylint: disable=import-outside-toplevel
    from deeplab import evaluate  # pylint: disable=import-outside-toplevel

    logdir, _ = trained
    parsed_flags.dataset_dir = dataset_dir
    parsed_flags.checkpoint = logdir
    for name, value in override.items():
        setattr(parsed_flags, name, value)
    assert _console.run_main(evaluate.main, ["evaluate"], **evaluate.RUN) == status
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("deeplab.evaluate: error: ")
    assert message in error[0]


@pytest.mark.slow
def test_watch_evaluates_each_new_checkpoint_into_tensorboard(tmp_path, tiny_model, dataset_dir):
    logdir = str(tmp_path / "run")
    write_checkpoint(logdir, tiny_model, 1, dataset_dir)
    now = [0.0]
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds
        if len(sleeps) == 1:  # training writes two more checkpoints while we wait
            write_checkpoint(logdir, tiny_model, 2, dataset_dir)
            write_checkpoint(logdir, tiny_model, 3, dataset_dir)

    settings = evaluation.EvalSettings(dataset_dir, split="val", limit=1)
    evaluated = continuous.watch(
        logdir, settings, timeout=25, interval=10, sleep=sleep, clock=lambda: now[0]
    )
    assert [os.path.basename(p) for p in evaluated] == ["ckpt-1", "ckpt-2", "ckpt-3"]
    assert len(sleeps) == 4  # one poll finds ckpt-2 and -3, then 3 polls until 25 s pass
    scalars = summaries.read_scalars(os.path.join(logdir, "eval"))
    assert [step for step, _ in scalars["eval/miou"]] == [1, 2, 3]
    assert "eval/pixel_accuracy" in scalars
    assert any(tag.startswith("eval/iou/") for tag in scalars)
    for name in ("ckpt-1", "ckpt-2", "ckpt-3"):
        saved = json.loads(
            open(
                os.path.join(logdir, "eval", "val-os16", name, "results.json"), encoding="utf-8"
            ).read()
        )
        assert saved["step"] == int(name.split("-")[1])
        assert saved["miou"] == pytest.approx(scalars["eval/miou"][0][1], abs=1e-6)

    # With the final step known, watching stops right after that checkpoint.
    sleeps.clear()
    evaluated = continuous.watch(
        logdir, settings, timeout=1000, interval=10, final_step=3, sleep=sleep, clock=lambda: now[0]
    )
    assert len(evaluated) == 3 and not sleeps


def test_watch_finds_the_checkpoints_of_a_relative_logdir(tmp_path, monkeypatch):
    """--watch --logdir=runs/x (relative, as the flagfiles give it) sees the run's checkpoints."""
    monkeypatch.chdir(tmp_path)
    checkpoint = tf.train.Checkpoint(v=tf.Variable(1.0))
    manager = tf.train.CheckpointManager(
        checkpoint, os.path.join("runs", "x"), max_to_keep=3, checkpoint_name="ckpt"
    )
    manager.save(checkpoint_number=5)
    manager.save(checkpoint_number=10)
    assert continuous.checkpoint_prefixes(os.path.join("runs", "x")) == [
        os.path.join("runs", "x", "ckpt-5"),
        os.path.join("runs", "x", "ckpt-10"),
    ]
    assert continuous.checkpoint_prefixes(str(tmp_path / "runs" / "x")) == [
        str(tmp_path / "runs" / "x" / "ckpt-5"),
        str(tmp_path / "runs" / "x" / "ckpt-10"),
    ]


def test_write_summaries_adds_per_class_iou_and_a_confusion_matrix_image(tmp_path):
    """TensorBoard gets the per-class IOU scalars and the confusion matrix as an image whose
    rows are normalized (read back from the event file)."""
    matrix = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]], np.int64)
    rows = visualization.normalized_confusion_rows(matrix)
    np.testing.assert_allclose(rows, [[0.8, 0.2, 0.0], [0.25, 0.75, 0.0], [0.0, 0.0, 0.0]])
    results = {
        "step": 7,
        "miou": 0.5,
        "pixel_accuracy": 0.79,
        "confusion_matrix": matrix,
        "class_names": ["sky", "road", "car"],
        "per_class_iou": {"sky": 0.73, "road": 0.5, "car": float("nan")},
    }
    continuous.write_summaries(str(tmp_path), results)
    eval_dir = os.path.join(str(tmp_path), "eval")
    scalars = summaries.read_scalars(eval_dir)
    assert scalars["eval/iou/sky"] == [(7, pytest.approx(0.73))]
    assert "eval/iou/car" not in scalars  # absent class: no point
    tags = event_tags.read_tags(eval_dir)
    assert tags["eval/confusion_matrix"] == "images"
    pictures = []
    for path in glob.glob(os.path.join(eval_dir, "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.tag == "eval/confusion_matrix":
                    blobs = tf.make_ndarray(value.tensor)
                    pictures.append((event.step, tf.io.decode_png(blobs[2]).numpy()))
    assert len(pictures) == 1 and pictures[0][0] == 7
    picture = pictures[0][1]
    assert picture.ndim == 3 and picture.shape[2] == 3 and min(picture.shape[:2]) > 100
    assert picture.std() > 10  # drawn, not blank


@pytest.mark.slow
def test_binary_takes_the_settings_the_run_recorded(tmp_path, tiny_model, dataset_dir):
    """`deeplab.evaluate --logdir=RUN` with no --dataset_dir: the data, split and evaluation
    settings come from RUN/config.json; a flag given on the command line still wins."""
    from deeplab.config.experiment import ExperimentConfig  # pylint: disable=import-outside-toplevel
    from deeplab.logdir import run_record  # pylint: disable=import-outside-toplevel

    logdir = str(tmp_path / "run")
    write_checkpoint(logdir, tiny_model, 3, dataset_dir)
    config = ExperimentConfig.create(
        dataset_dir=dataset_dir,
        logdir=logdir,
        eval_split="train",
        eval_output_stride=8,
        eval_limit=1,
    )
    run_record.write_config(
        logdir, run_record.resolved_config(config, tiny_model.get_config(), NUM_CLASSES)
    )
    result = harness.run(
        "deeplab.evaluate", f"--logdir={logdir}", f"--results_dir={tmp_path / 'a'}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert saved["split"] == "train" and saved["output_stride"] == 8 and saved["num_images"] == 1
    assert "config.json" in result.stdout
    result = harness.run(
        "deeplab.evaluate",
        f"--logdir={logdir}",
        "--eval_split=val",
        "--eval_limit=0",
        f"--results_dir={tmp_path / 'b'}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    saved = json.loads((tmp_path / "b" / "results.json").read_text())
    assert saved["split"] == "val" and saved["output_stride"] == 8 and saved["num_images"] == 3
