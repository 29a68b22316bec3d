"""`train component=classifier`: data -> dual-inversion feature cache -> CVG classifier.

Data (``data.source``, ``cvg/sources.py``): the shapes renderer (real videos with true labels,
plus a share of synthetic videos sampled from the generator and labelled by a labeller plugin,
``data.labeller``: the one label of Y the video shows; videos showing none or several are
skipped), a folder of labelled videos, or the generator's own samples on a prompt suite,
labelled; mixed by weight. Each video is inverted under p+ and p-; the cached features train
the classifier with (and, for the leakage check, without) dual inversion. Everything is
deterministic from ``seed`` and resumable per shard. The judge never trains the contestant:
no scorer and not the shapes oracle is imported on this path (tests/test_cvg_sources.py).
"""

from __future__ import annotations

import json
import logging
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from cvg_bench import registry
from cvg_bench.cvg.classifier import CVGClassifier
from cvg_bench.cvg.features import FeatureSpec
from cvg_bench.cvg.training import (
    Example,
    CacheUnion,
    FeatureCache,
    accuracy,
    build_feature_cache,
    train_classifier,
)
from cvg_bench.cvg.sources import (
    FolderSource,
    PromptParser,
    build_labeller,
    folder_digest,
    generate_folder,
    mix_plan,
    read_folder,
    source_weights,
    split_folder,
)
from cvg_bench.records import atomic_write_json, config_hash, safe_name

log = logging.getLogger(__name__)

STREAMS = ("sequential", "indexed")
DEFAULT_LABELLER = {"name": "shapes"}


def labeller_label(labeller, video: np.ndarray, spec) -> str | None:
    """The label of Y ``video`` shows by the labeller (None: none or several)."""
    if labeller is None:
        raise ValueError("synthetic videos need a labeller: set data.labeller (e.g. {name: shapes})")
    return labeller.label(video, spec).label


def _draw(generator, rng: np.random.Generator, category: str, split: str, video_seed: int,
          synthetic_fraction: float, render_cfg, labeller=None) -> Example | None:
    """One (video, p+, p-, source) from ``rng``; None (not a sample: drawn again) when a
    synthetic video shows no single composition of Y by the labeller, when the labeller's
    composition is outside ``split``, or when no wrong label keeps p- inside ``split``: with
    ``split=seen`` no held-out composition enters the data as p+ or as p-."""
    from cvg_bench.shapes.grammar import (Composition, composition_of, is_heldout, negative,
                                         sample_spec, spec_of)
    from cvg_bench.shapes.render import render

    spec = sample_spec(rng, category, split)
    if labeller is not None and labeller.categories and category not in labeller.categories:
        synthetic_fraction = 0.0  # a category the labeller cannot label: rendered videos only
    source = "synthetic" if rng.random() < synthetic_fraction else "real"
    if source == "real":
        video = render(spec, seed=video_seed, cfg=render_cfg)
    else:
        video = generator.sample(spec, seed=video_seed).video
        label = labeller_label(labeller, video, spec)
        if label is None:
            return None
        comp = composition_of(spec)
        spec = spec_of(Composition(comp.category, comp.objects, label))
        if split != "all" and is_heldout(spec) != (split == "heldout"):
            return None
    # binding p- is the colour swap (relative heads, docs/cvg-categories.md)
    neg = negative(spec, rng, split, permute_binding=True)
    if neg is None and split == "heldout":
        # the held-out evaluation (never trained on): a held-out composition with no held-out
        # wrong label (every binding and interaction one, 4 of 136 action ones) takes its p-
        # from any split; spatial, motion and numeracy always have one (no rng drawn before)
        neg = negative(spec, rng, "all", permute_binding=True)
    if neg is None:
        return None
    return video, spec, neg, source


