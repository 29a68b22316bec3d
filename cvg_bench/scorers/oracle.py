"""Scorer ``oracle``: the shapes world's exact judge (:mod:`cvg_bench.shapes.oracle`)."""

from __future__ import annotations

from typing import ClassVar

from cvg_bench.registry import register
from cvg_bench.scorers.base import Scorer, ScoreResult
from cvg_bench.shapes import oracle
from cvg_bench.shapes.grammar import composition_of
from cvg_bench.types import PromptSpec, Video


@register("scorer", "oracle")
class OracleScorer(Scorer):
    """Exact faithfulness on shapes-world prompts.

    - ``pass`` (primary, the headline faithfulness): the strict verdict, every integrity check
      (each entity exactly one object of its colour and shape in every frame, nothing merged,
      vanished, morphed or extra, size and colour steady unless asked) AND the relation;
    - ``score``: the mean of the checks' and predicates' scores (>= 0.5 when it passes);
    - ``validity``: the fraction of (entity, frame) pairs found with their colour and shape;
    - ``relation``: a DIAGNOSTIC, the category's predicates alone (what the old v1 oracle
      judged); it passes broken videos (merged blobs, wrong shapes, extras), so never report
      it as faithfulness.

    ``details``: the relation predicates (name -> {passed, score, value}), as before; the
    integrity checks are ``judge(video, spec).checks``."""

    role: ClassVar[str] = "faithfulness"
    primary: ClassVar[str] = "pass"
    higher_is_better: ClassVar[dict[str, bool]] = {"pass": True, "score": True, "validity": True,
                                                   "relation": True}

    def __init__(self, min_validity: float = oracle.MIN_VALIDITY) -> None:
        if not 0.0 <= min_validity <= 1.0:
            raise ValueError(f"min_validity={min_validity} must be in [0, 1]")
        self.min_validity = min_validity

    def version(self) -> str:
        return oracle.VERSION

    def can_score(self, spec: PromptSpec) -> str | None:
        """Only shapes-world prompts (the grammar of :mod:`cvg_bench.shapes.grammar`)."""
        try:
            composition_of(spec)
        except ValueError as exc:  # PromptGrammarError
            return f"not a shapes-world prompt ({str(exc).splitlines()[0]})"
        return None

    def score(self, video: Video, spec: PromptSpec) -> ScoreResult:
        """Raises PromptGrammarError when the prompt is not a shapes-world prompt."""
        j = oracle.judge(video, spec, min_validity=self.min_validity)
        # relation: the composition's predicates hold, however broken the objects (a
        # diagnostic); pass also needs every integrity check and validity.
        relation = j.relation
        raw = {"pass": float(j.passed), "score": float(j.score), "validity": float(j.validity),
               "relation": float(relation)}
        return ScoreResult(raw=raw, normalised=dict(raw), details=j.predicates)
