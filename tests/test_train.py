"""deeplab.train: the loss falls, a tiny model overfits, summaries, fine-tuning, NaN stop,
resume after kill -9, and one-line errors. Tiny models (resnet14_tiny, <= 49 px crops)."""

import dataclasses
import json
import math
import os
import re
import signal
import time

import numpy as np
import pytest
import tensorflow as tf

import event_tags
import harness
from deeplab.common.errors import ConfigError
from deeplab.config.experiment import ExperimentConfig
from deeplab.data import synthetic
from deeplab.evaluation import continuous
from deeplab.logdir import checkpoints
from deeplab.logdir import summaries
from deeplab.training import bookkeeping
from deeplab.training import trainer as train_lib

TINY_MODEL = {
    "backbone": "resnet14_tiny",
    "output_stride": 16,
    "multi_grid": (1, 2, 4),
    "atrous_rates": (1, 2, 3),
    "image_pooling": True,
    "head": "aspp",
    "num_cascaded_blocks": 0,
    "upsample_logits": True,
    "batch_norm_momentum": 0.9,
    "freeze_batch_norm": False,
    "weight_decay": 1e-4,
    "aspp_filters": 16,
    # Glorot logits, not the authors' 0.01 default: a 0.01 start predicts near-uniform classes,
    # so every pixel's first loss is ~ln(3) and the mining and 20-step tests below would measure
    # the initialization rather than the loss (measured: -22% instead of -25% in 20 steps).
    "logits_init_stddev": 0.0,
}
TINY_FLAGS = [
    "--backbone=resnet14_tiny",
    "--atrous_rates=1,2,3",
    "--aspp_filters=16",
    "--batch_norm_momentum=0.9",
    "--crop_size=33",
    "--batch_size=4",
    "--image_summary_steps=0",
    "--min_scale_factor=1",
    "--max_scale_factor=1",
    "--logits_init_stddev=0",  # as TINY_MODEL: Glorot logits
]


def _config(data_dir, logdir, **overrides):
    model = dict(TINY_MODEL, **overrides.pop("model", {}))
    values = dict(
        dataset_dir=data_dir,
        logdir=str(logdir),
        model=model,
        crop_size=(33, 33),
        batch_size=4,
        training_steps=20,
        base_learning_rate=0.01,
        min_scale_factor=1.0,
        max_scale_factor=1.0,
        shuffle_buffer=16,
        save_checkpoint_steps=10,
        log_steps=5,
        image_summary_steps=10,
        summary_images=2,
        seed=0,
    )
    values.update(overrides)
    return ExperimentConfig.create(**values)


@pytest.fixture(scope="module")
def short_run(data_dir, tmp_path_factory):
    """20 steps with summaries and evaluation: shared by the loss, schedule and summary tests."""
    logdir = tmp_path_factory.mktemp("short_run")
    result = train_lib.train(_config(data_dir, logdir, eval_after_training=True))
    return logdir, result


@pytest.mark.slow
def test_loss_falls_over_20_steps(short_run):
    _, result = short_run
    losses = [result.history[s]["cross_entropy"] for s in range(1, 21)]
    assert all(math.isfinite(v) for v in losses)
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.75 * first, (first, last)
    # ln(3) = 1.10 is chance for 3 classes; the start is near it.
    assert 0.6 < losses[0] < 2.5