class SequentialExamples:
    """The ``sequential`` stream: endless and deterministic, one rng over all examples (so
    example i needs examples 0..i-1 first; the committed classifier was trained on it).
    ``state``/``restore`` let a cache resume after its last finished shard without
    re-drawing (and re-sampling the synthetic videos of) the shards before it."""

    def __init__(self, generator, categories: list[str], split: str, seed: int,
                 synthetic_fraction: float, render_cfg: dict[str, Any], labeller=None):
        from cvg_bench.shapes.render import RenderConfig

        self.generator, self.categories, self.split = generator, categories, split
        self.labeller = labeller
        self.seed, self.synthetic_fraction = seed, synthetic_fraction
        self.render_cfg = RenderConfig(**render_cfg)
        self.rng = np.random.default_rng(seed)
        self.i = 0  # draws so far, rejected synthetic ones included (they set the video seed)

    def __iter__(self) -> "SequentialExamples":
        return self

    def __next__(self) -> Example:
        while True:
            example = _draw(self.generator, self.rng, self.categories[self.i % len(self.categories)],
                            self.split, self.seed * 1_000_003 + self.i, self.synthetic_fraction,
                            self.render_cfg, self.labeller)
            self.i += 1
            if example is not None:
                return example

    def state(self) -> dict[str, Any]:
        return {"i": self.i, "rng": self.rng.bit_generator.state}

    def restore(self, state: dict[str, Any]) -> None:
        self.i = int(state["i"])
        self.rng.bit_generator.state = state["rng"]


def indexed_example(generator, categories: list[str], split: str, seed: int,
                    synthetic_fraction: float, render_cfg: dict[str, Any], i: int,
                    labeller=None) -> Example:
    """Example i of the ``indexed`` stream: drawn from its own rng (seed, i, attempt), so any
    process makes any example without the ones before it (cache tasks split the stream)."""
    from cvg_bench.shapes.render import RenderConfig

    cfg = RenderConfig(**render_cfg)
    for attempt in range(1000):
        rng = np.random.default_rng([seed, i, attempt])
        video_seed = int(rng.integers(2**31 - 1))
        example = _draw(generator, rng, categories[i % len(categories)], split, video_seed,
                        synthetic_fraction, cfg, labeller)
        if example is not None:
            return example
    raise RuntimeError(f"example {i}: 1000 draws in a row made no example (synthetic videos showing "
                       f"no single composition of Y, or outside split={split!r}, or with no p- in it)")


def log_render_only(labeller, categories: list[str]) -> list[str]:
    """The categories whose synthetic share stays rendered (the labeller cannot label them)."""
    if labeller is None or not labeller.categories:
        return []
    only = [c for c in categories if c not in labeller.categories]
    if only:
        log.info("labeller %s cannot label %s: their training videos are all rendered (it "
                 "labels %s)", labeller.version(), ", ".join(only), ", ".join(labeller.categories))
    return only


def render_labeller(cfg: DictConfig):
    """The labeller of the render source's synthetic share (None when it has none)."""
    if float(cfg.data.get("synthetic_fraction", 0.0)) <= 0:
        return None
    return build_labeller(cfg.data.get("labeller") or DEFAULT_LABELLER)


def example_source(cfg: DictConfig, generator, categories: list[str], seed: int,
                   data: "DataSources | None" = None, part: str = "train"):
    """The configured examples: for the render source alone, its stream (``data.stream``):
    an iterator (sequential) or i -> example; for a folder, generated videos or a mix, the
    function i -> example of ``data`` (a :class:`DataSources`) for ``part``."""
    weights = source_weights(cfg.data.get("source", "render"))
    if weights != {"render": 1.0}:
        if data is None:
            raise ValueError("a folder, generate or mixed data.source needs its DataSources")
        return data.examples(part, seed)
    stream = cfg.data.get("stream", "sequential")
    if stream not in STREAMS:
        raise ValueError(f"data.stream={stream!r}; accepted: {', '.join(STREAMS)}")
    labeller = render_labeller(cfg)
    log_render_only(labeller, categories)
    args = (generator, categories, cfg.data.split, int(seed), float(cfg.data.synthetic_fraction),
            OmegaConf.to_container(cfg.data.render, resolve=True))
    if stream == "sequential":
        return SequentialExamples(*args, labeller=labeller)
    return lambda i: indexed_example(*args, i, labeller=labeller)


