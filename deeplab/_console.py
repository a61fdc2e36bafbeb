"""Quiet binaries: the tools' own lines, not TensorFlow's logs, unless asked for.

Every ``python -m deeplab.*`` binary calls :func:`quiet_tensorflow` before TensorFlow is
imported (it imports it) and :func:`quiet_absl` once its flags are parsed. By default
TensorFlow's C++ INFO and WARNING lines (``TF_CPP_MIN_LOG_LEVEL=2``; errors still show) and
absl's Python INFO lines are hidden. ``--verbosity=0`` (absl's flag; ``-v 0`` too) brings both
back; a ``TF_CPP_MIN_LOG_LEVEL`` set by the user is kept as it is.
"""

import contextlib
import os
import sys
import tempfile
import textwrap
import time
import warnings

from absl import app, flags, logging


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


@contextlib.contextmanager
def library_output_to_log(log_path, *, keep_on_console=False):
    """Sends what TensorFlow, the TFLite converter and other native code print (C++ log lines,
    absl/TensorFlow Python log lines, Python warnings) to ``log_path`` instead of the console,
    while the tool's own ``print`` lines still reach the console.

    Standard output and error file descriptors point at a temporary file while the block runs;
    ``sys.stdout`` / ``sys.stderr`` are replaced by streams on the original descriptors. At the
    end the captured text is appended to ``log_path`` (its folder made if needed), so a folder
    that is renamed into place meanwhile (an atomic export) still gets it. If the block fails,
    the captured text is kept in a temporary file whose name is printed. With
    ``keep_on_console`` (``--verbosity`` given) nothing is redirected.
    """
    if keep_on_console or _verbosity_requested(sys.argv):
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    captured = tempfile.NamedTemporaryFile(prefix="deeplab-", suffix=".log", delete=False)
    streams = sys.stdout, sys.stderr
    console_out = os.fdopen(os.dup(saved[1]), "w", buffering=1, encoding="utf-8")
    console_err = os.fdopen(os.dup(saved[2]), "w", buffering=1, encoding="utf-8")
    show = warnings.showwarning

    def to_log(message, category, filename, lineno, file=None, line=None):
        captured.write(
            warnings.formatwarning(message, category, filename, lineno, line).encode("utf-8")
        )
        captured.flush()

    failed = False
    try:
        for fd in (1, 2):
            os.dup2(captured.fileno(), fd)
        sys.stdout, sys.stderr = console_out, console_err
        warnings.showwarning = to_log
        yield
    except BaseException:
        failed = True
        raise
    finally:
        warnings.showwarning = show
        for stream in (console_out, console_err):
            stream.flush()
        for fd in (1, 2):
            os.dup2(saved[fd], fd)
            os.close(saved[fd])
        sys.stdout, sys.stderr = streams
        console_out.close()
        console_err.close()
        captured.close()
        _save_captured(captured.name, log_path, failed)


def _save_captured(captured_path, log_path, failed):
    with open(captured_path, "rb") as handle:
        text = handle.read()
    if failed:
        if text.strip():
            print(f"(TensorFlow's own output of this run: {captured_path})", file=sys.stderr)
        else:
            os.unlink(captured_path)
        return
    try:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        with open(log_path, "ab") as handle:
            handle.write(
                f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}\n".encode()
            )
            handle.write(text)
    except OSError as error:
        print(
            f"note: could not write {log_path} ({error.strerror}); TensorFlow's output of "
            f"this run is in {captured_path}",
            file=sys.stderr,
        )
        return
    os.unlink(captured_path)


HELP_ARGUMENTS = (
    "-h",
    "-?",
    "-help",
    "--help",
    "-helpshort",
    "--helpshort",
    "-helpfull",
    "--helpfull",
)


def help_requested(argv=None):
    """Whether the command line asks for help (absl's spellings)."""
    argv = sys.argv if argv is None else argv
    return any(arg in HELP_ARGUMENTS for arg in argv[1:])


def _flag_lines(flag_list):
    lines = []
    for flag in sorted(flag_list, key=lambda f: f.name):
        if flag.name in ("help", "helpfull", "helpshort", "helpxml", "flagfile", "undefok"):
            continue
        default = flag.default_as_str if flag.default_as_str is not None else "None"
        lines += textwrap.wrap(
            f"--{flag.name}: {flag.help} (default: {default})",
            width=100,
            initial_indent="  ",
            subsequent_indent="      ",
        )
    return lines


def help_text(main_module=None, full=False):
    """The binary's help: its docstring, its own flags, then the shared experiment flags it reads
    (``full``: every flag absl knows, as absl's --helpfull prints them)."""
    main_module = main_module or sys.argv[0]
    doc = (sys.modules["__main__"].__doc__ or "").strip()
    if full:
        return doc + "\n\n" + flags.FLAGS.get_help()
    by_module = flags.FLAGS.flags_by_module_dict()
    own = list(by_module.get(main_module, []))
    own_names = {f.name for f in own}
    shared = [
        f for f in flags.FLAGS.get_key_flags_for_module(main_module) if f.name not in own_names
    ]
    lines = [doc, "", "Flags of this binary:"] + (_flag_lines(own) or ["  (none)"])
    if shared:
        lines += ["", "Experiment flags it reads (shared by the binaries; a --flagfile sets them):"]
        lines += _flag_lines(shared)
    lines += ["", "--helpfull lists every flag, absl's own included."]
    return "\n".join(lines)


def run(main, argv=None):
    """``absl.app.run(main)``, except that help (``--help``, ``-h``, ``--helpfull``) is printed
    at once, before the library and TensorFlow are imported (binaries import them in ``main``),
    and exits 0."""
    argv = sys.argv if argv is None else argv
    if help_requested(argv):
        full = any(arg.endswith("helpfull") for arg in argv[1:])
        print(help_text(full=full))
        sys.exit(0)
    app.run(main, argv=argv)
