"""Files written whole or not at all: a temporary file in the target's folder, then os.replace.

A reader, or a run killed halfway, never sees a half-written checkpoint config, results file,
PNG or .tflite; a failed write leaves the previous file (if any) untouched and no temporary.
"""

import json
import os
import tempfile


def write_bytes(path, data):
    """Writes ``data`` (bytes) to ``path`` atomically; creates the folder."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-",
                                         suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(handle, "wb") as f:
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
