"""The plugin registry: decorators, lazy entries, entry points, checks and errors."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from cvg_bench import registry
from cvg_bench.methods.base import GuidanceMethod

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.fixture
def scratch_registry(monkeypatch):
    """Run a test against a copy of the method table, so test plugins do not leak."""
    registry.load_all()
    table = registry.registry("method")
    monkeypatch.setattr(table, "entries", dict(table.entries))
    return table


class LazyMethod(GuidanceMethod):
    """A method registered lazily by a test."""

    def make_hook(self, generator, spec):
        return None


class NotAMethod:
    pass


def test_builtins_are_listed_with_descriptions():
    assert "vanilla" in registry.names("method")
    assert "dummy" in registry.names("generator")
    assert registry.describe("method")["vanilla"].startswith("No guidance")


def test_unknown_name_lists_available_and_closest():
    with pytest.raises(registry.RegistryError) as err:
        registry.get("method", "vanila")
    msg = str(err.value)
    assert "unknown method 'vanila'" in msg and "Did you mean 'vanilla'" in msg
    assert "Available methods:" in msg and "vanilla" in msg


def test_unknown_kind_names_the_kinds():
    with pytest.raises(registry.RegistryError, match="benchmark, generator, labeller, method"):
        registry.get("metod", "vanilla")


def test_duplicate_name_fails(scratch_registry):
    @registry.register("method", "twice")
    class First(GuidanceMethod):
        def make_hook(self, generator, spec):
            return None

    with pytest.raises(ValueError, match="duplicate method plugin name 'twice'"):
        @registry.register("method", "twice")
        class Second(First):
            pass


def test_lazy_entry_resolves_on_first_get(scratch_registry):
    registry.register_lazy("method", "lazy-one", f"{__name__}:LazyMethod")
    assert isinstance(scratch_registry.entries["lazy-one"].target, str)
    assert registry.get("method", "lazy-one") is LazyMethod


def test_base_class_is_checked(scratch_registry):
    registry.register_lazy("method", "not-a-method", f"{__name__}:NotAMethod")
    with pytest.raises(TypeError, match="must be a subclass of .*GuidanceMethod"):
        registry.get("method", "not-a-method")


def test_wildcard_listing():
    assert registry.names("method", "van*") == ["vanilla"]
    assert registry.names("method", "zzz*") == []


def test_entry_points_register_third_party_plugins(monkeypatch, scratch_registry):
    ep = importlib.metadata.EntryPoint(name="method.from-ep", value=f"{__name__}:LazyMethod",
                                       group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None: [ep] if group == registry.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    registry.load_entry_points()
    assert scratch_registry.entries["from-ep"].source == "entry-point"
    assert registry.get("method", "from-ep") is LazyMethod


def test_build_checks_keys_and_types():
    with pytest.raises(TypeError, match=r"no config key 'framez'.*Did you mean 'frames'"):
        registry.build("generator", {"name": "dummy", "framez": 4})
    with pytest.raises(TypeError, match=r"'frames' = 'many' \(str\) is not .* int"):
        registry.build("generator", {"name": "dummy", "frames": "many"})
    gen = registry.build("generator", {"name": "dummy", "frames": 2, "delay_s": 0})
    assert gen.frames == 2


@pytest.mark.parametrize("kind", list(registry.KINDS))
def test_every_plugin_has_a_config_of_the_same_name(kind):
    """The config tree mirrors the registry, both ways."""
    files = {p.stem for p in (CONFIGS / kind).glob("*.yaml")}
    plugins = {n for n in registry.names(kind) if registry.registry(kind).entries[n].source == "builtin"}
    assert plugins == files, f"configs/{kind}/ and the {kind} registry differ"
    import yaml

    for stem in files:
        assert yaml.safe_load((CONFIGS / kind / f"{stem}.yaml").read_text())["name"] == stem


def test_builtins_table_matches_the_decorated_plugins():
    """Every @register'ed class of the plugin packages is listed in BUILTINS under its own
    module:Class, and every listed entry resolves to a class registered under that name."""
    import importlib
    import pkgutil

    found = {}
    for kind, (package_name, _) in registry.KINDS.items():
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package_name}.{info.name}")
            for obj in vars(module).values():
                if (isinstance(obj, type) and obj.__module__ == module.__name__
                        and "registered_name" in vars(obj)):
                    found.setdefault(kind, {})[obj.registered_name] = f"{obj.__module__}:{obj.__qualname__}"
    assert found == registry.BUILTINS
    for kind, table in registry.BUILTINS.items():
        for name in table:
            assert registry.get(kind, name).registered_name == name


RUN_IMPORTS = """
import sys
from cvg_bench.cli import main
rc = main(["run", "method=vanilla", "generator=dummy", "benchmark=shapes", "benchmark.limit=1",
           "benchmark.categories=[spatial_relationships]", "seeds=[0]", "scorer=[oracle]",
           "results_dir=" + sys.argv[1], "leaderboard=false"])
print("RC", rc)
print("MODULES", " ".join(sorted(m for m in sys.modules if m.startswith(("cvg_bench", "experiments")))))
"""


def test_a_run_imports_only_its_plugins_and_no_study(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", RUN_IMPORTS, str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert "RC 0" in proc.stdout, proc.stdout + proc.stderr
    modules = set(proc.stdout.split("MODULES", 1)[1].split())
    assert {"cvg_bench.methods.vanilla", "cvg_bench.generators.dummy", "cvg_bench.benchmarks.shapes",
            "cvg_bench.scorers.oracle"} <= modules
    unused = {t.split(":")[0] for table in registry.BUILTINS.values() for t in table.values()}
    unused -= {"cvg_bench.methods.vanilla", "cvg_bench.generators.dummy", "cvg_bench.benchmarks.shapes",
               "cvg_bench.scorers.oracle"}
    assert not unused & modules, sorted(unused & modules)
    studies = [m for m in modules if m.startswith("experiments") or m.rsplit(".", 1)[-1] in (
        "word_sensitivity", "quality_bar", "localisation", "guidance_report", "reference", "oracle_accuracy",
        "evaluate", "tiny_training")]
    assert not studies, studies
