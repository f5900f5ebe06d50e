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
