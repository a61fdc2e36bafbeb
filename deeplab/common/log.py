"""The library's one logger, and how a binary prints it.

Every library module reports through its module logger, ``logging.getLogger(__name__)``: a
child of the ``deeplab`` logger (:data:`LOGGER`), standard-library ``logging``. The library
never prints its reports and never configures logging; what becomes of a record is decided by
whoever runs it:

- A binary (``python -m deeplab.<binary>``, ``datasets/*.py``) prints them with
  :func:`console_output` (``deeplab._console`` installs it around ``main``): an INFO record is
  its message on standard output, as the library's ``print`` lines were; a WARNING or ERROR
  record is ``WARNING: <message>`` / ``ERROR: <message>`` on standard error; DEBUG records (the
  details absl's INFO log gave: checkpoints saved, layers loaded) only with ``--verbosity``,
  as ``DEBUG: <message>`` on standard error, beside TensorFlow's own lines.
- A library user (``import deeplab``) gets standard logging: nothing is installed, so INFO
  records stay silent until they configure logging (``logging.basicConfig(level=logging.INFO)``
  shows the run's lines), and WARNING records reach standard error through Python's last-resort
  handler like any library's. ``logging.getLogger("deeplab")`` silences or redirects them all.
"""

import contextlib
import logging
import sys

LOGGER = "deeplab"


class ConsoleHandler(logging.Handler):
    """The binaries' printing of the library's records (see the module docstring).

    The streams are looked up at each record, not kept: ``sys.stdout`` / ``sys.stderr`` as they
    are then, so a run's train.log copy (``deeplab.logdir.run_record.console_log``), the
    console streams of ``deeplab._console.library_output_to_log`` and pytest's capture all
    receive the lines as they received the library's prints.
    """

    def __init__(self, level=logging.NOTSET):
        super().__init__(level)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record):
        try:
            text = self.format(record)
            if record.levelno == logging.INFO:
                stream = sys.stdout
            else:
                # In order with the standard output lines printed before it.
                sys.stdout.flush()
                stream = sys.stderr
                text = f"{record.levelname}: {text}"
            stream.write(text + "\n")
            stream.flush()
        except Exception:  # pylint: disable=broad-except
            self.handleError(record)


@contextlib.contextmanager
def console_output(verbose=False):
    """Prints the ``deeplab`` logger's INFO records and above (``verbose``: DEBUG too) on the
    console while the block runs (:class:`ConsoleHandler`). They do not propagate to the root
    logger meanwhile (absl's handler there would print them twice). The logger is restored at
    the end; nested blocks print once (the outer block's setting holds)."""
    logger = logging.getLogger(LOGGER)
    if any(isinstance(handler, ConsoleHandler) for handler in logger.handlers):
        yield
        return
    handler = ConsoleHandler()
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


__all__ = ["LOGGER", "ConsoleHandler", "console_output"]