class DataSources:
    """The non-render sources of one training: the parsed folder(s) (train / val items), the
    generated folder, and the seeded plan mixing them with the renderer by weight."""

    def __init__(self, cfg: DictConfig, generator, categories: list[str]):
        self.cfg, self.generator, self.categories = cfg, generator, categories
        self.weights = source_weights(cfg.data.get("source", "render"))
        self.parser = PromptParser(cfg.data.get("benchmark") or {"name": "shapes"},
                                   str(cfg.data.get("split", "all")))
        self.skipped: list[dict[str, str]] = []
        self.folders: dict[str, dict[str, FolderSource]] = {}
        self.render_labeller = render_labeller(cfg) if "render" in self.weights else None
        log_render_only(self.render_labeller, categories)

    def generate(self, task: int = 0, tasks: int = 1) -> dict[str, Any]:
        """Sample + label this task's share of ``data.generate`` into its folder."""
        g = self.cfg.data.get("generate") or {}
        labeller = build_labeller(self.cfg.data.get("labeller") or DEFAULT_LABELLER)
        return generate_folder(self.generator, labeller, self.parser, generated_folder(self.cfg),
                               int(g.get("num_videos", 64)), int(self.cfg.seed), self.categories,
                               task=task, num_tasks=tasks)

    def load_folders(self) -> None:
        """Parse the folder and generated folder (train / val split) once."""
        seed, n_val = int(self.cfg.seed), int(self.cfg.data.val)
        roots = {}
        if "folder" in self.weights:
            if not self.cfg.data.get("folder"):
                raise ValueError("data.source=folder needs data.folder=PATH (a folder with "
                                 "prompts.jsonl and <id>.mp4)")
            roots["folder"] = (Path(self.cfg.data.folder), self.cfg.data.get("val_folder"))
        if "generate" in self.weights:
            roots["generate"] = (generated_folder(self.cfg), None)
        for name, (root, val_root) in roots.items():
            items, skipped = read_folder(root, self.parser, self.categories)
            self.skipped += [{**s, "folder": str(root)} for s in skipped]
            if val_root:
                val, vskipped = read_folder(Path(val_root), self.parser, self.categories)
                self.skipped += [{**s, "folder": str(val_root)} for s in vskipped]
                train = items
            else:
                val_share = n_val if len(self.weights) == 1 else round(self.weights[name] * n_val)
                train, val = split_folder(items, val_share, seed)
            self.folders[name] = {"train": FolderSource(train, self.parser, self.generator, seed),
                                  "val": FolderSource(val, self.parser, self.generator, seed + 1)}

    def examples(self, part: str, seed: int):
        """i -> example i of ``part`` (train | val), by the seeded mix plan."""
        if not self.folders and set(self.weights) - {"render"}:
            self.load_folders()
        n = int(self.cfg.data.train if part == "train" else self.cfg.data.val)
        plan = mix_plan(self.weights, n, seed)
        for name, folders in self.folders.items():
            need = sum(1 for s, _ in plan if s == name)
            if need > len(folders[part]):
                raise ValueError(f"data.{part}={n} takes {need} {part} videos from the {name} "
                                 f"source, which has {len(folders[part])}; accepted: at most "
                                 f"that many (lower data.{part} or the {name} weight)")
        render_args = (self.generator, self.categories, self.cfg.data.split, int(seed),
                       float(self.cfg.data.synthetic_fraction),
                       OmegaConf.to_container(self.cfg.data.render, resolve=True))

        def example(i: int) -> Example:
            name, j = plan[i]
            if name == "render":
                return indexed_example(*render_args, j, labeller=self.render_labeller)
            return self.folders[name][part].example(j)

        return example


def generated_folder(cfg: DictConfig) -> Path:
    """Where ``data.source=generate`` writes its videos (a folder source; inspect, reuse)."""
    g = cfg.data.get("generate") or {}
    return Path(g.get("out") or "results/cvg_generated")


