"""Base class of labellers (``configs/labeller/<name>.yaml``; registry kind ``labeller``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cvg_bench.types import PromptSpec


@dataclass
class Labelled:
    """What a labeller found: ``label`` (a member of the prompt's label set Y) or None when the
    video shows no label of Y or several (ambiguous: the video is not used), and why."""

    label: str | None
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)


class Labeller(ABC):
    """Says which label of ``spec.label_set`` a video shows (one, or None when ambiguous)."""

    #: categories this labeller can label (empty: any)
    categories: tuple[str, ...] = ()

    def version(self) -> str:
        return type(self).__name__

    def check_ready(self) -> None:
        """Raise before any generation when the labeller cannot run (weights missing...)."""

    def check_categories(self, categories: list[str] | tuple[str, ...]) -> None:
        """A clear error naming the categories this labeller cannot label, and those it can."""
        if not self.categories:
            return
        bad = [c for c in categories if c not in self.categories]
        if bad:
            name = getattr(self, "registered_name", type(self).__name__)
            raise ValueError(f"labeller {name!r} cannot label categories {bad}; it labels: "
                             f"{', '.join(self.categories)} (choose data.labeller or categories)")

    @abstractmethod
    def label(self, video: np.ndarray, spec: PromptSpec) -> Labelled:
        """The label of ``spec.label_set`` that ``video`` (uint8 (F, H, W, 3)) shows."""


def single(candidates: list[str], label_set: tuple[str, ...] | list[str], reason: str,
           details: dict[str, Any] | None = None) -> Labelled:
    """A Labelled for the one candidate in Y, or None (none or several)."""
    kept = [c for c in candidates if c in label_set]
    if len(kept) == 1:
        return Labelled(kept[0], reason, details or {})
    why = "no label of Y" if not kept else f"several labels of Y ({kept})"
    return Labelled(None, f"{why}: {reason}", details or {})
