"""Relative labels of the attribute-binding categories (``relative`` heads).

A binding prompt's K(p) (``features.kp_spec``) holds its own colour words, so its maps can
say whether the video's colours are bound *as the prompt writes them* or permuted, never
which absolute colours the video shows. The head reads that relation: consistent binding
{as_written, swapped} (the video shows the prompt's pairing, or its two colours exchanged),
dynamic binding {as_written, reversed} (the video changes as written, or backwards). The
guidance target is always ``as_written``; the p- of dual inversion is the permutation of
p+'s colours, so the same video's true y reads ``swapped``/``reversed`` against p-'s words.
"""

from __future__ import annotations

AS_WRITTEN = "as_written"

# category -> (the separator of its absolute labels, its relative labels: as written first)
RELATIVE: dict[str, tuple[str, tuple[str, str]]] = {
    "consistent_attribute_binding": ("/", (AS_WRITTEN, "swapped")),   # "red/blue"
    "dynamic_attribute_binding": ("->", (AS_WRITTEN, "reversed")),    # "red->blue"
}


def relative_categories() -> tuple[str, ...]:
    return tuple(RELATIVE)


def relative_labels(category: str) -> tuple[str, ...]:
    """Y of a relative head: ``(as_written, swapped|reversed)``."""
    _check(category)
    return RELATIVE[category][1]


def permuted_label(category: str, label: str) -> str:
    """The label with its two colours exchanged: "red/blue" -> "blue/red", "red->blue" ->
    "blue->red" (the only wrong label whose words a binding prompt's maps carry)."""
    _check(category)
    sep = RELATIVE[category][0]
    parts = label.split(sep)
    if len(parts) != 2:
        raise ValueError(f"{category} label {label!r} is not two colours joined by {sep!r}")
    return sep.join(reversed(parts))


def relative_label(category: str, y: str | None, prompt_label: str | None) -> str | None:
    """The video's label ``y`` read against a prompt's own label: ``as_written`` when equal,
    ``swapped``/``reversed`` when ``y`` is the prompt's colours permuted, else None (a video
    whose colours are not the prompt's two: no relative label)."""
    _check(category)
    if y is None or prompt_label is None:
        return None
    if y == prompt_label:
        return AS_WRITTEN
    if y == permuted_label(category, prompt_label):
        return RELATIVE[category][1][1]
    return None


def _check(category: str) -> None:
    if category not in RELATIVE:
        raise ValueError(f"category {category!r} has no relative labels; relative heads: "
                         f"{', '.join(RELATIVE)}")