# --- K(p), L, H, T per generator ------------------------------------------------------------------
FEATURE_KEYS = ("k", "steps", "layers", "heads", "num_inference_steps", "map_size", "max_entities")
K_CHOICES = ("entity_words",)


def generator_defaults(name: str) -> dict[str, Any]:
    """CVG's feature defaults of a generator: ``configs/generator/cvg/<name>.yaml`` (kept apart
    from ``configs/generator/<name>.yaml``, whose every key is a constructor argument)."""
    import yaml

    safe = safe_name(str(name))
    path = resources.files("cvg_bench.configs").joinpath("generator", "cvg", f"{safe}.yaml")
    if not path.is_file():
        folder = resources.files("cvg_bench.configs").joinpath("generator", "cvg")
        known = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
        raise ValueError(f"generator {name!r} has no CVG feature defaults (configs/generator/cvg/"
                         f"{safe}.yaml); set every features.* key ({', '.join(FEATURE_KEYS[1:])}) "
                         f"or add that file; generators with defaults: {', '.join(known)}")
    data = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(data) - set(FEATURE_KEYS) - {"notes"})
    if unknown:
        raise ValueError(f"configs/generator/cvg/{safe}.yaml: unknown keys {unknown}; accepted: "
                         f"{', '.join(FEATURE_KEYS)}, notes")
    return {k: v for k, v in data.items() if k != "notes"}


def feature_spec(cfg: DictConfig, generator) -> FeatureSpec:
    """T, L, H and the map geometry: ``features.*`` where set, else the generator's defaults.
    ``layers`` may name layers or index ``generator.attention_layers()``; [] = every layer."""
    f = OmegaConf.to_container(cfg.features, resolve=True)
    missing = [k for k in FEATURE_KEYS if f.get(k, None) is None and k != "num_inference_steps"]
    if missing:
        defaults = generator_defaults(cfg.generator.name)
        for k in missing:
            if k in defaults:
                f[k] = defaults[k]
    if f.get("heads") == "all":  # explicit "every head" (null means the generator's default)
        f["heads"] = None
    k = f.pop("k", None) or "entity_words"
    if k not in K_CHOICES:
        raise ValueError(f"features.k={k!r}; accepted: {', '.join(K_CHOICES)} (K(p) = the tokens "
                         "of every entity word: attributes and noun, relation words withheld)")
    if not f.get("layers"):  # default L: every cross-attention layer of the generator
        f["layers"] = generator.attention_layers()
    elif any(isinstance(x, int) for x in f["layers"]) or hasattr(generator, "attention_layers"):
        try:
            available = generator.attention_layers()
        except NotImplementedError:  # a plumbing generator: names are taken as given
            available = [x for x in f["layers"] if isinstance(x, str)]
        names = []
        for layer in f["layers"]:
            if isinstance(layer, int) and not isinstance(layer, bool):
                if not -len(available) <= layer < len(available):
                    raise ValueError(f"features.layers index {layer} is outside the generator's "
                                     f"{len(available)} cross-attention layers; accepted: "
                                     f"-{len(available)}..{len(available) - 1} or names "
                                     f"{available}")
                layer = available[layer]
            elif layer not in available:
                raise ValueError(f"features.layers {layer!r} is not a cross-attention layer of "
                                 f"the generator; accepted: {available}")
            names.append(layer)
        f["layers"] = names
    if f.get("num_inference_steps") is None:  # the generator's own schedule
        f["num_inference_steps"] = len(generator.timesteps())
    return FeatureSpec(**f)


