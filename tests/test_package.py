"""The package's public names (``fcos_tf.__all__``)."""

import importlib
import subprocess
import sys

import fcos_tf


def test_every_public_name_resolves_to_its_defining_module():
    assert fcos_tf.__all__ == sorted(fcos_tf.__all__)
    for name in fcos_tf.__all__:
        value = getattr(fcos_tf, name)
        module = importlib.import_module(fcos_tf._PUBLIC_NAMES[name])
        assert getattr(module, name) is value, name
        # The module it is mapped to is the one that defines it, not one that imports it.
        defined_in = getattr(value, "__module__", None)
        if defined_in is not None and defined_in.startswith("fcos_tf"):
            assert defined_in == module.__name__ or (
                module.__name__ == "fcos_tf.data" and defined_in.startswith("fcos_tf.data.")
            ), (name, defined_in, module.__name__)


def test_unknown_name_is_an_attribute_error():
    try:
        fcos_tf.no_such_name  # noqa: B018
    except AttributeError as error:
        assert "no_such_name" in str(error)
    else:
        raise AssertionError("fcos_tf.no_such_name did not raise")


def test_import_does_not_load_tensorflow():
    code = (
        "import sys, fcos_tf; assert 'tensorflow' not in sys.modules, 'tensorflow loaded'; "
        "fcos_tf.compute_targets; assert 'tensorflow' in sys.modules"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_no_public_name_shadows_a_submodule():
    import pkgutil

    submodules = {info.name for info in pkgutil.iter_modules(fcos_tf.__path__)}
    assert not submodules & set(fcos_tf.__all__)


def test_no_module_names_a_document_the_repository_does_not_hold():
    """Every ``*.md`` a module or doc points to (``docs/design.md``, ``BENCHMARKS.md``...)
    exists in the repository."""
    import os
    import re

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cited = set()
    for folder in ("fcos_tf", "benchmarks", "docs", "tests"):
        for dirpath, _, files in os.walk(os.path.join(root, folder)):
            for name in files:
                if name.endswith((".py", ".md")):
                    with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                        cited |= set(re.findall(r"\b([\w./-]*[A-Za-z_]\.md)\b", f.read()))
    for name in ("README.md", "CHANGELOG.md", "BENCHMARKS.md"):
        with open(os.path.join(root, name), encoding="utf-8") as f:
            cited |= set(re.findall(r"\b([\w./-]*[A-Za-z_]\.md)\b", f.read()))
    # Paths inside other projects (e.g. AdelaiDet's configs/FCOS-Detection/README.md) are
    # cited with their project; this repository's own are bare names or under docs/.
    own = {path for path in cited if "/" not in path.lstrip("./") or path.startswith("docs/")}
    missing = sorted(
        path
        for path in own
        if not any(
            os.path.exists(os.path.join(base, path.lstrip("./")))
            for base in (root, os.path.join(root, "docs"), os.path.join(root, "benchmarks"))
        )
    )
    assert not missing, missing


def test_readme_python_examples_call_the_package_as_it_is():
    """Every name a README Python example imports from the package exists, and every call
    of one passes arguments its signature takes (a renamed keyword breaks the example)."""
    import ast
    import inspect
    import os
    import re

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "README.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.DOTALL)
    assert len(blocks) >= 4, len(blocks)
    checked = []
    for block in blocks:
        tree = ast.parse(block)
        names = {}  # local name -> object of the package
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module.startswith("fcos_tf"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    names[alias.asname or alias.name] = getattr(module, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("fcos_tf"):
                        names[alias.asname or alias.name] = importlib.import_module(alias.name)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Name) and func.id in names:
                target = names[func.id]
            elif (
                isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name)
                and func.value.id in names
                and inspect.ismodule(names[func.value.id])
            ):
                target = getattr(names[func.value.id], func.attr)
            else:
                continue
            keywords = {k.arg: None for k in node.keywords if k.arg is not None}
            try:
                inspect.signature(target).bind_partial(*[None] * len(node.args), **keywords)
            except TypeError as error:
                raise AssertionError(f"README: {ast.unparse(node)}: {error}") from error
            checked.append(ast.unparse(node.func))
    assert "builders.build_serving_config" in checked and "run_tflite" in checked, checked


def _command_modules():
    """The modules of the console scripts of setup.cfg, e.g. ``fcos_tf.train``."""
    import configparser
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = configparser.ConfigParser()
    parser.read(os.path.join(root, "setup.cfg"))
    entry_points = parser["options.entry_points"]["console_scripts"].split("\n")
    modules = sorted({line.split("=")[1].strip().split(":")[0] for line in entry_points if line})
    assert "fcos_tf.predict" in modules and "fcos_tf.train" in modules, modules
    return modules


# The commands whose flags list values defined next to TensorFlow code (export precisions and
# TFLite variants, weight sources): they load it, quietly, while defining them.
_FLAGS_NEED_TENSORFLOW = ("fcos_tf.export", "fcos_tf.weights")


def test_commands_answer_help_and_flag_errors_before_loading_tensorflow():
    """A command module imports no TensorFlow; ``--help``, a bad flag, a misspelt config key
    and an unknown recipe answer without it (in a fraction of a second instead of the
    seconds TensorFlow takes to load)."""
    modules = _command_modules()
    code = f"""
import importlib, io, sys, contextlib
modules = {modules!r}
for name in modules:
    importlib.import_module(name)
assert "tensorflow" not in sys.modules, "importing the commands loaded TensorFlow"
train = importlib.import_module("fcos_tf.train")
errors = []
for argv in (
    ["--workdir=w", "--config.train.batch_sise=2"],
    ["--workdir=w", "--no_such_flag"],
    ["--workdir=w", "--config=no_such_recipe"],
):
    try:
        train.main(argv)
    except SystemExit as stop:
        errors.append(str(stop.code))
for name in modules:
    if name in {_FLAGS_NEED_TENSORFLOW!r}:
        continue
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            importlib.import_module(name).main(["--help"])
        except SystemExit as stop:
            assert stop.code == 0, (name, stop.code)
    assert "usage: fcos-" in out.getvalue(), (name, out.getvalue()[:200])
assert "tensorflow" not in sys.modules, "a command's help or flag error loaded TensorFlow"
print(*errors, sep=chr(10))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    errors = result.stdout.splitlines()
    assert len(errors) == 3, errors  # one line each
    assert errors[0] == (
        "Invalid --config override --config.train.batch_sise: config.train has no key "
        '\'batch_sise\'. Did you mean "batch_size" instead of "batch_sise"?'
    ), errors
    assert errors[1] == (
        "FATAL Flags parsing error: Unknown command line flag 'no_such_flag' (--help lists "
        "the flags)."
    ), errors
    assert errors[2].startswith("No recipe 'no_such_recipe': give one of "), errors


def test_commands_load_tensorflow_quietly_after_their_flags():
    """Once the flags are parsed, TensorFlow loads without its load-time notices (the oneDNN
    line, absl's) on stderr: an invalid value fails with the one line of the command."""
    import os

    from fcos_tf import cli

    env = {**os.environ}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    for command, expected in (
        (
            ["fcos_tf.train", "--workdir=w", "--config.train.batch_size=-1"],
            "Invalid config: config.train.batch_size: must be a positive integer, got -1",
        ),
        (
            ["fcos_tf.export", "--workdir=no_such_run", "--output=o"],
            "--workdir='no_such_run' does not exist.",
        ),
    ):
        result = subprocess.run(
            [sys.executable, "-m", *command], capture_output=True, text=True, timeout=300, env=env
        )
        assert result.returncode == 1, (command, result.stderr[-2000:])
        assert result.stderr.strip().splitlines() == [expected], result.stderr[-2000:]
        assert not any(notice in result.stderr for notice in cli._IMPORT_NOISE)