@pytest.mark.slow
def test_poly_learning_rate_per_step(short_run):
    """Sec. 4.1: lr = base * (1 - iter / max_iter) ** 0.9, iter counted from 0 at the first step."""
    _, result = short_run
    for step in (1, 2, 10, 20):
        expected = 0.01 * (1 - (step - 1) / 20) ** 0.9
        assert result.history[step]["learning_rate"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_run_info_checkpoints_and_regularization(short_run):
    logdir, result = short_run
    assert result.checkpoint == os.path.join(str(logdir), "ckpt-20")
    assert sorted(f for f in os.listdir(logdir) if f.endswith(".index")) == [
        "ckpt-10.index",
        "ckpt-20.index",
    ]
    info = checkpoints.read_run_info(str(logdir))
    assert info["step"] == 20 and info["model_config"]["aspp_filters"] == 16
    assert info["dataset_info"]["class_names"] == ["background", "shape_1", "shape_2"]
    # weight decay 1e-4 * sum(w^2) / 2 over the conv kernels, as in the model's losses
    reg = result.history[20]["regularization"]
    assert 0 < reg < 1.0
    total = result.history[20]
    assert total["loss"] == pytest.approx(total["cross_entropy"] + total["regularization"])


@pytest.mark.slow
def test_tensorboard_tags_are_written_with_finite_values(short_run):
    logdir, result = short_run
    scalars = summaries.read_scalars(os.path.join(logdir, bookkeeping.TRAIN_SUMMARY_DIR))
    for tag in (
        "loss/total",
        "loss/cross_entropy",
        "loss/regularization",
        "learning_rate",
        "train/pixel_accuracy",
        "perf/images_per_second",
    ):
        assert [s for s, _ in scalars[tag]] == [5, 10, 15, 20], tag
        assert all(math.isfinite(v) for _, v in scalars[tag]), tag
    assert scalars["loss/total"][-1][1] == pytest.approx(result.history[20]["loss"], rel=1e-5)
    tags = event_tags.read_tags(os.path.join(logdir, bookkeeping.TRAIN_SUMMARY_DIR))
    # One picture per image (summary_images=2): image | ground truth | prediction side by side.
    assert {t for t in tags if t.startswith("images/")} == {"images/val_0", "images/val_1"}
    assert tags["images/val_0"] == "images"
    width, height = _image_summary_size(os.path.join(logdir, bookkeeping.TRAIN_SUMMARY_DIR))
    assert (width, height) == (3 * 40 + 2 * 4, 40)  # three 40x40 panels, 4 px apart
    evals = summaries.read_scalars(os.path.join(logdir, continuous.EVAL_SUMMARY_DIR))
    assert evals["eval/miou"] == [(20, pytest.approx(result.eval["miou"], rel=1e-6))]
    assert 0.0 <= result.eval["miou"] <= 1.0 and result.eval["num_images"] == 4
    per_class = [t for t in evals if t.startswith("eval/iou/")]
    assert per_class and all(math.isfinite(evals[t][0][1]) for t in per_class)


@pytest.mark.slow
def test_the_run_records_its_whole_recipe(short_run, data_dir):
    """config.json holds every section of the ExperimentConfig and the model's Keras config;
    TensorBoard gets it as text and as HParams; read_experiment reads the config back equal."""
    from deeplab.config import experiment  # pylint: disable=import-outside-toplevel
    from deeplab.logdir import run_record  # pylint: disable=import-outside-toplevel

    logdir, _ = short_run
    record = run_record.read_config(str(logdir))
    for section, cls in experiment.SECTIONS.items():
        assert set(record[section]) == {f.name for f in dataclasses.fields(cls)}, section
    assert record["data"]["crop_size"] == [33, 33] and record["train"]["training_steps"] == 20
    assert record["model_config"]["backbone"] == "resnet14_tiny" and record["num_classes"] == 3
    expected = _config(data_dir, logdir, eval_after_training=True).to_dict()
    assert run_record.read_experiment(str(logdir)).to_dict() == json.loads(
        json.dumps(expected, default=str),
        object_hook=lambda d: {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()},
    )
    tags = event_tags.read_tags(os.path.join(logdir, bookkeeping.TRAIN_SUMMARY_DIR))
    assert tags["config"] == "text"
    # One HParams session per run, in the logdir itself; each setting once.
    session = event_tags.read_tags(str(logdir))
    assert session and set(session.values()) == {"hparams"}
    flat = run_record.hparams(record)
    assert flat["train/base_learning_rate"] == record["train"]["base_learning_rate"]
    assert flat["data/crop_size"] == "33,33"
    assert flat["data/num_classes"] == 3 and "num_classes" not in flat
    assert not any(key.startswith("model_config/") for key in flat)
    assert "model/num_classes" not in flat
    experiment_info, session_info = _hparams_session(str(logdir))
    metrics = {m.name.tag for m in experiment_info.metric_infos}
    assert {"eval/miou", "eval/pixel_accuracy"} <= metrics
    assert {f"eval/iou/{name}" for name in ("background", "shape_1", "shape_2")} <= metrics
    assert all(m.name.group == "eval" for m in experiment_info.metric_infos)
    assert session_info.group_name == os.path.basename(str(logdir))  # named after the run
    assert set(session_info.hparams) == set(flat)


def _image_summary_size(folder, tag="images/val_0"):
    """(width, height) of the first picture written under ``tag``."""
    import glob  # pylint: disable=import-outside-toplevel  (this helper only)

    import tensorflow as tf  # pylint: disable=import-outside-toplevel  (event files)

    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            for value in tf.compat.v1.Event.FromString(record.numpy()).summary.value:
                if value.tag == tag:
                    width, height = value.tensor.string_val[:2]
                    return int(width), int(height)
    raise AssertionError(f"no {tag} in {folder}")


def _hparams_session(folder):
    """(experiment info, session start info) of the HParams summaries in ``folder``."""
    import glob  # pylint: disable=import-outside-toplevel  (this helper only)

    import tensorflow as tf  # pylint: disable=import-outside-toplevel  (event files)
    from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=import-outside-toplevel

    experiment_info = session_info = None
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            for value in tf.compat.v1.Event.FromString(record.numpy()).summary.value:
                data = plugin_data_pb2.HParamsPluginData.FromString(
                    value.metadata.plugin_data.content
                )
                if data.HasField("experiment"):
                    experiment_info = data.experiment
                if data.HasField("session_start_info"):
                    session_info = data.session_start_info
    return experiment_info, session_info


@pytest.mark.slow
def test_tiny_model_overfits_four_images(tmp_path):
    """Four 32x32 images, no augmentation, 80 steps: mIOU on those same images above 0.9.

    Output stride 4 (8x8 features) so the logits can draw the small shapes; at 8 the 4x4
    features cap this at ~0.91."""
    data = str(tmp_path / "four")
    synthetic.build_synthetic_dataset(
        data, num_train=4, num_val=1, image_size=(32, 32), num_classes=3, seed=3
    )
    config = _config(
        data,
        tmp_path / "run",
        model={"output_stride": 4, "aspp_filters": 32, "weight_decay": 0.0},
        crop_size=(32, 32),
        batch_size=4,
        training_steps=80,
        base_learning_rate=0.05,
        random_flip=False,
        save_checkpoint_steps=1000,
        log_steps=20,
        image_summary_steps=0,
        eval_after_training=True,
        eval_split="train",
    )
    result = train_lib.train(config)
    assert result.eval["num_images"] == 4
    assert result.eval["miou"] > 0.9, result.eval["per_class_iou"]


@pytest.mark.slow
def test_init_checkpoint_with_other_num_classes(data_dir, tmp_path, library_log):
    """COCO -> VOC style: a 3-class run initializes a 4-class run; only the logits are skipped."""
    source = train_lib.train(
        _config(data_dir, tmp_path / "source", training_steps=2, image_summary_steps=0)
    )
    four = str(tmp_path / "four_classes")
    synthetic.build_synthetic_dataset(
        four, num_train=4, num_val=1, image_size=(40, 40), num_classes=4, seed=2
    )
    # A learning rate of ~0 leaves the restored weights as they were after one step.
    target = train_lib.train(
        _config(
            four,
            tmp_path / "target",
            training_steps=1,
            base_learning_rate=1e-12,
            image_summary_steps=0,
            init_checkpoint=str(tmp_path / "source"),
        )
    )
    assert "skipped: logits/bias, logits/kernel" in library_log.text()
    before = tf.train.load_checkpoint(source.checkpoint)
    after = tf.train.load_checkpoint(target.checkpoint)
    values_before = checkpoints._checkpoint_values(source.checkpoint)  # pylint: disable=protected-access
    values_after = checkpoints._checkpoint_values(target.checkpoint)  # pylint: disable=protected-access
    kernel = "conv1_conv/kernel"
    np.testing.assert_allclose(
        after.get_tensor(values_after.weights[kernel]),
        before.get_tensor(values_before.weights[kernel]),
        atol=1e-8,
    )
    assert values_after.shape("logits/kernel") == (1, 1, 16, 4)
    assert values_before.shape("logits/kernel") == (1, 1, 16, 3)
    assert checkpoints.read_run_info(target.checkpoint)["model_config"]["num_classes"] == 4


@pytest.mark.slow
def test_nan_stops_the_run_and_keeps_the_last_checkpoint(data_dir, tmp_path):
    logdir = tmp_path / "run"
    train_lib.train(
        _config(data_dir, logdir, training_steps=3, save_checkpoint_steps=3, image_summary_steps=0)
    )
    prefix = checkpoints.resolve_checkpoint(str(logdir))
    reader = tf.train.load_checkpoint(prefix)
    saved = {
        n: reader.get_tensor(n) for n, _ in tf.train.list_variables(prefix) if not n.startswith("_")
    }
    # Resume the same run with an absurd learning rate: it diverges within a few steps.
    config = _config(
        data_dir,
        logdir,
        training_steps=40,
        base_learning_rate=1e12,
        save_checkpoint_steps=1000,
        image_summary_steps=0,
    )
    with pytest.raises(
        bookkeeping.NonFiniteLossError,
        match=r"non-finite loss or gradients at step "
        r"\d+.*the last good checkpoint is .*ckpt-3",
    ):
        train_lib.train(config)
    assert checkpoints.resolve_checkpoint(str(logdir)) == prefix
    reader = tf.train.load_checkpoint(prefix)
    for key, value in saved.items():
        np.testing.assert_array_equal(reader.get_tensor(key), value)


def test_num_classes_disagreeing_with_dataset_is_a_config_error(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="num_classes=5 disagrees with .*num_classes=3"):
        train_lib.train(_config(data_dir, tmp_path, num_classes=5))


def _train(data_dir, logdir, *extra):
    """``deeplab.train`` on the tiny model: the arguments of ``harness.run`` / ``start``."""
    return ["deeplab.train", f"--dataset_dir={data_dir}", f"--logdir={logdir}", *TINY_FLAGS, *extra]


@pytest.mark.slow
def test_command_line_errors_are_one_clear_line(data_dir, tmp_path):
    proc = harness.run(*_train(data_dir, "", "--training_steps=1"), timeout=120)
    assert proc.returncode == 2  # a usage error (deeplab._console.run)
    assert "deeplab.train: error: --logdir is required" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_resume_after_kill_9(data_dir, tmp_path):
    """SIGKILL a run right after its first checkpoint, start the same command again: it resumes
    from that checkpoint's step, optimizer state and schedule, and finishes."""
    logdir = tmp_path / "run"
    total = 60
    command = _train(
        data_dir,
        logdir,
        f"--training_steps={total}",
        "--save_checkpoint_steps=5",
        "--log_steps=1",
        "--base_learning_rate=0.01",
    )
    first = harness.start(*command)
    deadline = time.time() + 120
    while not os.path.exists(logdir / "checkpoint"):
        assert first.poll() is None, first.stdout.read()
        assert time.time() < deadline, "no checkpoint within 120 s"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    killed_at = checkpoints.read_run_info(str(logdir))["step"]
    assert killed_at < total, "the run finished before it could be killed"
    iterations_key = "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"
    assert (
        tf.train.load_checkpoint(str(logdir / f"ckpt-{killed_at}")).get_tensor(iterations_key)
        == killed_at
    )

    second = harness.run(*command)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"Resuming from {logdir}/ckpt-{killed_at} at step {killed_at}" in second.stdout
    steps = [int(m) for m in re.findall(r"^step\s+(\d+)/", second.stdout, re.M)]
    assert steps == list(range(killed_at + 1, total + 1))
    # The learning rate continues the poly schedule where it stopped (not from the base rate).
    lr = float(
        re.search(rf"^step\s+{killed_at + 1}/{total}.*lr (\S+)", second.stdout, re.M).group(1)
    )
    assert lr == pytest.approx(0.01 * (1 - killed_at / total) ** 0.9, rel=1e-3)
    final = tf.train.load_checkpoint(str(logdir / f"ckpt-{total}"))
    assert final.get_tensor(iterations_key) == total
    assert checkpoints.read_run_info(str(logdir))["step"] == total
    # The console of both invocations is in the run's log, one header line each.
    log = (logdir / "train.log").read_text(encoding="utf-8")
    assert log.count("==== ") == 2
    assert f"Resuming from {logdir}/ckpt-{killed_at} at step {killed_at}" in log
    assert f"step {total:>6d}/{total}" in log


@pytest.mark.slow
def test_stop_at_step_keeps_the_schedule_and_resumes(data_dir, tmp_path, library_log):
    """--stop_at_step=3 of an 8-step schedule: the process stops after step 3 with a checkpoint
    of step 3 (though 3 is no --save_checkpoint_steps multiple) and the learning rate of the
    8-step schedule; the same config without it resumes at step 4 and finishes at 8."""
    config = _config(
        data_dir,
        tmp_path,
        training_steps=8,
        stop_at_step=3,
        save_checkpoint_steps=5,
        log_steps=1,
        image_summary_steps=0,
    )
    first = train_lib.train(config)
    assert first.step == 3 and sorted(first.history) == [1, 2, 3]
    # The progress line's ETA counts to the stop, not to the schedule's end.
    printed = library_log.text()
    assert re.search(r"^step\s+3/8 .*ETA 0s$", printed, re.M), printed
    assert first.checkpoint.endswith("ckpt-3")
    assert checkpoints.read_run_info(str(tmp_path))["step"] == 3
    assert first.history[3]["learning_rate"] == pytest.approx(0.01 * (1 - 2 / 8) ** 0.9, rel=1e-5)
    second = train_lib.train(
        _config(
            data_dir,
            tmp_path,
            training_steps=8,
            save_checkpoint_steps=5,
            log_steps=1,
            image_summary_steps=0,
        )
    )
    assert second.resumed_from == 3 and second.step == 8
    assert sorted(second.history) == [4, 5, 6, 7, 8]
    assert second.history[4]["learning_rate"] == pytest.approx(0.01 * (1 - 3 / 8) ** 0.9, rel=1e-5)
    with pytest.raises(ConfigError, match="--stop_at_step"):
        train_lib.train(_config(data_dir, tmp_path / "bad", stop_at_step=-1))


@pytest.mark.slow
def test_recompute_through_block2_follows_the_plain_run(data_dir, tmp_path):
    """--recompute_through=block2 (deeplab.training.recompute) trains the same model: the same
    losses step by step (identical on this machine), and the same BN statistics in the
    checkpoint."""
    runs = {}
    for through in ("none", "block2"):
        runs[through] = train_lib.train(
            _config(
                data_dir,
                tmp_path / through,
                training_steps=4,
                recompute_through=through,
                deterministic=True,
                log_steps=1,
                image_summary_steps=0,
            )
        )
    for step in range(1, 5):
        assert runs["block2"].history[step]["cross_entropy"] == pytest.approx(
            runs["none"].history[step]["cross_entropy"], rel=1e-5
        ), step
    assert runs["block2"].history[4]["cross_entropy"] != runs["block2"].history[1]["cross_entropy"]
    plain, recomputed = (checkpoints.load_model(runs[k].checkpoint) for k in ("none", "block2"))
    a, b = (m.backbone_model.get_layer("conv1_bn").moving_mean.numpy() for m in (plain, recomputed))
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
    with pytest.raises(ConfigError, match="--recompute_through"):
        train_lib.train(_config(data_dir, tmp_path / "bad", recompute_through="block4"))


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
@pytest.mark.slow
def test_mixed_precision_trains_with_float32_loss(data_dir, tmp_path, precision):
    import keras  # pylint: disable=import-outside-toplevel

    result = train_lib.train(
        _config(
            data_dir,
            tmp_path,
            training_steps=6,
            mixed_precision=precision,
            image_summary_steps=0,
            log_steps=3,
        )
    )
    losses = [result.history[s]["cross_entropy"] for s in range(1, 7)]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run
    model = checkpoints.load_model(result.checkpoint)
    assert model.get_layer("logits").kernel.dtype == "float32"


@pytest.mark.slow
def test_table8_ablation_downsamples_labels_to_the_logits(data_dir, tmp_path, short_run):
    """--noupsample_logits: the loss is taken at feature resolution (33 px crop, output stride 16:
    3x3 logits), on labels picked by nearest neighbour, not on 33x33 upsampled logits."""
    down = train_lib.train(
        _config(
            data_dir,
            tmp_path / "down",
            training_steps=2,
            model={"upsample_logits": False},
            image_summary_steps=0,
        )
    )
    _, up = short_run  # the same data and crops with upsampled logits
    assert 0 < down.history[1]["valid_pixels"] <= 4 * 3 * 3
    assert 4 * 33 * 33 * 0.8 < up.history[1]["valid_pixels"] <= 4 * 33 * 33
    assert math.isfinite(down.history[2]["loss"])


@pytest.mark.slow
def test_class_weights_scale_the_cross_entropy(data_dir, tmp_path, short_run):
    """Same seed, data and first step as short_run: weights (2, 2, 2) double the first loss
    term (the weighted loss is averaged over the valid pixels, not over the weights)."""
    weighted = train_lib.train(
        _config(
            data_dir,
            tmp_path / "weighted",
            training_steps=1,
            class_weights=(2.0, 2.0, 2.0),
            image_summary_steps=0,
        )
    )
    _, plain = short_run
    assert weighted.history[1]["cross_entropy"] == pytest.approx(
        2.0 * plain.history[1]["cross_entropy"], rel=1e-4
    )
    with pytest.raises(ConfigError, match="--class_weights has 2 values"):
        train_lib.train(
            _config(data_dir, tmp_path / "bad", training_steps=1, class_weights=(1.0, 2.0))
        )


@pytest.mark.slow
def test_imagenet_weight_file_initializes_the_backbone(data_dir, tmp_path):
    """--imagenet_weights: a keras.applications ResNet-50 weight file seeds the backbone (a
    random stand-in for the ImageNet file; the learning rate is ~0 so one step keeps it)."""
    import keras  # pylint: disable=import-outside-toplevel

    reference = keras.applications.ResNet50(
        weights=None, include_top=False, input_shape=(None, None, 3)
    )
    rng = np.random.RandomState(3)
    conv1 = reference.get_layer("conv1_conv")
    conv1.set_weights([rng.normal(0, 0.05, w.shape).astype("float32") for w in conv1.get_weights()])
    path = str(tmp_path / "resnet50_notop.weights.h5")
    reference.save_weights(path)
    result = train_lib.train(
        _config(
            data_dir,
            tmp_path / "run",
            training_steps=1,
            base_learning_rate=1e-12,
            image_summary_steps=0,
            imagenet_weights=path,
            model={"backbone": "resnet50", "aspp_filters": 8},
        )
    )
    model = checkpoints.load_model(result.checkpoint)
    loaded = model.backbone_model.get_layer("conv1_conv").get_weights()
    for got, want in zip(loaded, conv1.get_weights()):
        np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.slow
def test_focal_loss_and_hard_pixel_mining_train(data_dir, tmp_path, short_run):
    """Same seed, data and first step as short_run: the focal loss is below the cross-entropy
    (every factor (1 - p) ** 2 < 1); hard-pixel mining keeps the hardest quarter of the pixels
    (their mean loss is above the mean of all); both keep training finite."""
    _, plain = short_run
    focal = train_lib.train(
        _config(
            data_dir, tmp_path / "focal", training_steps=2, focal_gamma=2.0, image_summary_steps=0
        )
    )
    assert 0 < focal.history[1]["cross_entropy"] < 0.7 * plain.history[1]["cross_entropy"]
    mined = train_lib.train(
        _config(
            data_dir,
            tmp_path / "mined",
            training_steps=2,
            top_k_percent_pixels=0.25,
            image_summary_steps=0,
        )
    )
    assert mined.history[1]["cross_entropy"] > 1.05 * plain.history[1]["cross_entropy"]
    assert all(math.isfinite(r["loss"]) for r in (*focal.history.values(), *mined.history.values()))