def train_cvg_classifier(cfg: DictConfig) -> dict[str, Any]:
    """Build (or resume) the caches, train CVG's classifier and its ablations (p+ only,
    backbone none), each resumable from per-epoch checkpoints; save them and a report."""
    from cvg_bench.shapes.grammar import CATEGORIES, label_set

    torch.manual_seed(int(cfg.seed))
    generator = registry.build("generator", cfg.generator)
    features = feature_spec(cfg, generator)
    weights = source_weights(cfg.data.get("source", "render"))
    data = None if weights == {"render": 1.0} else DataSources(cfg, generator, [])
    categories = list(cfg.categories or (CATEGORIES if data is None else
                                         trainable_categories(data.parser)))
    if data is not None:
        data.categories = categories
    task, tasks = int(cfg.get("cache_task", 0)), int(cfg.get("cache_tasks", 1))
    started = time.time()
    generated = None
    if "generate" in weights:  # sample + label first: the folder must be whole before caching
        generated = data.generate(task, tasks)
        if generated["missing"]:
            log.info("generate: task %d/%d done; %d videos still to make under %s (re-run the "
                     "array: a task caches once every video is made)", task, tasks,
                     len(generated["missing"]), generated["out"])
            return {"generate": generated, "cache_task": task, "cache_tasks": tasks,
                    "missing_shards": None, "cache_minutes": (time.time() - started) / 60}
    groups = cache_groups(cfg, categories)
    if groups is not None and data is not None:
        raise ValueError(f"cache_groups needs data.source=render (got {cfg.data.source!r}): "
                         "a folder or generated source is one cache of its own categories")
    if groups is None:
        cache_root, caches = build_caches(cfg, generator, features, categories, data, task, tasks)
        sizes = {"n_train": int(cfg.data.train), "n_val": int(cfg.data.val)}
    else:  # one cache per group, each the cache a training on the group alone builds
        categories = [c for _, cats in groups for c in cats]
        built = [build_caches(gcfg, generator, features, cats, None, task, tasks)
                 for gcfg, cats in groups]
        group_roots = [str(root) for root, _ in built]
        cache_root = Path(cfg.cache_dir) / safe_name(
            f"{generator.version()}__groups-{config_hash([Path(r).name for r in group_roots])}")
        caches = {part: CacheUnion([c[part] for _, c in built])
                  for part in ("train", "val", "heldout") if all(part in c for _, c in built)}
        sizes = {"n_train": sum(int(g.data.train) for g, _ in groups),
                 "n_val": sum(int(g.data.val) for g, _ in groups),
                 "groups": [{"categories": cats, "train": int(g.data.train), "val": int(g.data.val),
                             "heldout_eval": int(g.data.get("heldout_eval") or 0), "cache": root}
                            for (g, cats), root in zip(groups, group_roots)]}
    if tasks > 1:  # one array task of the cache build: the training is a later, single job
        missing = cache_missing(caches, cfg, groups)
        log.info("cache task %d/%d done under %s; shards still missing: %s (train once they "
                 "are all built, with cache_tasks=1)", task, tasks, cache_root, missing)
        return {"cache": str(cache_root), "cache_task": task, "cache_tasks": tasks,
                "missing_shards": missing, "cache_minutes": (time.time() - started) / 60}
    vpos, vneg, vrows = caches["val"].load()
    if data is None:
        label_sets = {c: _union_labels(c, label_set) for c in categories}
    else:
        label_sets = head_label_sets(data.parser, categories, caches["train"].load()[2] + vrows)
    heads = head_types(cfg, categories)
    probe = vpos
    identity = generator_identity(cfg, generator)
    report: dict[str, Any] = {"features": features.to_dict(), "generator": generator.version(),
                              **identity, "sources": weights, "data": data_provenance(cfg, weights),
                              "skipped_prompts": data.skipped if data is not None else [],
                              "generated": generated,
                              "categories": categories, "cache": str(cache_root),
                              **sizes,
                              "head_types": heads,
                              "augment": list(cfg.optim.get("augment") or []),
                              "cache_minutes": (time.time() - started) / 60}
    tags = ("real", "synthetic") + tuple(sorted({r["source"] for r in vrows} - {"real", "synthetic"}))
    report["val_sources"] = {s: sum(r["source"] == s for r in vrows) for s in tags}
    for key, dual, backbone in variants(cfg):
        model = CVGClassifier(features, label_sets, backbone,
                              num_layer_heads=probe.shape[3], frames=probe.shape[5],
                              aggregator=OmegaConf.to_container(cfg.aggregator),
                              head_types=heads,
                              meta={"generator": generator.version(), **identity, "dual": dual,
                                    "variant": key, "data": data_provenance(cfg, weights)})
        result = train_classifier(model, caches["train"], caches["val"], dual=dual,
                                  seed=int(cfg.seed),
                                  checkpoint=checkpoint_path(cfg, cache_root, key, backbone, heads,
                                                             sizes),
                                  **OmegaConf.to_container(cfg.optim))
        report[key] = {"backbone": backbone.get("name"), "dual": dual,
                       "val_acc_pos": accuracy(model, vpos, vrows, features="pos"),
                       "val_acc_neg": accuracy(model, vneg, vrows, features="neg"),
                       **heldout_accuracy(model, caches.get("heldout")),
                       "final_loss": result["history"][-1]["loss"], "history": result["history"]}
        model.save(Path(cfg.out) if key == "dual" else Path(cfg.ablations_out) / key)
    report["minutes"] = (time.time() - started) / 60
    atomic_write_json(Path(cfg.out) / "report.json", report)
    log.info("classifier report: %s", json.dumps({k: v for k, v in report.items()
                                                   if not isinstance(v, dict) or "history" not in v}, indent=1))
    return report


