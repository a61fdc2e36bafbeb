"""The README's install gives what the README promises (TensorBoard included)."""

import os
import shutil
import sys

import pytest

import harness

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_setup_extras_install_tensorboard():
    lines = open(os.path.join(REPO, "setup.py"), encoding="utf-8").read().splitlines()
    for extra in ('"cpu": [', '"gpu": ['):
        line = next(l for l in lines if l.strip().startswith(extra))
        assert "tensorboard" in line, line


@pytest.mark.slow
def test_the_tensorboard_command_works():
    """`pip install -e ".[cpu]"` (the README's set-up, which CI runs) put a working
    `tensorboard` command next to this Python."""
    command = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    command = command if os.path.exists(command) else shutil.which("tensorboard")
    assert command, "no tensorboard command: is the cpu extra installed?"
    out = harness.run([command], "--version_tb", timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().split(".")[0] == "2"
