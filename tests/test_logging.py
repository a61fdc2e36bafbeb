"""The library's one logger (deeplab.common.log, CONVENTIONS.md "Output"): a binary prints its
records (INFO on standard output as the message, other levels as ``LEVEL: message`` on standard
error), and a library user gets standard logging: silent INFO, warnings through Python's
last-resort handler, silenced or redirected with ``logging.getLogger("deeplab")``.

The rule that library modules never print and never use absl's log is checked on the source by
tests/test_layout.py."""

import json
import logging
import socket
import sys
import types

import pytest

import harness
from deeplab import _console
from deeplab.common import log
from deeplab.data import synthetic
from deeplab.logdir import lock


def _dead_pid():
    gone = harness.start("-c", "pass")
    gone.communicate()
    return gone.pid


def _stale_lock(folder, pid):
    """A lock file left by a process of this host that no longer runs (taking it over is an
    INFO record of deeplab.logdir.lock)."""
    holder = {"host": socket.gethostname(), "pid": pid, "started": 0}
    (folder / lock.LOCK_FILE).write_text(json.dumps(holder))
    return f"Took over the lock of {folder} left by a training run that is no longer running "


def _other_dataset(folder):
    """A dataset.json that differs from the synthetic settings given (a WARNING record of
    deeplab.data.synthetic)."""
    folder.mkdir()
    (folder / "dataset.json").write_text(json.dumps({"num_classes": 9, "splits": {"train": 1}}))
    return types.SimpleNamespace(
        dataset_dir=str(folder),
        synthetic_image_size=(8, 8),
        synthetic_num_classes=3,
        synthetic_num_train=2,
        synthetic_num_val=1,
    )


def test_console_output_prints_info_plainly_and_other_levels_tagged_on_stderr(capsys):
    logger = logging.getLogger("deeplab.some.module")
    with log.console_output():
        logger.debug("hidden without --verbosity")
        logger.info("a line\nof two")
        logger.warning("careful %s", "here")
        logger.error("broken")
    assert capsys.readouterr() == ("a line\nof two\n", "WARNING: careful here\nERROR: broken\n")
    with log.console_output(verbose=True):
        logger.debug("shown with --verbosity")
    assert capsys.readouterr() == ("", "DEBUG: shown with --verbosity\n")


def test_console_output_restores_the_logger_and_prints_once_when_nested(capsys):
    root = logging.getLogger(log.LOGGER)
    before = root.level, root.propagate, list(root.handlers)
    with log.console_output():
        with log.console_output(verbose=True):  # the outer block's setting holds
            logging.getLogger("deeplab.x").debug("not shown")
            logging.getLogger("deeplab.x").info("once")
        assert not root.propagate  # absl's root handler would print it a second time
    assert capsys.readouterr().out == "once\n"
    assert (root.level, root.propagate, list(root.handlers)) == before


def test_console_output_writes_to_the_streams_of_the_moment(capsys):
    """A record goes to sys.stdout as it is when logged: the train.log tee of run_record and
    the console streams of _console.library_output_to_log receive what the prints did."""
    copy = []

    class Tee:
        def write(self, text):
            copy.append(text)

        def flush(self):
            pass

    logger = logging.getLogger("deeplab.y")
    with log.console_output():
        saved, sys.stdout = sys.stdout, Tee()
        try:
            logger.info("into the tee")
        finally:
            sys.stdout = saved
        logger.info("back on the console")
    assert "".join(copy) == "into the tee\n"
    assert capsys.readouterr().out == "back on the console\n"


def test_a_binary_prints_the_library_records(tmp_path, capsys):
    """_console.run_main (every binary's runner): the library's INFO record is a plain line on
    standard output, its WARNING a tagged line on standard error, as the binary's own print."""
    (tmp_path / "run").mkdir()
    took_over = _stale_lock(tmp_path / "run", _dead_pid())
    data = _other_dataset(tmp_path / "data")

    def main(args):
        del args
        print("the binary's own line")
        with lock.training_lock(tmp_path / "run"):
            pass
        synthetic.build_if_missing(data)

    assert _console.run_main(main, ["prog"], tensorflow=False) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "the binary's own line" and lines[1].startswith(took_over), out
    assert len(lines) == 2
    assert err.startswith(f"WARNING: {data.dataset_dir} already holds a dataset ") and (
        err.count("\n") == 1
    ), err
    assert not logging.getLogger(log.LOGGER).handlers  # removed when the binary's main returned


LIBRARY_USER = """
import json, logging, os, socket, sys, types
import deeplab
from deeplab.data import synthetic
from deeplab.logdir import lock

folder, pid = sys.argv[1], int(sys.argv[2])
data = types.SimpleNamespace(dataset_dir=os.path.join(folder, "data"), synthetic_image_size=(8, 8),
                             synthetic_num_classes=3, synthetic_num_train=2, synthetic_num_val=1)
os.makedirs(data.dataset_dir)
with open(os.path.join(data.dataset_dir, "dataset.json"), "w") as f:
    json.dump({"num_classes": 9, "splits": {"train": 1}}, f)

def both(phase):
    with open(os.path.join(folder, lock.LOCK_FILE), "w") as f:
        json.dump({"host": socket.gethostname(), "pid": pid, "started": 0}, f)
    with lock.training_lock(folder):
        pass
    synthetic.build_if_missing(data)
    for stream in (sys.stdout, sys.stderr):
        print(f"-- {phase}", file=stream, flush=True)

both("not configured")
logging.getLogger("deeplab").setLevel(logging.ERROR)
both("silenced")
logging.getLogger("deeplab").setLevel(logging.NOTSET)
logging.basicConfig(
    level=logging.INFO, stream=sys.stdout, format="%(name)s %(levelname)s: %(message)s"
)
both("configured")
"""


def test_a_library_user_gets_standard_logging(tmp_path):
    """Nothing is installed by ``import deeplab``: INFO is silent and a WARNING reaches standard
    error through Python's last-resort handler (the message alone); ``logging`` silences the
    ``deeplab`` logger or sends its records where the user configures them."""
    result = harness.run("-c", LIBRARY_USER, tmp_path, _dead_pid(), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout.split("-- ")
    err = result.stderr.split("-- ")
    warning = f"{tmp_path / 'data'} already holds a dataset "
    # Not configured: the INFO record silent, the WARNING on standard error.
    assert out[0] == "" and err[0].startswith(warning) and err[0].count("\n") == 1, err[0]
    # Silenced: nothing at all.
    assert out[1] == "not configured\n" and err[1] == "not configured\n"
    # Configured: both records where basicConfig sends them, with the module loggers' names.
    assert out[2].startswith("silenced\ndeeplab.logdir.lock INFO: Took over the lock of ")
    assert f"\ndeeplab.data.synthetic WARNING: {warning}" in out[2]
    assert err[2] == "silenced\n" and out[3] == err[3] == "configured\n"


@pytest.mark.slow
def test_a_binary_shows_library_records_byte_for_byte(tmp_path):
    """deeplab.reproduce --dry_run: the commands are the library's INFO records
    (deeplab.orchestration.reproduction), printed as the plain lines they always were."""
    result = harness.run("deeplab.reproduce", "--table=6", "--dry_run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "# Table 6: 3 training run(s), earlier stages first"
    assert lines[1].startswith("python -m deeplab.train --flagfile=")
    assert lines[4] == "# 5 evaluation(s)" and len(lines) == 10
    assert "INFO" not in result.stdout + result.stderr
