"""Test-wide settings: quiet TensorFlow logs and make the repository importable."""

import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """8 train / 4 val synthetic images of 40x40 pixels, 3 classes (read-only; shared by the
    training and parameter-server tests)."""
    from deeplab.data import synthetic  # pylint: disable=import-outside-toplevel

    path = str(tmp_path_factory.mktemp("data") / "synthetic3")
    synthetic.build_synthetic_dataset(
        path, num_train=8, num_val=4, image_size=(40, 40), num_classes=3, seed=1
    )
    return path


@pytest.fixture
def library_log(caplog):
    """What the library logged during the test (deeplab.common.log): ``library_log()`` is the
    list of messages of the ``deeplab`` logger's records at INFO and above (``level=``
    another), in order; ``library_log.text()`` the same joined by newlines."""
    caplog.set_level(logging.INFO, logger="deeplab")

    class Messages:
        def __call__(self, level=logging.INFO):
            return [
                record.getMessage()
                for record in caplog.records
                if record.name.split(".")[0] == "deeplab" and record.levelno >= level
            ]

        def text(self, level=logging.INFO):
            return "\n".join(self(level))

    return Messages()
