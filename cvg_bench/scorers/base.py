"""Base class of scorers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

from cvg_bench.types import PromptSpec, Video


@dataclass
class ScoreResult:
    """Raw metric values, the same metrics normalised to [0, 1] with higher = better,
    and free-form per-predicate details."""

    raw: dict[str, float]
    normalised: dict[str, float]
    details: dict = field(default_factory=dict)


class Scorer(ABC):
    """Scores one video against its prompt spec.

    ``role`` says which leaderboard column the ``primary`` metric feeds ("faithfulness" or
    "quality"); ``higher_is_better`` (torchmetrics style) says which way each raw metric is good.
    """

    role: ClassVar[str] = "faithfulness"
    primary: ClassVar[str] = "score"
    higher_is_better: ClassVar[dict[str, bool]] = {}
    #: The prompt categories this scorer scores (None: any category). Others get NaN.
    categories: ClassVar[tuple[str, ...] | None] = None

    def check_ready(self) -> None:
        """Raise before any generation when the scorer cannot run (e.g. weights missing)."""

    def missing_weights(self) -> Exception | None:
        """The error :meth:`check_ready` would raise because a model's weights have no local
        copy, found without loading anything or touching the network; None when every model
        it needs is present (or it needs none)."""
        return None

    def scores_category(self, category: str) -> bool:
        """Whether prompts of ``category`` get a score (not NaN) from this scorer."""
        return self.categories is None or category in self.categories

    def can_score(self, spec: PromptSpec) -> str | None:
        """None when :meth:`score` can score ``spec`` (before any video exists), else the
        reason it cannot (its category is not scored, metadata it needs is missing, the prompt
        cannot be parsed). Cheap: no model is loaded. Subclasses add their own checks."""
        if not self.scores_category(spec.category):
            return (f"scores only {', '.join(self.categories or ())}, not {spec.category!r}")
        return None

    def version(self) -> str:
        """Evaluator identity recorded with every score (model id, revision...)."""
        return type(self).__name__

    @abstractmethod
    def score(self, video: Video, spec: PromptSpec) -> ScoreResult:
        """Score ``video`` (uint8, frames x H x W x 3) against ``spec``."""