def build_caches(cfg: DictConfig, generator, features: FeatureSpec, categories: list[str],
                 data, task: int, tasks: int) -> tuple[Path, dict[str, FeatureCache]]:
    """The train / val (and, for the render source, held-out) feature caches of ``categories``
    under ``cache_dir``, keyed by ``cache_name``; finished shards are reused."""
    cache_root = Path(cfg.cache_dir) / cache_name(cfg, generator.version(), features, categories)
    caches = {}
    for part, (n, seed) in cache_parts(cfg, rendered=data is None).items():
        if part == "heldout":  # rendered held-out compositions: the classifier never saw them
            examples = example_source(heldout_eval_cfg(cfg), generator, categories, seed)
        else:
            examples = example_source(cfg, generator, categories, seed, data=data, part=part)
        caches[part] = build_feature_cache(generator, examples, features,
                                           FeatureCache(cache_root / part), n,
                                           int(cfg.data.shard_size), task=task, num_tasks=tasks)
    return cache_root, caches


def cache_parts(cfg: DictConfig, rendered: bool = True) -> dict[str, tuple[int, int]]:
    """part -> (videos, stream seed) of a cache: train and val, and the held-out evaluation
    part when ``data.heldout_eval`` asks for it and the data are rendered."""
    parts = {"train": (int(cfg.data.train), int(cfg.seed)), "val": (int(cfg.data.val), int(cfg.seed) + 1)}
    n_heldout = int(cfg.data.get("heldout_eval") or 0)
    if n_heldout and rendered:
        parts["heldout"] = (n_heldout, int(cfg.seed) + 2)
    return parts


GROUP_KEYS = ("categories", "train", "val", "heldout_eval")


def cache_groups(cfg: DictConfig, categories: list[str]) -> list[tuple[DictConfig, list[str]]] | None:
    """``cache_groups``: [{categories: [...], train, val, heldout_eval}, ...] -> (the config a
    training on the group alone would have, the group's categories), or None when unset.
    Groups are disjoint; with ``categories`` set, their union must be it."""
    from cvg_bench.shapes.grammar import CATEGORIES

    raw = cfg.get("cache_groups")
    if not raw:
        return None
    out, seen = [], []
    for i, group in enumerate(OmegaConf.to_container(raw, resolve=True)):
        if not isinstance(group, dict) or not group.get("categories") or set(group) - set(GROUP_KEYS):
            raise ValueError(f"cache_groups[{i}] = {group!r}; accepted: a mapping with a non-empty "
                             f"'categories' list and optional {', '.join(GROUP_KEYS[1:])}")
        cats = list(group["categories"])
        bad = [c for c in cats if c not in CATEGORIES]
        if bad:
            raise ValueError(f"cache_groups[{i}] names unknown categories {bad}; accepted: "
                             f"{', '.join(CATEGORIES)}")
        twice = [c for c in cats if c in seen]
        if twice:
            raise ValueError(f"cache_groups[{i}] repeats {twice}: each category belongs to one group")
        seen += cats
        gcfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        gcfg.cache_groups, gcfg.categories = None, cats
        for key in GROUP_KEYS[1:]:
            if key in group:
                gcfg.data[key] = int(group[key])
        out.append((gcfg, cats))
    if cfg.get("categories") and set(cfg.categories) != set(seen):
        raise ValueError(f"categories {list(cfg.categories)} differ from the union of cache_groups "
                         f"{seen}; set categories=null or make them equal")
    return out


