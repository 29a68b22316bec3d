"""Plugin registry: methods, benchmarks, generators, scorers and backbones, by name.

Three ways in, one table per kind:
- the built-ins, listed by name in :data:`BUILTINS` and imported only when used (as
  lm-eval's model mapping and timm's registry do), so a run imports only its own plugins;
  their classes also carry ``@register`` (which fills in the entry when the module loads);
- ``@register("method", "vanilla")`` on a class;
- ``register_lazy("method", "mine", "my_pkg.mod:MyMethod")``: imported on first use;
- entry points in the group ``cvg_bench.plugins`` named ``<kind>.<name>`` with the value
  ``module:attr`` (third-party packages), read once, lazily.
Every entry is checked against its kind's base class when it is resolved.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import importlib.metadata
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

T = TypeVar("T")

ENTRY_POINT_GROUP = "cvg_bench.plugins"

# kind -> (package holding the built-in plugins, "module:BaseClass")
KINDS: dict[str, tuple[str, str]] = {
    "method": ("cvg_bench.methods", "cvg_bench.methods.base:GuidanceMethod"),
    "benchmark": ("cvg_bench.benchmarks", "cvg_bench.benchmarks.base:Benchmark"),
    "generator": ("cvg_bench.generators", "cvg_bench.generators.base:Generator"),
    "scorer": ("cvg_bench.scorers", "cvg_bench.scorers.base:Scorer"),
    "backbone": ("cvg_bench.backbones", "cvg_bench.backbones.base:Backbone"),
    "labeller": ("cvg_bench.labellers", "cvg_bench.labellers.base:Labeller"),
}


# kind -> name -> "module:Class": every built-in plugin, imported on first use. A test checks
# that this table and the @register decorators in the plugin packages agree.
BUILTINS: dict[str, dict[str, str]] = {
    "method": {
        "vanilla": "cvg_bench.methods.vanilla:Vanilla",
        "attend_excite": "cvg_bench.methods.attend_excite:AttendExcite",
        "layout_energy": "cvg_bench.methods.layout_energy:LayoutEnergy",
        "binding_energy": "cvg_bench.methods.binding_energy:BindingEnergy",
        "cvg": "cvg_bench.methods.cvg:CVG",
    },
    "benchmark": {
        "shapes": "cvg_bench.benchmarks.shapes:ShapesBenchmark",
        "t2vcompbench": "cvg_bench.benchmarks.t2vcompbench:T2VCompBench",
        "vbench": "cvg_bench.benchmarks.vbench:VBench",
    },
    "generator": {
        "tiny": "cvg_bench.generators.tiny:TinyGenerator",
        "dummy": "cvg_bench.generators.dummy:DummyGenerator",
        "modelscope": "cvg_bench.generators.modelscope:ModelScopeGenerator",
        "zeroscope": "cvg_bench.generators.zeroscope:ZeroScopeGenerator",
        "wan": "cvg_bench.generators.wan:WanGenerator",
        "cogvideox": "cvg_bench.generators.cogvideox:CogVideoXGenerator",
    },
    "scorer": {
        "oracle": "cvg_bench.scorers.oracle:OracleScorer",
        "quality": "cvg_bench.scorers.quality:QualityScorer",
        "clip": "cvg_bench.scorers.clip:ClipScorer",
        "detector": "cvg_bench.scorers.detector:DetectorScorer",
        "motion": "cvg_bench.scorers.motion:MotionScorer",
        "vlm": "cvg_bench.scorers.vlm:VLMScorer",
    },
    "backbone": {
        "video-encoder": "cvg_bench.backbones.video_encoder:VideoEncoder",
        "none": "cvg_bench.backbones.none:NoBackbone",
        "hf-vision": "cvg_bench.backbones.hf_vision:HFVisionTower",
        "hf-vlm": "cvg_bench.backbones.hf_vlm:HFVLM",
    },
    "labeller": {
        "shapes": "cvg_bench.labellers.shapes:ShapesLabeller",
    },
}


class RegistryError(KeyError):
    """A plugin name or kind that cannot be resolved (message lists the accepted names)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


@dataclass
class Entry:
    name: str
    target: Any  # a class, or a "module:attr" string until resolved
    source: str  # "builtin", "lazy" or "entry-point"
    error: str | None = None


def _import_attr(spec: str) -> Any:
    if ":" not in spec:
        raise ValueError(f"lazy plugin target {spec!r} must look like 'package.module:attr'")
    module_name, attr = spec.split(":", 1)
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass
class Registry:
    """The table of one kind of plugin."""

    kind: str
    base_spec: str
    entries: dict[str, Entry] = field(default_factory=dict)

    @property
    def base(self) -> type:
        return _import_attr(self.base_spec)

    def add(self, name: str, target: Any, source: str) -> None:
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.kind} plugin name must be a non-empty string, got {name!r}")
        old = self.entries.get(name)
        if old is not None and isinstance(old.target, str) and old.target == _describe_target(target):
            old.target = target  # a listed built-in's module has loaded: keep its class
            return
        if old is not None and old.target is not target:
            raise ValueError(
                f"duplicate {self.kind} plugin name {name!r}: already registered by "
                f"{_describe_target(old.target)} ({old.source}), now by {_describe_target(target)}"
            )
        self.entries[name] = Entry(name, target, source)

    def resolve(self, name: str) -> type:
        if name not in self.entries:
            raise RegistryError(_unknown_message(self.kind, name, sorted(self.entries)))
        entry = self.entries[name]
        if isinstance(entry.target, str):
            entry.target = _import_attr(entry.target)
        base = self.base
        if not (isinstance(entry.target, type) and issubclass(entry.target, base)):
            raise TypeError(
                f"{self.kind} plugin {name!r} ({_describe_target(entry.target)}) "
                f"must be a subclass of {base.__module__}.{base.__qualname__}"
            )
        return entry.target


