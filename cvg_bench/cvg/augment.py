"""Symmetries of the shapes world as training augmentation for CVG's classifier.

Mirroring a video left-right turns "A on the left of B" into "A on the right of B" and a
leftward motion into a rightward one; mirroring top-bottom swaps above/below and up/down;
playing it backwards reverses every motion and keeps every layout. The entity maps of the
mirrored video are, to the generator's own approximate equivariance, the mirrored maps, so
one inverted video gives up to eight labelled feature sets at no inversion cost.

Colours are mirror- and time-invariant, but a colour change played backwards runs the other
way: dynamic binding's "a->b" becomes "b->a", and its relative label (``cvg.binding``)
"as_written" <-> "reversed"; consistent binding keeps every label.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# transform -> the dimension of (batch, |T|, L, H, E, F, s, s) it flips
TRANSFORMS: dict[str, int] = {"flip_x": -1, "flip_y": -2, "reverse_time": -3}

_SWAP = {
    "spatial_relationships": {
        "flip_x": {"on the left of": "on the right of", "on the right of": "on the left of"},
        "flip_y": {"above": "below", "below": "above"},
        "reverse_time": {},
    },
    "motion_binding": {  # per object: labels "a" or "a/b"
        "flip_x": {"left": "right", "right": "left"},
        "flip_y": {"up": "down", "down": "up"},
        "reverse_time": {"left": "right", "right": "left", "up": "down", "down": "up"},
    },
    "action_binding": {  # per object: growth is mirror-invariant; played backwards it shrinks
        "flip_x": {}, "flip_y": {},
        "reverse_time": {"growing": "shrinking", "shrinking": "growing"},
    },
    "object_interactions": {  # a mirrored approach is an approach; a reversed hit is no label
        "flip_x": {}, "flip_y": {}, "reverse_time": None,
    },
    "generative_numeracy": {"flip_x": {}, "flip_y": {}, "reverse_time": {}},  # counts stay
    "consistent_attribute_binding": {"flip_x": {}, "flip_y": {}, "reverse_time": {}},
    "dynamic_attribute_binding": {  # absolute "a->b": see _REVERSES; relative labels here
        "flip_x": {}, "flip_y": {},
        "reverse_time": {"as_written": "reversed", "reversed": "as_written"},
    },
}
# (category, transform) that reverse the order of a sequence label "a->b" (a change of state)
_REVERSES = {("dynamic_attribute_binding", "reverse_time")}


def check_transforms(transforms: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    unknown = [t for t in transforms if t not in TRANSFORMS]
    if unknown:
        raise ValueError(f"augmentations {unknown}; accepted: {', '.join(TRANSFORMS)}")
    return tuple(transforms)


def augmentable(category: str) -> bool:
    return category in _SWAP


def applicable(category: str, transforms: tuple[str, ...] = tuple(TRANSFORMS)) -> tuple[str, ...]:
    """The ``transforms`` that map every label of ``category`` to a label (None in the table:
    not a symmetry of the category, e.g. a reversed hit)."""
    table = _SWAP.get(category, {})
    return tuple(t for t in transforms if table.get(t) is not None)


def transform_label(category: str, label: str, transform: str) -> str:
    """The label of the transformed video (an error for a category without a table)."""
    if category not in _SWAP:
        raise ValueError(f"no symmetry table for category {category!r}; augmentable: "
                         f"{', '.join(_SWAP)}")
    swap = _SWAP[category][transform]
    if swap is None:
        raise ValueError(f"{transform} is not a symmetry of {category!r} (some label has no image)")
    if "->" in label:  # a change "a->b": backwards in time it is "b->a"
        parts = label.split("->")
        if (category, transform) in _REVERSES:
            parts = parts[::-1]
        return "->".join(swap.get(part, part) for part in parts)
    return "/".join(swap.get(part, part) for part in label.split("/"))  # "a/b": per object


def symmetry_group(transforms: tuple[str, ...] = tuple(TRANSFORMS)) -> list[tuple[str, ...]]:
    """Every composition of ``transforms`` (they commute and are involutions): 2^n elements."""
    return [tuple(t for k, t in enumerate(transforms) if mask >> k & 1)
            for mask in range(2 ** len(transforms))]


def apply_to_maps(maps: torch.Tensor, element: tuple[str, ...]) -> torch.Tensor:
    """``maps`` of any shape ending in (frames, s, s), transformed by a group element."""
    return maps.flip([TRANSFORMS[t] for t in element]) if element else maps


def apply_to_label(category: str, label: str, element: tuple[str, ...]) -> str:
    for t in element:
        label = transform_label(category, label, t)
    return label


def augment_batch(maps: list[torch.Tensor | None], rows: list[dict[str, Any]],
                  transforms: tuple[str, ...], rng: np.random.Generator
                  ) -> tuple[list[torch.Tensor | None], list[dict[str, Any]]]:
    """Apply each transform with probability 1/2 to the whole batch (one category): the maps
    (p+ and p-, shape ``(batch, |T|, L, H, E, F, s, s)``) are flipped, the video's label
    follows. The prompts do not change: a changed row keeps p+'s label as ``prompt_label``
    (relative heads read the video's label against it)."""
    if not transforms or not augmentable(rows[0]["category"]):
        return maps, rows
    chosen = [t for t in applicable(rows[0]["category"], transforms) if rng.random() < 0.5]
    if not chosen:
        return maps, rows
    element = tuple(chosen)
    maps = [apply_to_maps(m, element) if m is not None else None for m in maps]
    return maps, [{**r, "prompt_label": r.get("prompt_label", r["label"]),
                   "label": apply_to_label(r["category"], r["label"], element)} for r in rows]
