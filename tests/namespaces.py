"""Test helper: a private mount namespace where a test can mount a small tmpfs (full-disk cases).

``private_tmpfs_or_skip(folder)`` returns the ``unshare`` command prefix when this machine gives
an unprivileged user + mount namespace that can mount a tmpfs on ``folder``; otherwise the test
is skipped with one line. ``run_in_namespace(prefix, script, ...)`` runs a shell script there.
"""

import shutil
import subprocess

import pytest

import harness


def private_tmpfs_or_skip(folder):
    unshare = shutil.which("unshare")
    prefix = [unshare, "--user", "--map-root-user", "--mount"] if unshare else None
    probe = (
        harness.run(prefix + ["sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {folder}"])
        if prefix
        else None
    )
    if probe is None or probe.returncode:
        pytest.skip("no private mount namespace with tmpfs here")
    return prefix


def run_in_namespace(prefix, script, **kwargs):
    """``sh -c script`` inside the namespace (``harness.run``: the test environment, from the
    repository root unless ``cwd``); standard error merged into standard output."""
    return harness.run(
        prefix + ["sh", "-c", script], stderr=subprocess.STDOUT, timeout=600, **kwargs
    )
