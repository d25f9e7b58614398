"""The plugin must live inside other people's forks: old Pythons, and no imports of our trainer."""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "nda_stylegan")


def package_files():
    for folder, _dirs, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(folder, name)


def test_package_runs_on_python_38():
    """vermin finds the minimum Python each construct needs; nothing may need more than 3.8."""
    # Through this interpreter, not the `vermin` script: packages unpacked without their scripts
    # (pip install --target) have none next to the interpreter.
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from vermin import main; sys.argv[0] = 'vermin'; sys.exit(main())",
         "--target=3.8-", "--no-tips", "--violations", "--eval-annotations", "--backport", "typing", PACKAGE],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def imported_modules(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


@pytest.mark.parametrize("forbidden", ["training", "metrics", "torch_utils", "dnnlib"])
def test_package_never_imports_a_host_module_statically(forbidden):
    """A host fork has its own training/ and metrics/: the plugin must not import ours (or
    theirs) at module level. (Optional, guarded host imports go through importlib.)"""
    offenders = [
        os.path.relpath(path, ROOT)
        for path in package_files()
        for module in imported_modules(path)
        if module == forbidden or module.startswith(forbidden + ".")
    ]
    assert not offenders, offenders


def test_setup_installs_only_the_plugin_package():
    from setuptools import find_packages

    packages = find_packages(ROOT, include=["nda_stylegan", "nda_stylegan.*"])
    assert packages and all(p == "nda_stylegan" or p.startswith("nda_stylegan.") for p in packages)
    setup_text = open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read()
    assert 'include=["nda_stylegan", "nda_stylegan.*"]' in setup_text
