"""The installed package layout: namespaced plugin folders, every package listed."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_listed_in_pyproject():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    mapped = {v: k for k, v in cfg["package-dir"].items()}
    found = set()
    tops = [d for d in ROOT.iterdir() if d.is_dir() and not d.name.startswith(".")
            and d.name not in ("tests", "build", "results", "experiments")]  # experiments: not installed
    for init in (i for d in tops for i in d.rglob("__init__.py")):
        rel = init.parent.relative_to(ROOT)
        top = mapped.get(rel.parts[0], rel.parts[0])
        found.add(".".join((top, *rel.parts[1:])))
    assert found == listed


def test_plugin_folders_import_under_the_namespace(tmp_path):
    assert importlib.import_module("cvg_bench.methods.vanilla")
    assert importlib.import_module("cvg_bench.benchmarks.base")
    # No bare top-level name is installed: look from a folder that is not the checkout
    # (`python -m pytest` puts the checkout itself on sys.path).
    probe = subprocess.run([sys.executable, "-c", "import importlib.util as u; "
                            "print(u.find_spec('methods'), u.find_spec('benchmarks'))"],
                           cwd=tmp_path, capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "None None", probe.stdout


def test_cvg_default_classifier_is_located_from_the_package_not_the_file(tmp_path, monkeypatch):
    """Installed, methods/cvg.py lands in cvg_bench/methods/ (not next to cvg_bench/): its
    default classifier must still be the package's assets/cvg_classifier_v3."""
    import cvg_bench
    from cvg_bench import registry

    installed = tmp_path / "site-packages" / "cvg_bench" / "methods" / "cvg.py"
    installed.parent.mkdir(parents=True)
    installed.write_text((ROOT / "methods" / "cvg.py").read_text())
    monkeypatch.setattr(registry, "register", lambda kind, name: lambda cls: cls)  # no second "cvg"
    spec = importlib.util.spec_from_file_location("_installed_layout_cvg", installed)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.DEFAULT_CLASSIFIER == Path(cvg_bench.__file__).resolve().parent / "assets" / "cvg_classifier_v3"
