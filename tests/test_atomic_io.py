"""deeplab.common.atomic_io: whole-or-nothing writes whose files get the umask's ordinary mode."""

import contextlib
import json
import os
import stat

import numpy as np
import pytest

from deeplab.common import atomic_io
from deeplab.evaluation import visualization

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


@contextlib.contextmanager
def umask(mask):
    """Runs the block under ``mask``, then restores the process's umask."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


WRITERS = {
    "bytes": lambda path: atomic_io.write_bytes(path, b"\x00\x01"),
    "text": lambda path: atomic_io.write_text(path, "text\n"),
    "json": lambda path: atomic_io.write_json(path, {"miou": 0.5}),
    "rgb_png": lambda path: visualization.save_rgb_png(path, np.zeros((4, 5, 3), np.uint8)),
    "index_png": lambda path: visualization.save_index_png(path, np.ones((4, 5), np.uint8)),
}


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_new_files_get_the_mode_open_would_give(tmp_path, writer, mask, expected):
    path = str(tmp_path / "out" / "file")
    with umask(mask):
        WRITERS[writer](path)
        with open(str(tmp_path / "plain"), "w", encoding="utf-8"):
            pass
    assert mode(path) == expected
    assert mode(path) == mode(str(tmp_path / "plain"))  # what a plain open() gives
    assert os.listdir(tmp_path / "out") == ["file"]  # no temporary left behind


def test_overwriting_takes_the_current_umask_and_restores_it(tmp_path):
    path = str(tmp_path / "results.json")
    with umask(0o077):
        atomic_io.write_json(path, {"step": 1})
    assert mode(path) == 0o600
    with umask(0o022):
        atomic_io.write_json(path, {"step": 2})
        assert os.umask(0o022) == 0o022  # reading the umask left it as it was
    assert mode(path) == 0o644
    with open(path, encoding="utf-8") as f:
        assert json.load(f) == {"step": 2}


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = str(tmp_path / "results.json")
    atomic_io.write_json(path, {"step": 1})
    with pytest.raises(TypeError):
        atomic_io.write_bytes(path, "not bytes")
    with open(path, encoding="utf-8") as f:
        assert json.load(f) == {"step": 1}
    assert os.listdir(tmp_path) == ["results.json"]
