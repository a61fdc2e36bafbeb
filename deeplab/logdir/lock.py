"""One training per logdir: ``<logdir>/train.lock``.

A training run (the chief of a cluster) holds the lock from before it reads the logdir's
checkpoints until it returns; a second training started on the same logdir stops with one
line naming the holder (host, pid, start time) instead of training alongside it and writing the
same ``ckpt-N`` names over the first one's. Evaluators, ``deeplab.evaluate --watch`` and every
other reader of a logdir read without it.

The file holds its holder as JSON (``{"host", "pid", "started", "command"}``) and is locked with
``flock`` while the run lives, so the kernel releases it when the process dies however it dies
(``kill -9`` included); a run that finds the file unlocked takes it over, with a line naming
the run that left it. Where ``flock`` is not available (some network file systems), a lock
whose holder is a process of this host that no longer runs is taken over; one of another host
is refused (delete the file when that run has ended). The file is removed when the run ends.
Remote logdirs (``gs://``) are not locked.
"""

import contextlib
import errno
import json
import logging
import os
import socket
import sys
import time

from deeplab.common.errors import UserError

log = logging.getLogger(__name__)

LOCK_FILE = "train.lock"

try:  # POSIX only
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class LogdirInUseError(UserError):
    """Another training run holds the logdir's lock."""


def _describe(holder):
    if not isinstance(holder, dict):
        return "a run that has not written its name into it yet"
    started = holder.get("started")
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
        if isinstance(started, (int, float))
        else "an unknown time"
    )
    return f"pid {holder.get('pid')} on host {holder.get('host')}, started {when}"


def _read_holder(handle):
    handle.seek(0)
    text = handle.read()
    try:
        holder = json.loads(text) if text.strip() else None
    except ValueError:
        holder = None
    return holder if isinstance(holder, dict) else None


def _process_runs(pid):
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True  # someone else's process, or not a pid: assume alive
    return True


def _flock(handle):
    """True: locked; False: another process holds it; None: this file system cannot lock."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return None
        raise


@contextlib.contextmanager
def training_lock(logdir):
    """Holds ``<logdir>/train.lock`` for a training run (see the module docstring).

    Args:
      logdir: the run's folder (it must exist). Taking over a stale lock is logged (INFO).

    Raises:
      LogdirInUseError: another run holds it (one line naming it and what to do).
    """
    logdir = os.fspath(logdir)
    if "://" in logdir:
        yield None
        return
    path = os.path.join(logdir, LOCK_FILE)
    host = socket.gethostname()
    while True:
        try:
            handle = open(path, "a+", encoding="utf-8")  # pylint: disable=consider-using-with
        except OSError as error:
            raise UserError(
                f"--logdir={logdir}: cannot open its lock file {path} ({error.strerror or error})"
            ) from None
        locked = _flock(handle)
        holder = _read_holder(handle)
        if locked is False:
            handle.close()
            raise LogdirInUseError(
                f"--logdir={logdir} is in use by another training run "
                f"({_describe(holder)}; lock file {path}): wait for it to end or stop it, "
                "or train into another --logdir"
            )
        try:
            same_file = os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
        except FileNotFoundError:
            same_file = False
        if not same_file:  # its holder ended and removed it while we opened it: again
            handle.close()
            continue
        break
    mine = holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == host
    if holder is not None and not mine:
        if locked is None and (holder.get("host") != host or _process_runs(holder.get("pid"))):
            handle.close()
            raise LogdirInUseError(
                f"--logdir={logdir} is in use by another training run "
                f"({_describe(holder)}; lock file {path}), as far as this file system "
                "can tell: if that run has ended, delete the lock file; or train into another "
                "--logdir"
            )
        log.info(
            f"Took over the lock of {logdir} left by a training run that is no longer running "
            f"({_describe(holder)})"
        )
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "host": host,
                    "pid": os.getpid(),
                    "started": time.time(),
                    "command": " ".join(sys.argv)[:500],
                }
            )
            + "\n"
        )
        handle.flush()
    except OSError as error:
        handle.close()
        raise UserError(
            f"--logdir={logdir}: cannot write its lock file {path} ({error.strerror or error})"
        ) from None
    try:
        yield path
    finally:
        # Removed before it is unlocked: a run that opened it meanwhile sees a removed file
        # and opens the path again.
        with contextlib.suppress(OSError):
            os.remove(path)
        handle.close()
