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
from typing import Any, Iterator

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


def shapes_examples(generator, categories: list[str], split: str, seed: int,
                    synthetic_fraction: float, render_cfg: dict[str, Any]) -> Iterator[Example]:
    """An endless, deterministic stream of (video, p+, p-, source) over the categories."""
    from cvg_bench.shapes.grammar import Composition, composition_of, negative, sample_spec, spec_of
    from cvg_bench.shapes.render import RenderConfig, render

    rng = np.random.default_rng(seed)
    cfg = RenderConfig(**render_cfg)
    i = 0
    while True:
        category = categories[i % len(categories)]
        spec = sample_spec(rng, category, split)
        source = "synthetic" if rng.random() < synthetic_fraction else "real"
        video_seed = seed * 1_000_003 + i
        i += 1
        if source == "real":
            video = render(spec, seed=video_seed, cfg=cfg)
        else:
            video = generator.sample(spec, seed=video_seed).video
            label = oracle_label(video, spec)
            if label is None:  # the video shows no single composition of Y: not a sample
                continue
            comp = composition_of(spec)
            spec = spec_of(Composition(comp.category, comp.objects, label))
        yield video, spec, negative(spec, rng), source


def feature_spec(cfg: DictConfig, generator) -> FeatureSpec:
    f = OmegaConf.to_container(cfg.features, resolve=True)
    if not f.get("layers"):  # default L: every cross-attention layer of the generator
        f["layers"] = generator.attention_layers()
    f.setdefault("num_inference_steps", len(generator.timesteps()))
    if f["num_inference_steps"] is None:
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
    for part, n, seed in (("train", cfg.data.train, cfg.seed), ("val", cfg.data.val, cfg.seed + 1)):
        stream = shapes_examples(generator, categories, cfg.data.split, int(seed),
                                 float(cfg.data.synthetic_fraction),
                                 OmegaConf.to_container(cfg.data.render, resolve=True))
        caches[part] = build_feature_cache(generator, stream, features,
                                           FeatureCache(cache_root / part), int(n),
                                           int(cfg.data.shard_size))
    label_sets = {c: _union_labels(c, label_set) for c in categories}
    probe = caches["val"].load()[0]
    report: dict[str, Any] = {"features": features.to_dict(), "generator": generator.version(),
                              "categories": categories, "cache": str(cache_root),
                              "n_train": int(cfg.data.train), "n_val": int(cfg.data.val),
                              "cache_minutes": (time.time() - started) / 60}
    vpos, vneg, vrows = caches["val"].load()
    report["val_sources"] = {s: sum(r["source"] == s for r in vrows) for s in ("real", "synthetic")}
    for key, dual, backbone in variants(cfg):
        model = CVGClassifier(features, label_sets, backbone,
                              num_layer_heads=probe.shape[3], frames=probe.shape[5],
                              aggregator=OmegaConf.to_container(cfg.aggregator),
                              meta={"generator": generator.version(), "dual": dual, "variant": key})
        result = train_classifier(model, caches["train"], caches["val"], dual=dual,
                                  seed=int(cfg.seed), checkpoint=checkpoint_path(cfg, cache_root, key, backbone),
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


def checkpoint_path(cfg: DictConfig, cache_root: Path, key: str, backbone: dict[str, Any]) -> Path:
    """A training checkpoint is resumed only by the same variant, data size and settings."""
    settings = {"backbone": backbone, "aggregator": OmegaConf.to_container(cfg.aggregator),
                "optim": OmegaConf.to_container(cfg.optim), "seed": int(cfg.seed),
                "n_train": int(cfg.data.train), "n_val": int(cfg.data.val)}
    return cache_root / "checkpoints" / f"{key}-{config_hash(settings)}.pt"


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
