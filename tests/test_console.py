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
