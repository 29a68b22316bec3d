"""Step (b): from captured maps to per-entity maps, the classifier's input."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F

from cvg_bench.generators.base import AttentionMaps, AttentionSelection, PromptTokens
from cvg_bench.types import Entity, PromptSpec


@dataclass(frozen=True)
class FeatureSpec:
    """The sets T, L, H and the map geometry CVG uses; identical at training and inference.

    ``steps`` are indices into the sampler's schedule of ``num_inference_steps`` steps (0 = the
    first, noisiest step); ``layers``/``heads`` as in :class:`AttentionSelection`.
    """

    steps: tuple[int, ...] = (0, 1)
    layers: tuple[str, ...] = ()
    heads: tuple[int, ...] | None = None
    num_inference_steps: int = 25
    map_size: int = 8
    max_entities: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(int(s) for s in self.steps))
        object.__setattr__(self, "layers", tuple(self.layers))
        if self.heads is not None:
            object.__setattr__(self, "heads", tuple(int(h) for h in self.heads))
        if not self.layers:
            raise ValueError("FeatureSpec.layers is empty: name the cross-attention layers L")
        bad = [s for s in self.steps if not 0 <= s < self.num_inference_steps]
        if bad or not self.steps:
            raise ValueError(f"steps {list(self.steps)} must be non-empty indices in "
                             f"[0, num_inference_steps={self.num_inference_steps})")

    def selection(self, tokens: PromptTokens) -> AttentionSelection:
        return AttentionSelection(layers=self.layers, heads=self.heads, tokens=tokens.key_tokens)

    def to_dict(self) -> dict:
        return asdict(self)

    def check_same(self, other: "FeatureSpec", what: str = "classifier") -> None:
        """A classifier only reads the features it was trained on: any difference is an error."""
        if self != other:
            diff = {k: (v, getattr(other, k)) for k, v in self.to_dict().items()
                    if v != getattr(other, k)}
            raise ValueError(f"{what} was trained on other features (T, L, H, geometry): "
                             f"trained vs requested {diff}")


def kp_spec(spec: PromptSpec) -> PromptSpec:
    """K(p) of a prompt as the spec whose entities are its slots (the one definition, used by
    the feature cache and by guidance alike; docs/cvg-categories.md).

    Every category but the two attribute-binding ones: each entity's words (attribute +
    noun), relation words withheld: ``spec`` itself. consistent_attribute_binding (the
    shapes grammar puts each colour in ``relation_spans``): slot e = colour e + noun e, the
    entity phrase. dynamic_attribute_binding: slot 1 = the first colour word, slot 2 = the
    second ("from"/"to" and the noun withheld). A spec already written that way (colour
    words inside the entities' words, e.g. T2V-CompBench's phrases and states) is kept.
    """
    cat, ents, rel = spec.category, spec.entities, tuple(sorted(spec.relation_spans))
    if cat == "consistent_attribute_binding" and len(ents) == 2 and len(rel) == 2:
        slots = tuple(replace(e, word_spans=tuple(sorted({c, *e.word_spans})))
                      for e, c in zip(ents, rel))
        return replace(spec, entities=slots, relation_spans=())
    if cat == "dynamic_attribute_binding" and len(ents) == 1 and len(rel) == 2:
        slots = tuple(Entity(phrase=spec.prompt[a:b], noun=ents[0].noun,
                             attributes=(spec.prompt[a:b],), span=(a, b), word_spans=((a, b),))
                      for a, b in rel)
        return replace(spec, entities=slots, relation_spans=())
    if cat == "dynamic_attribute_binding" and len(ents) != 2:
        raise ValueError(f"K(p) of dynamic binding needs the two colour words (two relation "
                         f"spans of one entity, or two state entities): {spec.prompt!r} has "
                         f"{len(ents)} entities and {len(rel)} relation spans")
    return spec


def kp_tokens(generator, spec: PromptSpec) -> PromptTokens:
    """The generator's tokens of K(p): ``entity_tokens`` are the slots of ``kp_spec``."""
    return generator.prompt_tokens(kp_spec(spec))


def entity_maps(attn: AttentionMaps, tokens: PromptTokens, spec: FeatureSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-entity maps ``(layers, heads, max_entities, frames, s, s)`` and an entity mask.

    Each entity's map is the mean over its words' tokens (attribute + noun; relation tokens
    are never among them), resized to ``map_size`` and normalised to a spatial distribution
    per frame (mean 1), so the classifier sees where entities are, not how strongly the
    text attends. Missing entity slots are zero and masked out.
    """
    n_ent = len(tokens.entity_tokens)
    if n_ent > spec.max_entities:
        raise ValueError(f"prompt {tokens.prompt!r} has {n_ent} entities; this classifier reads "
                         f"at most max_entities={spec.max_entities}")
    slot = {tok: i for i, tok in enumerate(attn.tokens)}
    layers = []
    for layer in spec.layers:
        if layer not in attn.maps:
            raise KeyError(f"layer {layer!r} was not captured; captured: {attn.layers}")
        maps = attn.maps[layer]  # (heads, tokens, frames, h, w)
        heads, _, frames = maps.shape[:3]
        ents = []
        for ent_tokens in tokens.entity_tokens:
            m = maps[:, [slot[t] for t in ent_tokens]].mean(1)  # (heads, frames, h, w)
            m = F.interpolate(m.flatten(0, 1)[:, None], size=(spec.map_size,) * 2,
                              mode="area")[:, 0].unflatten(0, (heads, frames))
            ents.append(m / (m.mean(dim=(-2, -1), keepdim=True) + 1e-8))
        pad = maps.new_zeros(heads, frames, spec.map_size, spec.map_size)
        ents += [pad] * (spec.max_entities - n_ent)
        ents = torch.stack(ents, dim=1)  # (heads, entities, frames, s, s)
        layers.append(ents)
    n_heads = {x.shape[0] for x in layers}
    if len(n_heads) != 1:
        raise ValueError(f"selected layers have different head counts {sorted(n_heads)}: set heads")
    mask = torch.zeros(spec.max_entities, dtype=torch.bool)
    mask[:n_ent] = True
    return torch.stack(layers), mask