def cache_missing(caches: dict[str, Any], cfg: DictConfig,
                  groups: list[tuple[DictConfig, list[str]]] | None) -> dict[str, Any]:
    """part -> the shards still to build (with groups: part -> one list per group)."""
    def of(cache: FeatureCache, part: str, gcfg: DictConfig) -> list[int]:
        return cache.missing_shards(cache_parts(gcfg)[part][0], int(gcfg.data.shard_size))

    if groups is None:
        return {part: of(cache, part, cfg) for part, cache in caches.items()}
    return {part: [of(c, part, g) for c, (g, _) in zip(union.caches, groups)]
            for part, union in caches.items()}


def data_provenance(cfg: DictConfig, weights: dict[str, float]) -> dict[str, Any]:
    """What made the classifier's training data (saved with it; a table row can name it):
    the sources, the split, and the labeller of generated videos (None when there are none)."""
    generated = "generate" in weights or ("render" in weights and
                                          float(cfg.data.get("synthetic_fraction", 0.0)) > 0)
    labeller = OmegaConf.to_container(cfg.data.get("labeller") or DEFAULT_LABELLER, resolve=True) \
        if generated else None
    return {"sources": weights, "split": str(cfg.data.get("split", "all")),
            "synthetic_fraction": float(cfg.data.get("synthetic_fraction", 0.0)),
            "labeller": labeller, "folder": cfg.data.get("folder")}


def heldout_eval_cfg(cfg: DictConfig) -> DictConfig:
    """The held-out evaluation stream: rendered videos (labelled by construction, no
    generator samples, no labeller) of held-out compositions, p- held out too."""
    hcfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    hcfg.data.split, hcfg.data.synthetic_fraction, hcfg.data.source = "heldout", 0.0, "render"
    return hcfg


def heldout_accuracy(model, cache: FeatureCache | None) -> dict[str, Any]:
    """Accuracy on the held-out compositions (p+ and p-), when that cache was built."""
    if cache is None:
        return {}
    hpos, hneg, hrows = cache.load()
    return {"heldout_acc_pos": accuracy(model, hpos, hrows, features="pos"),
            "heldout_acc_neg": accuracy(model, hneg, hrows, features="neg"), "n_heldout": len(hrows)}


def generator_identity(cfg: DictConfig, generator) -> dict[str, str]:
    """The generator's registered name and a hash of its config, saved with the classifier
    (the method refuses another generator's maps by its version, as before)."""
    gcfg = OmegaConf.to_container(cfg.generator, resolve=True)
    return {"generator_name": str(gcfg.get("name")), "generator_config_hash": config_hash(gcfg)}


def trainable_categories(parser: PromptParser) -> list[str]:
    """The adapter's categories whose label set has two labels or more (p- needs a wrong one)."""
    sets = parser.label_sets() or {}
    return [c for c in parser.benchmark.all_categories if len(sets.get(c, ())) > 1]


