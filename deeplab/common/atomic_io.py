"""Files written whole or not at all: a temporary file in the target's folder, then os.replace.

A reader, or a run killed halfway, never sees a half-written checkpoint config, results file,
PNG or .tflite; a failed write leaves the previous file (if any) untouched and no temporary.
The file gets the mode a plain ``open(path, "w")`` would give it (0666 less the umask), not
the 0600 of ``tempfile.mkstemp``.

Folders the same way (:func:`atomic_directory`, or :func:`check_directory_target`,
:func:`staging_directory` and :func:`replace_directory` step by step): an export or an import
is assembled in a hidden folder beside its target and renamed into place, so a failure (a
full disk, a kill) leaves the previous folder as it was and no partial one.
"""

import contextlib
import hashlib
import json
import os
import shutil
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


# Longest file name most file systems take (bytes); temporary names stay well below it.
NAME_MAX = 255


def short_name(name, limit=64):
    """``name`` if its UTF-8 form fits in ``limit`` bytes, else its start and a hash of the whole
    (the same name always gives the same short one): for temporary names built from a target's
    name, which may itself be up to :data:`NAME_MAX` bytes long."""
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) <= limit:
        return name
    digest = hashlib.sha1(encoded).hexdigest()[:10]
    head = encoded[: limit - 11].decode("utf-8", "ignore")
    return f"{head}-{digest}"


def write_bytes(path, data):
    """Writes ``data`` (bytes) to ``path`` atomically; creates the folder."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temp_path = tempfile.mkstemp(
        dir=directory, prefix=".tmp-", suffix="-" + short_name(os.path.basename(path))
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


def check_directory_target(target, flag, replaceable=None):
    """Checks, before any work, that ``target`` can be replaced by a folder written whole.

    Args:
      target: the folder to write (it may exist).
      flag: the flag that named it, for messages ("--export_dir").
      replaceable: for an existing non-empty folder, a function of its sorted entry names that
        returns None when the folder may be replaced, or a reason (the rest of a sentence
        after "``flag``=``target``") when it must not be.

    Raises:
      deeplab.common.errors.ConfigError: one line naming ``flag``: the path is a file, its
        parent cannot be created or written, or ``replaceable`` gives a reason.
    """
    target = os.fspath(target)
    if "://" in target:
        return
    if os.path.exists(target) and not os.path.isdir(target):
        raise ConfigError(f"{flag}={target} is a file, not a folder; choose a folder")
    here, real = os.path.realpath(os.getcwd()), os.path.realpath(target)
    if here == real or here.startswith(real.rstrip(os.sep) + os.sep):
        raise ConfigError(
            f"{flag}={target} is the current folder or holds it; it is replaced whole: "
            "choose a folder below it"
        )
    if os.path.isdir(target) and replaceable is not None:
        try:
            entries = sorted(os.listdir(target))
        except OSError as error:
            raise ConfigError(
                f"{flag}={target}: cannot list the folder ({error.strerror or error})"
            ) from None
        reason = replaceable(entries) if entries else None
        if reason:
            raise ConfigError(f"{flag}={target} {reason}")
    ensure_folder(os.path.dirname(os.path.abspath(target)), flag)


def _default_folder_mode():
    return 0o777 & ~current_umask()


def staging_directory(target):
    """A new empty hidden folder beside ``target`` (same file system, so it can be renamed onto
    it), with the mode ``os.makedirs`` would give; ``target`` itself for a remote path."""
    target = os.fspath(target)
    if "://" in target:
        return target
    target = os.path.realpath(target)  # a link to a folder: write beside what it points to
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(
        prefix=f".{short_name(os.path.basename(target))}.partial-", dir=parent
    )
    os.chmod(staging, _default_folder_mode())
    return staging


def replace_directory(staging, target):
    """Renames the finished ``staging`` folder onto ``target``: an existing ``target`` is first
    renamed aside (and put back if the second rename fails), then removed. A kill between the
    two renames leaves the previous folder whole, as ``.NAME.old-XXXX`` beside it."""
    target = os.fspath(target)
    if staging == target:
        return target
    target = os.path.realpath(target)
    if not os.path.lexists(target):
        os.rename(staging, target)
        return target
    parent = os.path.dirname(target)
    aside = tempfile.mkdtemp(prefix=f".{short_name(os.path.basename(target))}.old-", dir=parent)
    os.rename(target, aside)  # onto the empty folder mkdtemp made: allowed
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return target


@contextlib.contextmanager
def atomic_directory(target, *, flag, replaceable=None):
    """Writes a folder whole or not at all: yields an empty staging folder beside ``target``;
    when the block ends normally the staging folder replaces ``target``
    (:func:`replace_directory`), and when it raises, the staging folder is removed and
    ``target`` is left as it was.

    ``flag`` and ``replaceable``: see :func:`check_directory_target` (checked first)::

        with atomic_io.atomic_directory(export_dir, flag="--export_dir") as folder:
            write_json(os.path.join(folder, "card.json"), card)
    """
    check_directory_target(target, flag, replaceable)
    staging = staging_directory(target)
    try:
        yield staging
        replace_directory(staging, target)
    except BaseException:
        if staging != os.fspath(target):
            shutil.rmtree(staging, ignore_errors=True)
        raise
