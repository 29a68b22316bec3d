"""Before any generation: every scorer can score every selected prompt, and its weights are here.

``run`` builds its scorers with :func:`checked_scorers` instead of building them blind, so a
run that could only record errors stops before the first video with one error that names the
scorer, the categories, the reason and the fix (for missing weights: what to download and the
config key that points at a local copy).

Which scorers a run has: the config group ``scorer`` (``scorer=[...]`` on the command line).
Without it, ``run.yaml`` takes the benchmark's own list, ``configs/benchmark/scorers/<name>.yaml``
(T2V-CompBench: ``vlm``, ``detector``, ``motion``; shapes: ``oracle``, ``quality``), and the
benchmark config's ``scorers`` key says which scorer judges which category
(``{category: [scorer, ...]}``, ``all`` for every category).

The checks, in order, all before anything is generated:

1. every scorer that scores a selected prompt's category (``Scorer.scores_category``) can score
   that prompt (``Scorer.can_score``: metadata present, prompt parseable, label known);
2. every selected prompt's category has a faithfulness scorer;
3. every scorer that scores a selected prompt has its weights on disk
   (``Scorer.missing_weights``: no loading, no network), then loads them (``check_ready``).

Scorers that score none of the selected prompts are left out of the run (they would only
write NaN). Each faithfulness scorer is wrapped so that its primary score feeds a record's
``faithfulness`` only for the categories it judges (the benchmark's ``scorers`` routes, else
the first listed scorer that scores the category): a ``vlm`` listed first must not give the
spatial prompts a NaN faithfulness.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping

from omegaconf import DictConfig, OmegaConf

from cvg_bench import registry
from cvg_bench.scorers._common import ScorerNotReady
from cvg_bench.scorers.base import Scorer, ScoreResult
from cvg_bench.types import PromptSpec, Video

log = logging.getLogger(__name__)

ALL = "all"  # the routes key for "every category"
MAX_PROMPTS_NAMED = 3


class PreflightError(ScorerNotReady, ValueError):
    """The run cannot score what it would generate; nothing was generated. (A ValueError, so
    the CLI prints it as one line.)"""


class RoutedScorer(Scorer):
    """A scorer whose primary score feeds its role's record column only for ``feeds``.

    Scores, details and the evaluator identity are the wrapped scorer's; only ``role`` changes
    per video: the wrapped role for a category in ``feeds``, ``"detail"`` (no column) otherwise.
    """

    def __init__(self, inner: Scorer, feeds: Iterable[str]) -> None:
        self.inner = inner
        self.feeds = frozenset(feeds)
        self.primary = inner.primary
        self.higher_is_better = inner.higher_is_better
        self.categories = inner.categories
        self.role = inner.role

    def check_ready(self) -> None:
        self.inner.check_ready()

    def missing_weights(self) -> Exception | None:
        return self.inner.missing_weights()

    def can_score(self, spec: PromptSpec) -> str | None:
        return self.inner.can_score(spec)

    def scores_category(self, category: str) -> bool:
        return self.inner.scores_category(category)

    def version(self) -> str:
        return self.inner.version()

    def score(self, video: Video, spec: PromptSpec) -> ScoreResult:
        self.role = type(self.inner).role if spec.category in self.feeds else "detail"
        return self.inner.score(video, spec)


def routes_of(benchmark_cfg: Any) -> dict[str, list[str]]:
    """The benchmark config's ``scorers`` routes, ``{category or "all": [scorer names]}``."""
    raw = benchmark_cfg.get("scorers") if benchmark_cfg is not None else None
    if raw is None:
        return {}
    if isinstance(raw, DictConfig):
        raw = OmegaConf.to_container(raw, resolve=True)
    if not isinstance(raw, Mapping):
        raise ValueError(f"benchmark.scorers={raw!r} must map a category (or 'all') to a list of "
                         "scorer names")
    out = {}
    for cat, names in raw.items():
        names = [names] if isinstance(names, str) else list(names or [])
        if not all(isinstance(n, str) for n in names):
            raise ValueError(f"benchmark.scorers.{cat}={names!r} must be a list of scorer names")
        out[str(cat)] = names
    return out


def judges_for(category: str, scorers: Mapping[str, Scorer],
               routes: Mapping[str, list[str]]) -> list[str]:
    """The faithfulness scorers judging ``category``, the one feeding ``faithfulness`` first:
    the routed ones present in the run, else every faithfulness scorer that scores it."""
    routed = routes.get(category, routes.get(ALL, []))
    names = [n for n in routed if n in scorers and scorers[n].role == "faithfulness"
             and scorers[n].scores_category(category)]
    if names:
        return names
    return [n for n, s in scorers.items() if s.role == "faithfulness" and s.scores_category(category)]


