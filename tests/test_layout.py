"""The package layout's rules (CONVENTIONS.md, "Layout"), checked on the source: no import
cycle, no library module importing a binary, function-local imports only with a reason, a
documented owner for every subpackage, and the ruff configuration clean."""

import ast
import os
import shutil
import sys

import pytest

import harness

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO_ROOT, "deeplab")
# In dependency order (CONVENTIONS.md, "Layout"): a subpackage imports only those before it.
SUBPACKAGES = (
    "common",
    "config",
    "model",
    "data",
    "logdir",
    "evaluation",
    "training",
    "export",
    "orchestration",
)
BINARIES = (
    "train",
    "evaluate",
    "visualize",
    "predict",
    "export_saved_model",
    "reproduce",
    "describe",
    "import_official",
    "launch_local",
    "figures",
    "inspect_dataset",
    "serve",
)


def _modules():
    """{dotted module name: path} of every module of the package."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            parts = os.path.relpath(path, REPO_ROOT)[: -len(".py")].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(path, *, top_level_only):
    """(line, dotted name) of every deeplab module ``path`` imports."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    nodes = tree.body if top_level_only else ast.walk(tree)
    out = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("deeplab")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("deeplab"):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                out.append((node.lineno, child if child in MODULES else node.module))
    return out


def test_the_subpackages_exist_and_say_what_they_own():
    for name in SUBPACKAGES:
        doc = ast.get_docstring(ast.parse(open(MODULES[f"deeplab.{name}"]).read()))
        assert doc and len(doc.split()) >= 15, f"deeplab/{name}/__init__.py needs a docstring"
    top = sorted(m for m in MODULES if m.count(".") == 1 and m.split(".")[1] not in SUBPACKAGES)
    allowed = {f"deeplab.{b}" for b in BINARIES} | {
        "deeplab._console",
        "deeplab._cpu",
        "deeplab._jax_guard",
    }
    assert set(top) <= allowed, set(top) - allowed


def test_no_import_cycle_between_modules():
    graph = {
        m: {name for _, name in _imports(p, top_level_only=True) if name in MODULES}
        for m, p in MODULES.items()
    }
    # A package's __init__ is imported on the way to its modules; that is not a dependency.
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                cycle = stack[stack.index(dep) :] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_subpackages_import_only_the_ones_before_them():
    order = {name: i for i, name in enumerate(SUBPACKAGES)}
    for module, path in MODULES.items():
        parts = module.split(".")
        if len(parts) < 2 or parts[1] not in order:
            continue
        for line, name in _imports(path, top_level_only=False):
            target = name.split(".")[1] if name.count(".") else None
            if target in order and target != parts[1]:
                assert order[target] < order[parts[1]], (
                    f"{path}:{line}: deeplab.{parts[1]} imports deeplab.{target}, which comes "
                    "after it in the layering"
                )


def test_no_library_module_imports_a_binary():
    binaries = {f"deeplab.{b}" for b in BINARIES}
    for module, path in MODULES.items():
        if module in binaries:
            continue
        for line, name in _imports(path, top_level_only=False):
            assert name not in binaries, f"{path}:{line} imports the binary {name}"


def test_the_library_reads_no_flags():
    """Only the binaries (and their console helper) and ``deeplab/config/flags.py``, which
    defines the shared flags, import absl's flags: the library is handed configs and values."""
    allowed = {f"deeplab.{b}" for b in BINARIES} | {"deeplab._console", "deeplab.config.flags"}
    for module, path in MODULES.items():
        if module in allowed:
            continue
        tree = ast.parse(open(path, encoding="utf-8").read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                assert name not in ("absl.flags", "deeplab.config.flags"), (
                    f"{path}:{node.lineno} imports {name}: library code never reads flags"
                )


def _console_output(tree):
    """(line, what) of every way ``tree`` reports on the console other than a log record: a
    ``print`` call, a write to ``sys.stdout`` / ``sys.stderr``, absl's log imported."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id == "print":
                found.append((node.lineno, "print()"))
            elif (
                isinstance(func, ast.Attribute)
                and func.attr in ("write", "writelines")
                and isinstance(func.value, ast.Attribute)
                and func.value.attr in ("stdout", "stderr")
                and isinstance(func.value.value, ast.Name)
                and func.value.value.id == "sys"
            ):
                found.append((node.lineno, f"sys.{func.value.attr}.{func.attr}()"))
        elif isinstance(node, ast.Import):
            found += [
                (node.lineno, f"import {a.name}")
                for a in node.names
                if a.name == "absl.logging" or a.name.startswith("absl.logging.")
            ]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "absl.logging" or node.module.startswith("absl.logging."):
                found.append((node.lineno, f"from {node.module} import ..."))
            elif node.module == "absl" and any(a.name == "logging" for a in node.names):
                found.append((node.lineno, "from absl import logging"))
    return found


# Library modules allowed to write to the console other than through the logger, with the
# reason. Empty: the progress bar writes to the stream it is given (common/progress.py), the
# console handler to the stream of the record's level (common/log.py), neither through print.
CONSOLE_ALLOWED = {}


def test_library_modules_report_through_the_logger():
    """Every module of a subpackage (deeplab/<subpackage>/...) reports through
    ``logging.getLogger(__name__)`` (deeplab.common.log): no print, no write to
    sys.stdout / sys.stderr, no absl log; the binaries decide how the records print."""
    checked = 0
    for module, path in MODULES.items():
        if os.sep not in os.path.relpath(path, PACKAGE):
            continue  # a binary, _console and the package's own start-up modules
        checked += 1
        found = [
            (line, what)
            for line, what in _console_output(ast.parse(open(path, encoding="utf-8").read()))
            if (module, what) not in CONSOLE_ALLOWED
        ]
        assert not found, "; ".join(
            f"{path}:{line}: {what} (log through logging.getLogger(__name__) instead)"
            for line, what in found
        )
    assert checked > 80  # every subpackage's modules were read


def test_the_console_rule_sees_each_kind_of_output():
    source = (
        "import sys\nimport absl.logging\nfrom absl import logging\n"
        "from absl.logging import info\nprint('x')\nsys.stderr.write('y')\n"
        "sys.stdout.writelines(['z'])\nlog.info('fine')\nhandle.write('fine')\n"
    )
    assert [what for _, what in _console_output(ast.parse(source))] == [
        "import absl.logging",
        "from absl import logging",
        "from absl.logging import ...",
        "print()",
        "sys.stderr.write()",
        "sys.stdout.writelines()",
    ]


def _has_reason(lines, lineno):
    """A comment other than a linter directive on the import's line or the line above."""
    for text in (lines[lineno - 1], lines[lineno - 2] if lineno > 1 else ""):
        if "#" in text:
            comment = text.split("#", 1)[1].strip()
            for directive in ("pylint:", "noqa", "pylint: disable"):
                comment = comment.split(directive)[0].strip()
            if comment:
                return True
    return False


def test_function_local_imports_say_why():
    missing = []
    for path in MODULES.values():
        source = open(path, encoding="utf-8").read()
        lines = source.splitlines()
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)) and not _has_reason(
                        lines, inner.lineno
                    ):
                        missing.append(f"{os.path.relpath(path, REPO_ROOT)}:{inner.lineno}")
    assert not missing, "function-local imports without a reason comment: " + ", ".join(missing)


def _ruff():
    found = shutil.which("ruff", path=os.path.dirname(sys.executable)) or shutil.which("ruff")
    assert found, "ruff is not installed: pip install -e '.[test]' (setup.py pins it)"
    return found


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]])
def test_ruff_is_clean(command):
    result = harness.run([_ruff()], *command)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
