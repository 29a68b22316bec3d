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

    def check_ready(self) -> None:
        """Raise before any generation when the scorer cannot run (e.g. weights missing)."""

    def version(self) -> str:
        """Evaluator identity recorded with every score (model id, revision...)."""
        return type(self).__name__

    @abstractmethod
    def score(self, video: Video, spec: PromptSpec) -> ScoreResult:
        """Score ``video`` (uint8, frames x H x W x 3) against ``spec``."""
