"""Quiet binaries: the tools' own lines, not TensorFlow's logs, unless asked for.

Every ``python -m deeplab.*`` binary calls :func:`quiet_tensorflow` before TensorFlow is
imported (it imports it) and :func:`quiet_absl` once its flags are parsed. By default
TensorFlow's C++ INFO and WARNING lines (``TF_CPP_MIN_LOG_LEVEL=2``; errors still show) and
absl's Python INFO lines are hidden. ``--verbosity=0`` (absl's flag; ``-v 0`` too) brings both
back; a ``TF_CPP_MIN_LOG_LEVEL`` set by the user is kept as it is.
"""

import os
import sys
import tempfile

from absl import flags, logging


def _verbosity_requested(argv):
    return any(
        arg in ("-v", "--v") or arg.startswith(("--verbosity", "-v=", "--v=")) for arg in argv[1:]
    )


def quiet_tensorflow(argv=None):
    """Sets TF_CPP_MIN_LOG_LEVEL=2 unless --verbosity is on the command line or the user set
    it, and imports TensorFlow with :func:`import_tensorflow_quietly`. Returns the level in
    force."""
    argv = sys.argv if argv is None else argv
    if not _verbosity_requested(argv):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import_tensorflow_quietly(argv)
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL")


def quiet_absl():
    """absl's Python log at WARNING unless --verbosity was given (call after flag parsing)."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def import_tensorflow_quietly(argv=None):
    """Imports TensorFlow with its load-time log lines hidden (unless --verbosity is given).

    Some of TensorFlow's C++ lines are written before its log level is read (absl's "before
    InitializeLog" stream: "oneDNN custom operations are on ..."), so TF_CPP_MIN_LOG_LEVEL
    cannot hide them; the standard error file descriptor is pointed at a temporary file for
    the import. If the import fails, what it wrote is shown with the error.
    """
    argv = sys.argv if argv is None else argv
    if "tensorflow" in sys.modules or _verbosity_requested(argv):
        # TensorFlow: imported here, after the log settings above, never at module import
        import tensorflow  # pylint: disable=import-outside-toplevel,unused-import

        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            # TensorFlow: imported here, with standard error captured, never at module import
            import tensorflow  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import,redefined-outer-name
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
