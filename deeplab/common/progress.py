"""Progress of a long step, for a person watching: done / total, rate and ETA.

On a terminal the line is redrawn in place (at most twice a second); anywhere else (a log file,
CI, a pipe) nothing is drawn while the step runs and one line says what the step did when it
ends, so logs hold one line per stage, not thousands of carriage returns::

    with Progress(101, "evaluate val", unit="img") as bar:
        for ...:
            bar.update()
    # terminal:  evaluate val: 57/101 img, 2.3 img/s, ETA 19 s
    # log:       evaluate val: 101/101 img in 44.0 s (2.3 img/s)
"""

import sys
import time


def _seconds(value):
    if value >= 3600:
        return f"{int(value // 3600)} h {int(value % 3600 // 60):02d} min"
    if value >= 60:
        return f"{int(value // 60)} min {int(value % 60):02d} s"
    return f"{value:.0f} s"


class Progress:
    """Counts work done towards ``total`` (None: unknown) and reports it (module docstring).

    Args:
      total: the number of items, or None.
      label: what is being done ("evaluate val", "calibrate int8").
      unit: the items' unit ("img").
      stream: where to write (default: standard error at the time of each write).
      enabled: False draws and prints nothing.
      interactive: force the terminal (True) or log (False) style; default: whether the
        stream is a terminal.
    """

    def __init__(self, total, label, *, unit="", stream=None, enabled=True, interactive=None):
        self.total, self.label, self.unit = total, label, unit
        self.done = 0
        self._stream, self.enabled = stream, enabled
        self._interactive = interactive
        self._start = time.monotonic()
        self._drawn = 0.0
        self._closed = False

    @property
    def stream(self):
        return self._stream if self._stream is not None else sys.stderr

    @property
    def interactive(self):
        if self._interactive is not None:
            return self._interactive
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def _count(self):
        unit = f" {self.unit}" if self.unit else ""
        if self.total is None:
            return f"{self.done}{unit}"
        return f"{self.done}/{self.total}{unit}"

    def _rate(self, elapsed):
        rate = self.done / elapsed if elapsed > 0 else 0.0
        return (
            f"{rate:.1f} {self.unit or 'items'}/s"
            if rate < 100
            else f"{rate:.0f} {self.unit or 'items'}/s"
        )

    def status(self):
        """The line a terminal shows now: done / total, rate and ETA."""
        elapsed = time.monotonic() - self._start
        text = f"{self.label}: {self._count()}"
        if self.done and elapsed > 0:
            text += f", {self._rate(elapsed)}"
            if self.total:
                remaining = (self.total - self.done) * elapsed / self.done
                text += f", ETA {_seconds(remaining)}"
        return text

    def summary(self):
        """The one line written when the step ends (log style)."""
        elapsed = time.monotonic() - self._start
        text = f"{self.label}: {self._count()} in {elapsed:.1f} s"
        if self.done and elapsed > 0:
            text += f" ({self._rate(elapsed)})"
        return text

    def update(self, count=1):
        self.done += count
        if not self.enabled or not self.interactive:
            return
        now = time.monotonic()
        if now - self._drawn >= 0.5 or (self.total is not None and self.done >= self.total):
            self._drawn = now
            self.stream.write("\r\033[K" + self.status())
            self.stream.flush()

    def close(self):
        """Ends the step: a terminal's line is finished with the summary; a log gets it."""
        if self._closed or not self.enabled:
            return
        self._closed = True
        prefix = "\r\033[K" if self.interactive else ""
        self.stream.write(prefix + self.summary() + "\n")
        self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is None:
            self.close()
        elif self.enabled and self.interactive and not self._closed:
            self._closed = True
            self.stream.write("\n")  # keep the last count on screen above the error
        return False


__all__ = ["Progress"]
