"""Quiet binaries: only the tools' own lines by default, TensorFlow's logs with --verbosity."""

import pytest

import harness
from deeplab import _console

DESCRIBE = ["deeplab.describe", "--backbone=resnet14_tiny", "--crop_size=33"]
TF_LOG_MARKERS = ("I0000", "W0000", "All log messages before absl::InitializeLog")


def _run(*extra):
    # TF_CPP_MIN_LOG_LEVEL unset: the binary's own default is what is tested.
    out = harness.run(*DESCRIBE, *extra, env={"TF_CPP_MIN_LOG_LEVEL": None}, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


@pytest.mark.slow
def test_binaries_print_their_own_lines_only_by_default():
    out = _run()
    assert out.stdout.startswith("DeepLabv3: resnet14_tiny")
    noise = [
        line
        for line in (out.stdout + out.stderr).splitlines()
        if any(marker in line for marker in TF_LOG_MARKERS)
    ]
    assert noise == []


@pytest.mark.slow
def test_verbosity_brings_tensorflow_logs_back():
    quiet, verbose = _run(), _run("--verbosity=0")
    assert verbose.stdout == quiet.stdout
    assert len(verbose.stderr.splitlines()) > len(quiet.stderr.splitlines())


def test_verbosity_detection():
    assert _console._verbosity_requested(["prog", "--verbosity=1"])
    assert _console._verbosity_requested(["prog", "-v", "1"])
    assert not _console._verbosity_requested(["prog", "--crop_size=3"])


# ---- the one runner (deeplab._console.run): the error line, exit codes, the recorded config


def _binary(name, *args):
    return harness.run(f"deeplab.{name}", *args, timeout=180)


def _error_lines(result, name):
    return [line for line in result.stderr.splitlines() if line.startswith(f"deeplab.{name}: ")]


def test_a_usage_error_is_one_line_and_exit_2(tmp_path):
    """A bad value, an unknown flag, an unexpected argument, a missing required flag: one line
    ``deeplab.<binary>: error: ...`` naming the flag, exit 2, before anything runs."""
    cases = [
        ("train", ["--aspp_dropout=1.5"], "--aspp_dropout must be in [0, 1), got 1.5"),
        (
            "train",
            ["--min_scale_factor=inf", "--max_scale_factor=inf"],  # two refused: the first
            "--min_scale_factor must be positive and at most 16 (finite), got inf",
        ),
        ("evaluate", ["--crop_size=0"], "--crop_size takes S or H,W with positive sizes, got 0"),
        ("predict", ["--nosuch_flag=1"], "Unknown command line flag 'nosuch_flag'"),
        ("visualize", ["stray"], "unexpected arguments ['stray'] (flags need --name=value)"),
        ("export_saved_model", ["--checkpoint=x"], "--export_dir is required"),
        ("figures", ["--figure=3"], "--figure=3: only Figure 4 can be reproduced"),
    ]
    for name, args, message in cases:
        result = _binary(name, *args)
        lines = _error_lines(result, name)
        assert result.returncode == 2, (name, result.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith(f"deeplab.{name}: error: {message}"), lines
        assert "Traceback" not in result.stderr


def test_a_failure_is_one_line_and_exit_1(tmp_path):
    """A missing file is a failure, not a usage error: exit 1, the same one-line form."""
    result = _binary("figures", "--figure=4", f"--output={tmp_path / 'no' / 'such' / 'f.png'}")
    lines = _error_lines(result, "figures")
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("deeplab.figures: error: --output=")


def test_the_config_starts_from_a_run_recorded_config_with_the_flags_on_top(tmp_path, capsys):
    """evaluate, visualize, export_saved_model and predict: given a run's --logdir (or its
    folder as --checkpoint), the run's config.json is the base, the flags given win."""
    import json  # pylint: disable=import-outside-toplevel

    from absl import flags  # pylint: disable=import-outside-toplevel
    from absl.testing import flagsaver  # pylint: disable=import-outside-toplevel

    from deeplab.config import experiment  # pylint: disable=import-outside-toplevel
    from deeplab.config import flags as experiment_flags  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import

    recorded = experiment.ExperimentConfig.create(
        dataset_dir="data/x", eval_scales=(0.5, 1.0), eval_split="test", crop_size=(33, 41)
    )
    (tmp_path / "config.json").write_text(json.dumps(recorded.to_dict()))
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["prog", f"--checkpoint={tmp_path}", "--eval_split=val", "--eval_flip"])
        config = _console._config(("eval",), (), True)  # pylint: disable=protected-access
        alone = _console._config(("eval",), (), False)  # pylint: disable=protected-access
    assert config.data.dataset_dir == "data/x" and config.data.crop_size == (33, 41)
    assert config.eval.eval_scales == (0.5, 1.0)
    assert config.eval.eval_split == "val" and config.eval.eval_flip is True
    assert alone.data.dataset_dir is None and alone.eval.eval_scales == (1.0,)
    assert capsys.readouterr().out.startswith(f"Settings of {tmp_path / 'config.json'}")


def test_help_lists_the_sections_a_binary_reads():
    """predict reads the eval section (and --logdir): its --help lists no training flag;
    --helpfull still lists every flag."""
    from deeplab.config import experiment  # pylint: disable=import-outside-toplevel

    text = _binary("predict", "--help").stdout
    listed = {line.split(":")[0].strip() for line in text.splitlines() if line.startswith("  --")}
    assert {f"--{name}" for name in experiment.setting_names("eval")} <= listed
    assert not {"--base_learning_rate", "--crop_size", "--backbone", "--batch_size"} & listed
    assert len(listed) < 25, len(listed)
    full = _binary("predict", "--helpfull").stdout
    assert "--base_learning_rate" in full and "--verbosity" in full
