"""Quiet binaries: the tools' own lines, not TensorFlow's logs, unless asked for.

Every ``python -m deeplab.*`` binary calls :func:`quiet_tensorflow` before TensorFlow is
imported (it imports it) and :func:`quiet_absl` once its flags are parsed. By default
TensorFlow's C++ INFO and WARNING lines (``TF_CPP_MIN_LOG_LEVEL=2``; errors still show) and
absl's Python INFO lines are hidden. ``--verbosity=0`` (absl's flag; ``-v 0`` too) brings both
back; a ``TF_CPP_MIN_LOG_LEVEL`` set by the user is kept as it is.

:func:`run` (every ``python -m deeplab.*`` binary) and :func:`run_script` (``datasets/*.py``)
decide how the library's log records print: ``deeplab.common.log.console_output``.
"""

import ast
import contextlib
import os
import re
import sys
import tempfile
import textwrap
import time
import warnings

from absl import app
from absl import flags
from absl import logging

from deeplab.common import log
from deeplab.common.errors import ConfigError
from deeplab.common.errors import UserError


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


def help_text(main_module=None, full=False, shared_names=()):
    """The binary's help: its docstring, its own flags, then the experiment flags it reads
    (``shared_names``: the flags of the config sections it uses; ``full``: every flag absl
    knows, as absl's --helpfull prints them)."""
    main_module = main_module or sys.argv[0]
    doc = (sys.modules["__main__"].__doc__ or "").strip()
    if full:
        return doc + "\n\n" + flags.FLAGS.get_help()
    own = list(flags.FLAGS.flags_by_module_dict().get(main_module, []))
    own_names = {f.name for f in own}
    shared = [flags.FLAGS[name] for name in shared_names if name not in own_names]
    lines = [doc, "", "Flags of this binary:"] + (_flag_lines(own) or ["  (none)"])
    if shared:
        lines += [
            "",
            "Experiment flags it reads (config sections shared by the binaries; a --flagfile "
            "sets them):",
        ]
        lines += _flag_lines(shared)
    lines += ["", "--helpfull lists every flag, absl's own included."]
    return "\n".join(lines)


# ---- the one runner of every binary

USAGE = 2  # exit status of a usage error: a bad flag or value, an unexpected or missing argument
FAILURE = 1  # exit status of a failure: a missing or corrupt file, a run that fails


def binary_name():
    """``deeplab.<binary>`` of the running binary (``python -m deeplab.evaluate``)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return spec.name
    return "deeplab." + os.path.splitext(os.path.basename(sys.argv[0]))[0]


def error_line(message, name=None):
    """Prints ``deeplab.<binary>: error: <message>`` on standard error (``name``: the binary's
    module, default the running one)."""
    sys.stdout.flush()
    print(f"{name or binary_name()}: error: {message}", file=sys.stderr, flush=True)


def _flag_text(value):
    """A parsed flag value as written on a command line (``0.5``, ``1,2,4``)."""
    try:
        value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "(empty)"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _flag_error_text(error):
    """absl's parse error as one line naming the flag; a refused value reads as the config's own
    check says it (``--momentum must be in [0, 1), got -5``)."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    text = " ".join((lines[0] if lines else "").split())  # the first of several refused flags
    required = re.fullmatch(
        r"flag --(\w+)=None: Flag --\1 must have a value other than None\.", text
    )
    if required:
        return f"--{required.group(1)} is required"
    single = re.fullmatch(r"flag --(\w+)=(.*?): --\1 (.*)", text)
    if single:
        name, value, rule = single.groups()
        return f"--{name} {rule}, got {_flag_text(value)}"
    several = re.fullmatch(r"flags ((?:\w+=[^,]*, )*\w+=[^,]*): (--.*)", text)
    if several:
        given = ", ".join(
            f"--{name}={_flag_text(value)}"
            for name, value in (pair.split("=", 1) for pair in several.group(1).split(", "))
        )
        return f"{several.group(2)} ({given})"
    return text


def _parse_flags(argv):
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        error_line(_flag_error_text(error))
        sys.exit(USAGE)


def run_folder():
    """The run folder a binary reads a recorded config.json from: --logdir, or a --checkpoint
    that is a folder (None if neither is given)."""
    values = flags.FLAGS
    if "logdir" in values and values.logdir:
        return values.logdir
    checkpoint = values["checkpoint"].value if "checkpoint" in values else None
    return checkpoint if checkpoint and os.path.isdir(checkpoint) else None