def head_label_sets(parser: PromptParser, categories: list[str],
                    rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    """One head per category over every label the adapter gives it (else the cached rows')."""
    sets = parser.label_sets() or {}
    out = {}
    for c in categories:
        labels = list(sets.get(c, ()))
        for r in rows:
            if r["category"] == c:
                labels += [y for y in r["label_set"] if y not in labels]
        if labels:
            out[c] = labels
    return out


def checkpoint_path(cfg: DictConfig, cache_root: Path, key: str, backbone: dict[str, Any],
                    heads: dict[str, str], sizes: dict[str, Any] | None = None) -> Path:
    """A training checkpoint is resumed only by the same variant, data size and settings
    (``sizes``: n_train, n_val and, with cache groups, each group's)."""
    settings = {"backbone": backbone, "aggregator": OmegaConf.to_container(cfg.aggregator),
                "optim": OmegaConf.to_container(cfg.optim), "seed": int(cfg.seed),
                "n_train": int(cfg.data.train), "n_val": int(cfg.data.val)}
    if sizes and "groups" in sizes:
        settings.update(sizes)
    if heads:  # absent for joint heads: earlier checkpoints keep their names
        settings["head_types"] = heads
    return cache_root / "checkpoints" / f"{key}-{config_hash(settings)}.pt"


def head_types(cfg: DictConfig, categories: list[str]) -> dict[str, str]:
    """``head_types`` of the trained categories: category -> ``joint`` | ``per_entity``
    (unnamed categories: joint; names of categories not trained here are ignored)."""
    named = dict(OmegaConf.to_container(cfg.get("head_types") or {}, resolve=True))
    return {c: kind for c, kind in named.items() if c in categories}


def variants(cfg: DictConfig) -> list[tuple[str, bool, dict[str, Any]]]:
    """(name, dual, backbone) of every classifier trained: CVG's own, then the ablations."""
    backbone = OmegaConf.to_container(cfg.backbone, resolve=True)
    out = [("dual", True, backbone)]
    if cfg.compare_without_dual:
        out.append(("p_plus_only", False, backbone))
    raw = cfg.get("compare_backbones")
    others = (OmegaConf.to_container(raw, resolve=True) if isinstance(raw, ListConfig)
              else list(raw or []))
    if cfg.get("compare_backbone_none", False):
        others.append("none")
    done = {backbone.get("name")}
    for other in others:
        spec = {"name": other} if isinstance(other, str) else dict(other)
        if not spec.get("name"):
            raise ValueError(f"compare_backbones entry {other!r}; accepted: a backbone name or "
                             "{name: ..., ...} (configs/backbone/)")
        if spec["name"] in done:
            continue
        done.add(spec["name"])
        out.append((f"backbone_{safe_name(spec['name']).replace('-', '_')}", True, spec))
    return out


def cache_name(cfg: DictConfig, generator_version: str, features: FeatureSpec,
               categories: list[str]) -> str:
    """Cached features are reused only for the same generator, features and data stream."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    if data.get("stream") == "sequential":  # the stream before `stream` existed: same caches
        del data["stream"]
    weights = source_weights(data.pop("source", "render"))
    if weights == {"render": 1.0}:  # the render source alone: caches keep their earlier names
        for k in ("folder", "val_folder", "benchmark", "generate"):
            data.pop(k, None)
        if float(data.get("synthetic_fraction", 0.0)) <= 0:
            data.pop("labeller", None)
        elif "labeller" not in data:
            data["labeller"] = DEFAULT_LABELLER  # not the oracle: a new name for new labels
    else:
        data["source"] = weights
        data["folder_digest"] = folder_digest(data.get("folder"))
        data["val_folder_digest"] = folder_digest(data.get("val_folder"))
    key = {"features": features.to_dict(), "categories": categories, "seed": int(cfg.seed),
           **({"kp": "binding-v2"} if set(categories) & {"consistent_attribute_binding",
                                                         "dynamic_attribute_binding"} else {}),
           "data": {k: v for k, v in data.items() if k not in ("train", "val", "heldout_eval")}}
    return safe_name(f"{generator_version}__{config_hash(key)}")


def _union_labels(category: str, label_set_fn) -> list[str]:
    """Every label of a category over its prompt forms (one head per category)."""
    labels: list[str] = []
    for n in (1, 2):
        try:
            labels += [y for y in label_set_fn(category, n) if y not in labels]
        except ValueError:  # the category has no n-entity form
            continue
    return labels
