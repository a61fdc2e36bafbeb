"""Files written whole or not at all: a temporary file in the target's folder, then os.replace.

A reader, or a run killed halfway, never sees a half-written checkpoint config, results file,
PNG or .tflite; a failed write leaves the previous file (if any) untouched and no temporary.
The file gets the mode a plain ``open(path, "w")`` would give it (0666 less the umask), not
the 0600 of ``tempfile.mkstemp``.
"""

import json
import os
import tempfile

from deeplab.common.errors import ConfigError


def ensure_folder(path, flag):
    """Makes sure ``path`` is a folder this process can write into, creating it if needed.

    Args:
      path: the folder (remote ``scheme://`` paths are left to TensorFlow).
      flag: the flag or argument that named it, for the message ("--logdir").

    Raises:
      deeplab.common.errors.ConfigError: one line naming ``flag``: the path is a file, cannot be
        created, or is not writable.
    """
    path = os.fspath(path)
    if "://" in path:
        return
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{flag}={path} is a file, not a folder; choose a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"{flag}={path}: cannot create the folder ({error.strerror or error})"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag}={path}: the folder is not writable")


def current_umask():
    """The process's umask (``os.umask`` can only read it by setting it: set and restore)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_file_mode():
    """The permission bits ``open(path, "w")`` gives a new file: 0666 less the current umask."""
    return 0o666 & ~current_umask()


def write_bytes(path, data):
    """Writes ``data`` (bytes) to ``path`` atomically; creates the folder."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temp_path = tempfile.mkstemp(
        dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path)
    )
    try:
        with os.fdopen(handle, "wb") as f:
            # mkstemp creates the file 0600 whatever the umask; give it the ordinary mode.
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), default_file_mode())
            else:  # Windows: no fchmod (and only the read-only bit means anything).
                os.chmod(temp_path, default_file_mode())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise


def write_text(path, text):
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path, data, *, indent=2, sort_keys=True):
    """Writes ``data`` as JSON (with a final newline) to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n")
