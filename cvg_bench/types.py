"""Data shared by every part of the harness: prompt specs and videos."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# T2V-CompBench's seven compositional categories (its metadata file names); the shapes world
# and the benchmark adapters share them so leaderboards line up.
COMPOSITION_CATEGORIES: tuple[str, ...] = (
    "consistent_attribute_binding",
    "dynamic_attribute_binding",
    "spatial_relationships",
    "motion_binding",
    "action_binding",
    "object_interactions",
    "generative_numeracy",
)

# A video everywhere in the harness: uint8 array (frames, height, width, 3), RGB.
Video = np.ndarray


@dataclass(frozen=True)
class Entity:
    """One grounded object phrase of a prompt, e.g. "red circle" in "a red circle ...".

    ``span`` is the (start, end) character span of ``phrase`` in the prompt; ``words`` are the
    prompt words (noun + attributes) whose tokens are this entity's tokens K(p).
    """

    phrase: str
    noun: str
    attributes: tuple[str, ...] = ()
    span: tuple[int, int] = (0, 0)
    count: int = 1
    word_spans: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class PromptSpec:
    """A benchmark prompt with what CVG and the scorers need to know about its composition.

    ``label`` is the target composition y within ``label_set`` (the category's Y);
    ``relation_spans`` are the character spans of the relation words, withheld from K(p).
    """

    prompt_id: str
    prompt: str
    category: str
    entities: tuple[Entity, ...] = ()
    label: str | None = None
    label_set: tuple[str, ...] = ()
    relation_spans: tuple[tuple[int, int], ...] = ()
    split: str = "all"
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PromptSpec":
        d = dict(d)
        ents = tuple(
            Entity(
                **{
                    **e,
                    "attributes": tuple(e.get("attributes", ())),
                    "span": tuple(e.get("span", (0, 0))),
                    "word_spans": tuple(tuple(s) for s in e.get("word_spans", ())),
                }
            )
            for e in d.pop("entities", ())
        )
        d["label_set"] = tuple(d.get("label_set", ()))
        d["relation_spans"] = tuple(tuple(s) for s in d.get("relation_spans", ()))
        return cls(entities=ents, **d)
