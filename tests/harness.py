"""The one way a test runs a program in a subprocess.

``run(target, *args)`` runs it to the end and returns the ``subprocess.CompletedProcess`` (text
output captured, never raises on a non-zero exit); ``start(target, *args)`` returns the running
``subprocess.Popen`` (servers, and processes a test kills or reads line by line).

``target`` names what runs, always with this interpreter:

- ``"deeplab.train"`` (a module): ``python -m deeplab.train args``;
- ``"datasets/build_folder.py"`` (a ``.py`` path, relative to the repository root or absolute):
  ``python <script> args``;
- ``"-c"``: ``python -c args[0] args[1:]``;
- a list: that program as it is (``[ruff, "check"]``, an ``unshare`` prefix), then ``args``.

Every process runs from the repository root (or ``cwd``), with stdin from /dev/null (or
``input``), a timeout (``run`` only, 300 s unless given), ``umask`` if given (set in the child
before it starts) and the test environment of :func:`environment`: this process's variables,
the repository first on PYTHONPATH (so a worktree or a clean clone runs its own code, never an
installed copy), TensorFlow's C++ log lines quiet (TF_CPP_MIN_LOG_LEVEL=2 unless set) and no
TF_CONFIG (a cluster task's; a test that needs one passes it), with ``env`` on top (a value of
None removes the variable).
"""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 300


def environment(env=None, pythonpath=()):
    """The test environment (see the module docstring), ``env`` applied last.

    Args:
      env: {variable: value or None}; None removes the variable.
      pythonpath: extra folders, put before the repository on PYTHONPATH.
    """
    result = dict(os.environ)
    path = [str(p) for p in pythonpath] + [REPO]
    if result.get("PYTHONPATH"):
        path.append(result["PYTHONPATH"])
    result["PYTHONPATH"] = os.pathsep.join(path)
    result.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result.pop("TF_CONFIG", None)
    for name, value in (env or {}).items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = str(value)
    return result


def command(target, *args):
    """The argument list ``run`` and ``start`` execute (see the module docstring)."""
    args = [str(a) for a in args]
    if isinstance(target, (list, tuple)):
        return [str(t) for t in target] + args
    target = str(target)
    if target == "-c":
        return [sys.executable, "-c", *args]
    if target.endswith(".py"):
        return [sys.executable, os.path.join(REPO, target), *args]
    return [sys.executable, "-m", target, *args]


def _options(cwd, env, pythonpath, umask, stdin, stdout, stderr):
    options = {
        "cwd": str(cwd) if cwd is not None else REPO,
        "env": environment(env, pythonpath),
        "stdout": stdout,
        "stderr": stderr,
        "text": True,
    }
    if stdin is not None:
        options["stdin"] = stdin
    if umask is not None:
        options["preexec_fn"] = lambda: os.umask(umask)
    return options


def run(
    target,
    *args,
    cwd=None,
    env=None,
    pythonpath=(),
    timeout=TIMEOUT,
    umask=None,
    input=None,  # pylint: disable=redefined-builtin
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
):
    """Runs ``target`` to the end; returns the CompletedProcess (``stderr=subprocess.STDOUT``
    merges standard error into ``stdout``)."""
    return subprocess.run(
        command(target, *args),
        input=input,
        timeout=timeout,
        check=False,
        **_options(
            cwd,
            env,
            pythonpath,
            umask,
            subprocess.DEVNULL if input is None else None,
            stdout,
            stderr,
        ),
    )


def start(
    target,
    *args,
    cwd=None,
    env=None,
    pythonpath=(),
    umask=None,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
):
    """Starts ``target``; returns the Popen (by default one text pipe, standard error merged
    into standard output). The caller waits for it or kills it."""
    return subprocess.Popen(
        command(target, *args),
        **_options(cwd, env, pythonpath, umask, subprocess.DEVNULL, stdout, stderr),
    )