def _describe_target(target: Any) -> str:
    if isinstance(target, str):
        return target
    return f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', target)}"


def _unknown_message(kind: str, name: str, available: list[str]) -> str:
    close = difflib.get_close_matches(name, available, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}.{hint} Available {kind}s: {', '.join(available) or '(none)'}"


_REGISTRIES: dict[str, Registry] = {k: Registry(k, base) for k, (_, base) in KINDS.items()}
_builtins_loaded = False
_entry_points_loaded = False
_load_errors: dict[str, str] = {}


def registry(kind: str) -> Registry:
    if kind not in _REGISTRIES:
        raise RegistryError(_unknown_message("plugin kind", kind, sorted(_REGISTRIES)))
    return _REGISTRIES[kind]


def register(kind: str, name: str) -> Callable[[T], T]:
    """Class decorator: ``@register("method", "vanilla")``."""
    reg = registry(kind)

    def decorate(cls: T) -> T:
        reg.add(name, cls, "builtin")
        setattr(cls, "registered_name", name)
        return cls

    return decorate


def register_lazy(kind: str, name: str, target: str) -> None:
    """Register ``module:attr`` under ``name``; imported on first :func:`get`."""
    if ":" not in target:
        raise ValueError(f"lazy plugin target {target!r} must look like 'package.module:attr'")
    registry(kind).add(name, target, "lazy")


def load_builtins() -> None:
    """List the built-in plugins (:data:`BUILTINS`) without importing them."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for kind, table in BUILTINS.items():
        for name, target in table.items():
            reg = registry(kind)
            if name not in reg.entries:
                reg.entries[name] = Entry(name, target, "builtin")


def load_entry_points() -> None:
    """Register third-party plugins from the ``cvg_bench.plugins`` entry-point group."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        kind, _, name = ep.name.partition(".")
        if not name:
            raise ValueError(
                f"entry point {ep.name!r} in group {ENTRY_POINT_GROUP!r} must be named "
                f"'<kind>.<name>' with kind in {sorted(KINDS)}"
            )
        registry(kind).add(name, ep.value, "entry-point")


def load_all() -> None:
    load_builtins()
    load_entry_points()


def get(kind: str, name: str) -> type:
    """The plugin class registered as ``name`` (errors list the available names)."""
    load_all()
    return registry(kind).resolve(name)


def names(kind: str, pattern: str = "*") -> list[str]:
    """Registered names of a kind, filtered by a shell-style wildcard (timm's list_models)."""
    load_all()
    return sorted(n for n in registry(kind).entries if fnmatch.fnmatch(n, pattern))


def describe(kind: str) -> dict[str, str]:
    """name -> one-line description (the class docstring's first line)."""
    out = {}
    for name in names(kind):
        try:
            cls = get(kind, name)
            doc = (cls.__doc__ or "").strip().splitlines()
            out[name] = doc[0] if doc else "(no description)"
        except Exception as exc:  # noqa: BLE001 - a broken plugin is listed, not fatal
            out[name] = f"(cannot load: {type(exc).__name__}: {exc})"
    return out


def load_errors() -> dict[str, str]:
    """module -> the ImportError of each built-in whose module cannot be imported here (an
    optional dependency missing); imports every built-in, so `list` uses it, a run does not."""
    load_builtins()
    for table in BUILTINS.values():
        for target in table.values():
            module = target.split(":", 1)[0]
            if module in _load_errors:
                continue
            try:
                importlib.import_module(module)
            except ImportError as exc:
                _load_errors[module] = f"{type(exc).__name__}: {exc}"
    return dict(_load_errors)


def build(kind: str, cfg: Any, **extra: Any) -> Any:
    """Instantiate a plugin from its config node: ``name`` picks the class, the rest are kwargs.

    Keys are checked against the constructor's signature and annotations first, so a typo or
    a wrong type fails with the plugin, key, value and what is accepted.
    """
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg = dict(cfg)
    if "name" not in cfg:
        raise ValueError(f"{kind} config has no 'name' key: {cfg}")
    name = cfg.pop("name")
    cls = get(kind, name)
    check_kwargs(f"{kind} {name!r}", cls, cfg)
    return cls(**cfg, **extra)


def check_kwargs(what: str, cls: type, kwargs: dict[str, Any]) -> None:
    """Raise TypeError naming the key, value and accepted keys/types of ``cls.__init__``."""
    sig = inspect.signature(cls.__init__)
    params = {n: p for n, p in sig.parameters.items() if n != "self"}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    hints = typing.get_type_hints(cls.__init__)
    for key, value in kwargs.items():
        if key not in params:
            close = difflib.get_close_matches(key, list(params), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"{what} has no config key {key!r}.{hint} Accepted keys: "
                            f"{', '.join(params) or '(none)'}")
        expected = hints.get(key)
        if expected is not None and not _matches(value, expected):
            raise TypeError(f"{what}: config key {key!r} = {value!r} ({type(value).__name__}) "
                            f"is not of the accepted type {_type_name(expected)}")


def _matches(value: Any, expected: Any) -> bool:
    """A lenient isinstance for config values: int passes as float, unknown forms pass."""
    if expected is Any:
        return True
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if origin in (list, tuple, typing.Sequence):
        args = typing.get_args(expected)
        item = args[0] if args else Any
        return isinstance(value, (list, tuple)) and all(_matches(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(expected, type):
        return isinstance(value, expected)
    return True


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
