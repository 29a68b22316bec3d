"""Step (d): C = trainable head over a frozen backbone over theta_agg's volumes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from cvg_bench import registry
from cvg_bench.backbones.base import Backbone
from cvg_bench.cvg.aggregator import AttentionAggregator
from cvg_bench.cvg.augment import apply_to_label, apply_to_maps, applicable, augmentable, symmetry_group
from cvg_bench.cvg.binding import AS_WRITTEN, relative_categories, relative_labels
from cvg_bench.cvg.features import FeatureSpec

HEAD_TYPES = ("joint", "per_entity", "relative")


class PerEntityHead(nn.Module):
    """A linear head whose joint labels ``"a/b"`` score as the sum of per-entity logits.

    ``logits[y] = sum_e u_e[y_e]`` with ``u = W' h + b'`` (one logit per entity and atomic
    label): still a linear head ``(W, b) = (M W', M b')`` over Y, with ``M`` the fixed map from
    (entity, atom) to joint label. The softmax over a prompt's label set is then the product
    of per-entity softmaxes, so "left" for the first object learns from every prompt where the
    first object moves left, instead of 16 joint labels each learning from a sixteenth of the
    data. Labels without "/" are the first entity's atom.
    """

    def __init__(self, in_dim: int, labels: list[str], max_entities: int) -> None:
        super().__init__()
        parts = [lab.split("/") for lab in labels]
        if max(len(p) for p in parts) > max_entities:
            raise ValueError(f"labels {labels} name more entities than max_entities={max_entities}")
        self.atoms = sorted({a for p in parts for a in p}, key=[a for p in parts for a in p].index)
        self.linear = nn.Linear(in_dim, max_entities * len(self.atoms))
        combine = torch.zeros(len(labels), max_entities * len(self.atoms))
        for row, p in enumerate(parts):
            for e, atom in enumerate(p):
                combine[row, e * len(self.atoms) + self.atoms.index(atom)] = 1.0
        self.register_buffer("combine", combine, persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h) @ self.combine.T


def build_head(kind: str, in_dim: int, labels: list[str], max_entities: int) -> nn.Module:
    if kind in ("joint", "relative"):  # relative: a joint head over the relative labels
        return nn.Linear(in_dim, len(labels))
    if kind == "per_entity":
        return PerEntityHead(in_dim, labels, max_entities)
    raise ValueError(f"head type {kind!r}; accepted: {', '.join(HEAD_TYPES)}")


class CVGClassifier(nn.Module):
    """s_t = softmax(W backbone(theta_agg(A_t)) + b) over the category's label set Y.

    One head (W, b) per category over that category's labels; a prompt whose own label set
    is smaller (e.g. one moving object vs two) masks the other logits. ``head_types`` makes a
    category's head ``per_entity`` (joint labels "a/b" factorised over entities, see
    ``PerEntityHead``) or ``relative`` (attribute binding: the labels of ``cvg.binding``,
    read against the prompt's own words, replacing the category's absolute labels; the
    prompt's absolute ``allowed`` set is ignored); the default is ``joint``. Only
    ``aggregator`` and ``heads`` are trainable; the backbone is frozen at construction.
    """

    def __init__(self, features: FeatureSpec, label_sets: dict[str, list[str]],
                 backbone: dict[str, Any], num_layer_heads: int, frames: int,
                 aggregator: dict[str, Any] | None = None, meta: dict[str, Any] | None = None,
                 head_types: dict[str, str] | None = None):
        super().__init__()
        self.features = features
        self.label_sets = {cat: list(labels) for cat, labels in label_sets.items()}
        self.backbone_cfg = dict(backbone)
        self.aggregator_cfg = dict(aggregator or {})
        self.num_layer_heads, self.frames = num_layer_heads, frames
        self.meta = dict(meta or {})
        unknown = sorted(set(head_types or {}) - set(self.label_sets))
        if unknown:
            raise ValueError(f"head_types name categories {unknown} that have no labels; "
                             f"categories: {', '.join(self.label_sets)}")
        self.head_types = {cat: (head_types or {}).get(cat, "joint") for cat in self.label_sets}
        for cat, kind in self.head_types.items():
            if kind == "relative":
                if cat not in relative_categories():
                    raise ValueError(f"head type 'relative' for {cat!r}: only "
                                     f"{', '.join(relative_categories())} have relative labels")
                self.label_sets[cat] = list(relative_labels(cat))
        self.backbone: Backbone = registry.build("backbone", self.backbone_cfg, frames=frames,
                                                 map_size=features.map_size).freeze()
        self.aggregator = AttentionAggregator(
            num_layers=len(features.layers), num_heads=num_layer_heads,
            max_entities=features.max_entities, frames=frames, map_size=features.map_size,
            num_steps=len(features.steps), out_channels=self.backbone.in_channels,
            **self.aggregator_cfg)
        self.heads = nn.ModuleDict({
            cat: build_head(self.head_types[cat], self.backbone.out_dim, labels, features.max_entities)
            for cat, labels in self.label_sets.items()})

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [*self.aggregator.parameters(), *self.heads.parameters()]

    def step_slot(self, step_index: int) -> int:
        """Position of a sampler step index in T (error if it is not a trained step)."""
        if step_index not in self.features.steps:
            raise ValueError(f"step {step_index} is not in the classifier's T = "
                             f"{list(self.features.steps)}")
        return self.features.steps.index(step_index)

    def logits(self, maps: torch.Tensor, step_slot: torch.Tensor, category: str) -> torch.Tensor:
        """``maps``: ``(batch, layers, heads, entities, frames, s, s)`` -> ``(batch, |Y|)``."""
        if category not in self.heads:
            raise ValueError(f"classifier has no head for category {category!r}; it has "
                             f"{', '.join(self.heads)}")
        volume = self.aggregator(maps, step_slot)
        return self.heads[category](self.backbone(volume))

    def label_mask(self, category: str, allowed: list[str] | tuple[str, ...] | None) -> torch.Tensor:
        labels = self.label_sets[category]
        if not allowed or self.head_types.get(category) == "relative":
            return torch.ones(len(labels), dtype=torch.bool)
        unknown = [a for a in allowed if a not in labels]
        if unknown:
            raise ValueError(f"labels {unknown} are not in the {category!r} head's label set {labels}")
        return torch.tensor([lab in allowed for lab in labels])

    def log_probs(self, maps: torch.Tensor, step_slot: torch.Tensor, category: str,
                  allowed: list[str] | tuple[str, ...] | None = None) -> torch.Tensor:
        """log s_t over Y, restricted to the prompt's own label set ``allowed``."""
        logits = self.logits(maps, step_slot, category)
        mask = self.label_mask(category, allowed).to(logits.device)
        return torch.log_softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)

    def symmetrized_log_probs(self, maps: torch.Tensor, step_slot: torch.Tensor, category: str,
                              allowed: list[str] | tuple[str, ...] | None = None) -> torch.Tensor:
        """Mean over the shapes world's symmetries g (mirrors, time reversal) of
        log s(g A)[g y]: the classifier read on all 8 transformed volumes (4 where time
        reversal is not a symmetry of the category), each label mapped with its transform (a
        log geometric mean; categories without symmetries: log s)."""
        if not augmentable(category):
            return self.log_probs(maps, step_slot, category, allowed)
        labels = self.label_sets[category]
        kept = set(labels if self.head_types.get(category) == "relative" else allowed or labels)
        group = symmetry_group(applicable(category))
        columns = []
        for g in group:
            moved = [apply_to_label(category, y, g) for y in labels]
            if any(m not in labels or (y in kept) != (m in kept) for y, m in zip(labels, moved)):
                raise ValueError(f"the label set {sorted(kept)} of {category!r} is not closed "
                                 f"under {'+'.join(g)}: cannot symmetrise")
            columns.append([labels.index(m) for m in moved])
        # one classifier pass over the 8 transformed copies, stacked along the batch
        stacked = torch.cat([apply_to_maps(maps, g) for g in group])
        log_s = self.log_probs(stacked, step_slot.repeat(len(group)), category, allowed)
        log_s = log_s.view(len(group), maps.shape[0], -1)
        return sum(log_s[k][:, cols] for k, cols in enumerate(columns)) / len(group)

    def label_index(self, category: str, label: str) -> int:
        labels = self.label_sets[category]
        if label not in labels:
            hint = (" (a relative head: read a video's label against the prompt's with "
                    "cvg.binding.relative_label; guide with guidance_label)"
                    if self.head_types.get(category) == "relative" else "")
            raise ValueError(f"label {label!r} is not in the {category!r} label set {labels}{hint}")
        return labels.index(label)

    def guidance_label(self, category: str, label: str) -> str:
        """The head's label to guide a prompt of ``label`` towards: the label itself, or
        ``as_written`` for a relative head (the video should bind colours as the prompt does)."""
        return AS_WRITTEN if self.head_types.get(category) == "relative" else label

    # --- files ------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"features": self.features.to_dict(), "label_sets": self.label_sets,
                "backbone": {**self.backbone_cfg, **self.backbone.config()},
                "num_layer_heads": self.num_layer_heads, "frames": self.frames,
                "aggregator": self.aggregator_cfg, "meta": self.meta,
                "head_types": self.head_types}

    def save(self, folder: Path | str) -> Path:
        """``classifier.safetensors`` (aggregator, heads, the frozen backbone) + ``config.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, folder / "classifier.safetensors")
        (folder / "config.json").write_text(json.dumps(self.config(), indent=1, sort_keys=True))
        return folder

    @staticmethod
    def fingerprint(folder: Path | str) -> str:
        """A short hash of what defines a saved classifier: its weights and its config."""
        h = hashlib.sha256()
        for name in ("config.json", "classifier.safetensors"):
            h.update((Path(folder) / name).read_bytes())
        return h.hexdigest()[:12]

    @classmethod
    def load(cls, folder: Path | str) -> "CVGClassifier":
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"no CVG classifier at {folder} (config.json missing); train "
                                    "one with `python -m cvg_bench train component=classifier`")
        cfg = json.loads((folder / "config.json").read_text())
        cfg["features"] = FeatureSpec(**cfg["features"])
        model = cls(**cfg)
        model.load_state_dict(load_file(folder / "classifier.safetensors"))
        model.backbone.freeze()
        return model