def _config(sections, settings, recorded_config):
    """The experiment config of the parsed flags, over a run's recorded config.json where the
    binary reads one (``recorded_config``: True for :func:`run_folder`, or a function giving
    the folder)."""
    # The flags of the config sections: imported only by binaries that read them (others
    # define flags of the same names, e.g. inspect_dataset's --dataset_dir)
    from deeplab.config import flags as experiment_flags  # pylint: disable=import-outside-toplevel

    recorded = None
    folder = None
    if recorded_config:
        folder = recorded_config() if callable(recorded_config) else run_folder()
    if folder:
        # The run record (TensorFlow): imported after the flags, so --help answers at once
        from deeplab.logdir import run_record  # pylint: disable=import-outside-toplevel

        recorded = run_record.read_experiment(folder)
    config = experiment_flags.experiment_config(recorded)
    if recorded is not None:
        print(
            f"Settings of {os.path.join(folder, run_record.CONFIG_FILE)}, with the flags given "
            "here on top",
            flush=True,
        )
    return config


def run(
    main,
    argv=None,
    *,
    sections=(),
    settings=(),
    arguments=False,
    recorded_config=False,
    tensorflow=True,
):
    """Runs a binary: the one skeleton every ``python -m deeplab.<binary>`` shares.

    1. ``--help`` / ``-h`` lists the binary's own flags and the experiment flags of the config
       ``sections`` (and single ``settings``) it reads; ``--helpfull`` every flag. Printed at
       once, before TensorFlow and the library are imported (binaries import them in
       ``main``); exit 0.
    2. The flags are parsed. A usage error (an unknown flag, a bad value, a missing required
       flag, an unexpected argument where the binary takes none) is one line,
       ``deeplab.<binary>: error: <message>``, and exit status 2.
    3. TensorFlow is imported quietly (``tensorflow``; :func:`quiet_tensorflow`) and absl's log
       set to WARNING (:func:`quiet_absl`).
    4. With ``sections`` or ``settings``, the experiment config is built from the flags, over
       the run's recorded ``config.json`` when ``recorded_config`` and a ``--logdir`` (or a
       ``--checkpoint`` folder) has one: a run's settings, with the flags given on the command
       line on top. ``main(config, args)`` is then called, else ``main(args)``; ``args`` are
       the arguments after the flags (the program name left out).
    5. A :class:`~deeplab.common.errors.UserError` is one error line: exit 2 for a
       ``ConfigError`` (flags that are wrong, missing, or contradict each other or the data),
       1 for any other (a missing or corrupt file, a run that fails). ``main``'s return value
       is the exit status otherwise (None: 0).
    """
    argv = sys.argv if argv is None else argv
    shared = ()
    if sections or settings:
        # The config's flags (defined on import): the runner lists the binary's sections
        from deeplab.config import flags as experiment_flags  # pylint: disable=import-outside-toplevel

        shared = experiment_flags.section_flags(sections, settings)
    if help_requested(argv):
        full = any(arg.endswith("helpfull") for arg in argv[1:])
        print(help_text(full=full, shared_names=shared))
        sys.exit(0)

    def skeleton(parsed_argv):
        return run_main(
            main,
            parsed_argv,
            sections=sections,
            settings=settings,
            arguments=arguments,
            recorded_config=recorded_config,
            tensorflow=tensorflow,
        )

    app.run(skeleton, argv=argv, flags_parser=_parse_flags)


def run_main(
    main,
    argv,
    *,
    sections=(),
    settings=(),
    arguments=False,
    recorded_config=False,
    tensorflow=True,
):
    """Steps 3-5 of :func:`run` once the flags are parsed (``argv``: what absl left, the program
    name first): returns the exit status. Tests call it to run a binary's ``main`` in-process."""
    name = main.__module__ if main.__module__ != "__main__" else None
    args = list(argv[1:])
    if args and not arguments:
        error_line(f"unexpected arguments {args} (flags need --name=value)", name)
        return USAGE
    try:
        if tensorflow:
            quiet_tensorflow()
        quiet_absl()
        # The library's log records printed (deeplab.common.log); DEBUG too with --verbosity.
        with log.console_output(verbose=flags.FLAGS["verbosity"].present):
            if sections or settings:
                status = main(_config(sections, settings, recorded_config), args)
            else:
                status = main(args)
    except (ConfigError, app.UsageError) as error:
        error_line(error, name)
        return USAGE
    except UserError as error:
        error_line(error, name)
        return FAILURE
    return 0 if status is None else status


def run_script(main, argv=None):
    """Runs a ``datasets/*.py`` script's ``main(argv)`` (argparse flags): the library's log
    records printed as every binary prints them (``deeplab.common.log``), a
    :class:`~deeplab.common.errors.UserError` as one line ``error: <message>`` on standard
    error and exit status 1, Ctrl-C as one line and 130. Returns the exit status."""
    try:
        with log.console_output():
            main(argv)
    except UserError as error:
        sys.stdout.flush()
        print(f"error: {error}", file=sys.stderr)
        return FAILURE
    except KeyboardInterrupt:
        sys.stdout.flush()
        print("interrupted: no incomplete shard was left behind", file=sys.stderr)
        return 130
    return 0