def _prompts(ids: list[str]) -> str:
    more = f" and {len(ids) - MAX_PROMPTS_NAMED} more" if len(ids) > MAX_PROMPTS_NAMED else ""
    return ", ".join(ids[:MAX_PROMPTS_NAMED]) + more


def check_scorers(scorers: Mapping[str, Scorer], specs: list[PromptSpec],
                  routes: Mapping[str, list[str]] | None = None, benchmark: str = "the benchmark",
                  load: bool = True) -> dict[str, Scorer]:
    """Run checks 1-3 (module docstring); return the scorers the selected prompts need, the
    faithfulness ones wrapped in :class:`RoutedScorer`. Raises :class:`PreflightError`."""
    routes = dict(routes or {})
    unknown = sorted({n for names in routes.values() for n in names} - set(registry.names("scorer")))
    if unknown:
        raise ValueError(f"benchmark.scorers names unknown scorer(s) {unknown}; accepted: "
                         f"{', '.join(registry.names('scorer'))}")
    if not scorers:
        raise PreflightError(
            f"no scorer is configured for {benchmark}: choose some with scorer=[...] "
            f"(accepted: {', '.join(registry.names('scorer'))}); nothing was generated")
    categories: dict[str, list[str]] = {}  # category -> prompt ids, in selection order
    for spec in specs:
        categories.setdefault(spec.category, []).append(spec.prompt_id)

    problems: list[str] = []
    # 1. can every scorer score the prompts of the categories it scores?
    for name, scorer in scorers.items():
        failing: dict[tuple[str, str], list[str]] = {}
        for spec in specs:
            if not scorer.scores_category(spec.category):
                continue
            reason = scorer.can_score(spec)
            if reason is not None:
                failing.setdefault((spec.category, reason), []).append(spec.prompt_id)
        for (cat, reason), ids in failing.items():
            problems.append(f"scorer {name!r} cannot score category {cat!r} "
                            f"(prompts {_prompts(ids)}): {reason}")
    # 2. does every category have a judge?
    for cat, ids in categories.items():
        if not judges_for(cat, scorers, routes):
            wanted = routes.get(cat, routes.get(ALL, []))
            hint = (f"its default is {wanted}: add them with +scorer=<name> or list them in "
                    f"scorer=[...]" if wanted else "add one with scorer=[...]")
            problems.append(f"no scorer of this run ({', '.join(scorers)}) scores category "
                            f"{cat!r} (prompts {_prompts(ids)}); {hint}")
    if problems:
        raise PreflightError(_message(benchmark, problems))

    used = {n: s for n, s in scorers.items() if any(s.scores_category(c) for c in categories)}
    for name in scorers.keys() - used.keys():
        log.warning("scorer %r scores none of the selected categories; left out of the run", name)
    cats_of = {n: [c for c in categories if s.scores_category(c)] for n, s in used.items()}
    # 3. weights: all missing ones in one message, then load
    for name, scorer in used.items():
        err = scorer.missing_weights()
        if err is not None:
            problems.append(f"scorer {name!r} (needed for {', '.join(cats_of[name])}): {err}")
    if problems:
        raise PreflightError(_message(benchmark, problems))
    if load:
        for name, scorer in used.items():
            try:
                scorer.check_ready()
            except ScorerNotReady as exc:
                raise PreflightError(_message(benchmark, [
                    f"scorer {name!r} (needed for {', '.join(cats_of[name])}): {exc}"])) from exc

    feeds: dict[str, list[str]] = {}
    for cat in categories:
        first = judges_for(cat, used, routes)[0]
        feeds.setdefault(first, []).append(cat)
    return {n: RoutedScorer(s, feeds.get(n, ())) if s.role == "faithfulness" else s
            for n, s in used.items()}


def _message(benchmark: str, problems: list[str]) -> str:
    head = (f"{benchmark}: the run's scorers cannot score the selected prompts, so nothing was "
            f"generated. ")
    body = " | ".join(p.replace("\n", " ").replace(" Nothing was generated yet.", "")
                      for p in problems)
    return head + body + " (other scorers: scorer=[...], see docs/scorers.md)"


def checked_scorers(cfg: DictConfig, benchmark: Any, specs: list[PromptSpec]) -> dict[str, Scorer]:
    """``run``'s scorers: built from ``cfg.scorer``, checked against the selected ``specs``
    (raises :class:`PreflightError` before any generation), routed per category."""
    scorers = {name: registry.build("scorer", scfg) for name, scfg in cfg.scorer.items()}
    name = f"benchmark {cfg.benchmark.name!r}"
    return check_scorers(scorers, specs, routes_of(cfg.benchmark), name)
