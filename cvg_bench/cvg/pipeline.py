"""`train component=classifier`: data -> dual-inversion feature cache -> CVG classifier.

Data on the shapes world: real videos (rendered, true labels) and synthetic videos (sampled
from the generator, labelled by the oracle: the one label of Y whose composition the video
passes; videos passing none or several are skipped). Each video is inverted under p+ and
p-; the cached features train the classifier with (and, for the leakage check, without)
dual inversion. Everything is deterministic from ``seed`` and resumable per shard.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from cvg_bench import registry
from cvg_bench.cvg.classifier import CVGClassifier
from cvg_bench.cvg.features import FeatureSpec
from cvg_bench.cvg.training import (
    Example,
    FeatureCache,
    accuracy,
    build_feature_cache,
    train_classifier,
)
from cvg_bench.records import atomic_write_json, config_hash, safe_name

log = logging.getLogger(__name__)


def oracle_label(video: np.ndarray, spec) -> str | None:
    """The label of Y whose composition ``video`` shows (None: none or several pass)."""
    from cvg_bench.shapes.grammar import Composition, composition_of
    from cvg_bench.shapes.oracle import judge

    comp = composition_of(spec)
    passing = [y for y in spec.label_set
               if judge(video, Composition(comp.category, comp.objects, y)).passed]
    return passing[0] if len(passing) == 1 else None


STREAMS = ("sequential", "indexed")


def _draw(generator, rng: np.random.Generator, category: str, split: str, video_seed: int,
          synthetic_fraction: float, render_cfg) -> Example | None:
    """One (video, p+, p-, source) from ``rng``; None when a synthetic video shows no single
    composition of Y (not a sample)."""
    from cvg_bench.shapes.grammar import Composition, composition_of, negative, sample_spec, spec_of
    from cvg_bench.shapes.render import render

    spec = sample_spec(rng, category, split)
    source = "synthetic" if rng.random() < synthetic_fraction else "real"
    if source == "real":
        video = render(spec, seed=video_seed, cfg=render_cfg)
    else:
        video = generator.sample(spec, seed=video_seed).video
        label = oracle_label(video, spec)
        if label is None:
            return None
        comp = composition_of(spec)
        spec = spec_of(Composition(comp.category, comp.objects, label))
    return video, spec, negative(spec, rng), source


class SequentialExamples:
    """The ``sequential`` stream: endless and deterministic, one rng over all examples (so
    example i needs examples 0..i-1 first; the committed classifier was trained on it).
    ``state``/``restore`` let a cache resume after its last finished shard without
    re-drawing (and re-sampling the synthetic videos of) the shards before it."""

    def __init__(self, generator, categories: list[str], split: str, seed: int,
                 synthetic_fraction: float, render_cfg: dict[str, Any]):
        from cvg_bench.shapes.render import RenderConfig

        self.generator, self.categories, self.split = generator, categories, split
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
                            self.render_cfg)
            self.i += 1
            if example is not None:
                return example

    def state(self) -> dict[str, Any]:
        return {"i": self.i, "rng": self.rng.bit_generator.state}

    def restore(self, state: dict[str, Any]) -> None:
        self.i = int(state["i"])
        self.rng.bit_generator.state = state["rng"]


def indexed_example(generator, categories: list[str], split: str, seed: int,
                    synthetic_fraction: float, render_cfg: dict[str, Any], i: int) -> Example:
    """Example i of the ``indexed`` stream: drawn from its own rng (seed, i, attempt), so any
    process makes any example without the ones before it (cache tasks split the stream)."""
    from cvg_bench.shapes.render import RenderConfig

    cfg = RenderConfig(**render_cfg)
    for attempt in range(1000):
        rng = np.random.default_rng([seed, i, attempt])
        video_seed = int(rng.integers(2**31 - 1))
        example = _draw(generator, rng, categories[i % len(categories)], split, video_seed,
                        synthetic_fraction, cfg)
        if example is not None:
            return example
    raise RuntimeError(f"example {i}: 1000 synthetic videos in a row showed no single composition")


def example_source(cfg: DictConfig, generator, categories: list[str], seed: int):
    """The configured stream (``data.stream``): an iterator (sequential) or i -> example."""
    stream = cfg.data.get("stream", "sequential")
    if stream not in STREAMS:
        raise ValueError(f"data.stream={stream!r}; accepted: {', '.join(STREAMS)}")
    args = (generator, categories, cfg.data.split, int(seed), float(cfg.data.synthetic_fraction),
            OmegaConf.to_container(cfg.data.render, resolve=True))
    if stream == "sequential":
        return SequentialExamples(*args)
    return lambda i: indexed_example(*args, i)


def feature_spec(cfg: DictConfig, generator) -> FeatureSpec:
    f = OmegaConf.to_container(cfg.features, resolve=True)
    if not f.get("layers"):  # default L: every cross-attention layer of the generator
        f["layers"] = generator.attention_layers()
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
    categories = list(cfg.categories or CATEGORIES)
    cache_root = Path(cfg.cache_dir) / cache_name(cfg, generator.version(), features, categories)
    started = time.time()
    caches = {}
    task, tasks = int(cfg.get("cache_task", 0)), int(cfg.get("cache_tasks", 1))
    for part, n, seed in (("train", cfg.data.train, cfg.seed), ("val", cfg.data.val, cfg.seed + 1)):
        caches[part] = build_feature_cache(generator, example_source(cfg, generator, categories, seed),
                                           features, FeatureCache(cache_root / part), int(n),
                                           int(cfg.data.shard_size), task=task, num_tasks=tasks)
    if tasks > 1:  # one array task of the cache build: the training is a later, single job
        missing = {part: caches[part].missing_shards(int(n), int(cfg.data.shard_size))
                   for part, n in (("train", cfg.data.train), ("val", cfg.data.val))}
        log.info("cache task %d/%d done under %s; shards still missing: %s (train once they "
                 "are all built, with cache_tasks=1)", task, tasks, cache_root, missing)
        return {"cache": str(cache_root), "cache_task": task, "cache_tasks": tasks,
                "missing_shards": missing, "cache_minutes": (time.time() - started) / 60}
    label_sets = {c: _union_labels(c, label_set) for c in categories}
    heads = head_types(cfg, categories)
    probe = caches["val"].load()[0]
    report: dict[str, Any] = {"features": features.to_dict(), "generator": generator.version(),
                              "categories": categories, "cache": str(cache_root),
                              "n_train": int(cfg.data.train), "n_val": int(cfg.data.val),
                              "head_types": heads,
                              "augment": list(cfg.optim.get("augment") or []),
                              "cache_minutes": (time.time() - started) / 60}
    vpos, vneg, vrows = caches["val"].load()
    report["val_sources"] = {s: sum(r["source"] == s for r in vrows) for s in ("real", "synthetic")}
    for key, dual, backbone in variants(cfg):
        model = CVGClassifier(features, label_sets, backbone,
                              num_layer_heads=probe.shape[3], frames=probe.shape[5],
                              aggregator=OmegaConf.to_container(cfg.aggregator),
                              head_types=heads,
                              meta={"generator": generator.version(), "dual": dual, "variant": key})
        result = train_classifier(model, caches["train"], caches["val"], dual=dual,
                                  seed=int(cfg.seed),
                                  checkpoint=checkpoint_path(cfg, cache_root, key, backbone, heads),
                                  **OmegaConf.to_container(cfg.optim))
        report[key] = {"backbone": backbone.get("name"), "dual": dual,
                       "val_acc_pos": accuracy(model, vpos, vrows),
                       "val_acc_neg": accuracy(model, vneg, vrows),
                       "final_loss": result["history"][-1]["loss"], "history": result["history"]}
        model.save(Path(cfg.out) if key == "dual" else Path(cfg.ablations_out) / key)
    report["minutes"] = (time.time() - started) / 60
    atomic_write_json(Path(cfg.out) / "report.json", report)
    log.info("classifier report: %s", json.dumps({k: v for k, v in report.items()
                                                   if not isinstance(v, dict) or "history" not in v}, indent=1))
    return report


def checkpoint_path(cfg: DictConfig, cache_root: Path, key: str, backbone: dict[str, Any],
                    heads: dict[str, str]) -> Path:
    """A training checkpoint is resumed only by the same variant, data size and settings."""
    settings = {"backbone": backbone, "aggregator": OmegaConf.to_container(cfg.aggregator),
                "optim": OmegaConf.to_container(cfg.optim), "seed": int(cfg.seed),
                "n_train": int(cfg.data.train), "n_val": int(cfg.data.val)}
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
    if cfg.get("compare_backbone_none", False) and backbone.get("name") != "none":
        out.append(("backbone_none", True, {"name": "none"}))
    return out


def cache_name(cfg: DictConfig, generator_version: str, features: FeatureSpec,
               categories: list[str]) -> str:
    """Cached features are reused only for the same generator, features and data stream."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    if data.get("stream") == "sequential":  # the stream before `stream` existed: same caches
        del data["stream"]
    key = {"features": features.to_dict(), "categories": categories, "seed": int(cfg.seed),
           "data": {k: v for k, v in data.items() if k not in ("train", "val")}}
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
