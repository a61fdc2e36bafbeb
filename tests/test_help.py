"""--help of every binary: exit 0, the binary's own flags first, and no TensorFlow, Keras or
JAX imported to print it (the import is what made it take 8-20 s)."""

import json

import pytest

import harness

BINARIES = (
    "train",
    "evaluate",
    "visualize",
    "export_saved_model",
    "predict",
    "import_official",
    "reproduce",
    "describe",
    "launch_local",
    "figures",
    "inspect_dataset",
    "serve",
)

# Runs the binary as `python -m` would, with the help flag, and reports what it imported.
SCRIPT = """
import contextlib, io, json, runpy, sys
sys.argv = ["deeplab/{name}.py", "{flag}"]
out = io.StringIO()
code = None
with contextlib.redirect_stdout(out):
    try:
        runpy.run_module("deeplab.{name}", run_name="__main__", alter_sys=True)
    except SystemExit as exit:
        code = exit.code
heavy = sorted(m for m in ("tensorflow", "keras", "jax") if m in sys.modules)
print(json.dumps({{"code": code, "heavy": heavy, "text": out.getvalue()}}))
"""


def _help(name, flag="--help"):
    result = harness.run("-c", SCRIPT.format(name=name, flag=flag), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", BINARIES)
def test_help_exits_0_without_tensorflow(name):
    report = _help(name)
    assert report["code"] == 0
    assert report["heavy"] == [], f"--help imported {report['heavy']}"
    text = report["text"]
    own = text.index("Flags of this binary:")
    assert own > 0  # the module's usage text comes first
    shared = text.find("Experiment flags it reads")
    assert shared == -1 or shared > own  # its own flags before the shared ones


def test_help_lists_the_binary_flags_and_the_experiment_flags():
    text = _help("predict")["text"]
    own = text[text.index("Flags of this binary:") : text.index("Experiment flags it reads")]
    assert "--model:" in own and "--input:" in own and "--eval_scales" not in own
    assert "--eval_scales:" in text[text.index("Experiment flags it reads") :]
    full = _help("predict", "--helpfull")
    assert full["code"] == 0 and "--eval_scales" in full["text"] and "--verbosity" in full["text"]
