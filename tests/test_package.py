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


def test_every_command_imports_the_cli_before_any_other_package():
    """``fcos_tf.cli`` loads TensorFlow with its load-time notices (oneDNN, absl) left out of
    the command's stderr; a command module that imports TensorFlow, Keras or a module of the
    package that does before it prints them."""
    import ast
    import configparser
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = configparser.ConfigParser()
    parser.read(os.path.join(root, "setup.cfg"))
    entry_points = parser["options.entry_points"]["console_scripts"].split("\n")
    modules = sorted({line.split("=")[1].strip().split(":")[0] for line in entry_points if line})
    assert "fcos_tf.predict" in modules and "fcos_tf.train" in modules, modules
    for module in modules:
        path = os.path.join(root, *module.split(".")) + ".py"
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        imported = []  # top-level imports outside the standard library, in order
        for node in tree.body:
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            imported += [n for n in names if n.split(".")[0] not in sys.stdlib_module_names]
        assert imported and imported[0] == "fcos_tf.cli", (module, imported[:3])
