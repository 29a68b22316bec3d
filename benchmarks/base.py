"""Base class of benchmark adapters: a prompt suite turned into PromptSpecs."""

from __future__ import annotations

from abc import ABC, abstractmethod

from cvg_bench.types import PromptSpec


class Benchmark(ABC):
    """A suite of prompts with composition specs.

    ``scorers`` (config key) maps a category, or ``all``, to the scorers that judge it.
    Selection is shared by every adapter: ``categories`` (None = all), ``split``,
    ``limit`` (prompts per category, in suite order), and ``shard``/``num_shards`` to split
    the selected prompts across SLURM array tasks (prompt i goes to shard i % num_shards).
    """

    version: str = "unversioned"

    def __init__(
        self,
        categories: list[str] | None = None,
        split: str = "all",
        limit: int | None = None,
        shard: int = 0,
        num_shards: int = 1,
        scorers: dict[str, list[str]] | None = None,
    ) -> None:
        if num_shards < 1 or not 0 <= shard < num_shards:
            raise ValueError(f"shard={shard} must be in [0, num_shards={num_shards})")
        if limit is not None and limit < 1:
            raise ValueError(f"limit={limit} must be a positive number of prompts per category")
        self.categories = list(categories) if categories else None
        self.split = split
        self.limit = limit
        self.shard = shard
        self.num_shards = num_shards
        # {category or "all": [scorer names]}: which scorer judges which category
        # (cvg_bench/preflight.py reads it from the config; kept here for introspection)
        self.scorers = {str(k): list(v) for k, v in (scorers or {}).items()}

    @property
    @abstractmethod
    def all_categories(self) -> tuple[str, ...]:
        """Every category of the suite."""

    @property
    def splits(self) -> tuple[str, ...]:
        return ("all",)

    @abstractmethod
    def load(self, split: str) -> list[PromptSpec]:
        """Every prompt of ``split``, in the suite's order."""

    def parse_prompt(self, prompt: str, prompt_id: str) -> PromptSpec:
        """The spec of a free prompt (for scoring videos made outside the harness)."""
        raise NotImplementedError(
            f"benchmark {type(self).__name__} cannot parse free prompts; score its own suite"
        )

    def prompts(self) -> list[PromptSpec]:
        """The selected prompts of this shard."""
        if self.split not in self.splits:
            raise ValueError(
                f"unknown split {self.split!r} for benchmark {type(self).__name__}; "
                f"accepted: {', '.join(self.splits)}"
            )
        cats = self.categories or list(self.all_categories)
        bad = [c for c in cats if c not in self.all_categories]
        if bad:
            raise ValueError(
                f"unknown categories {bad}; accepted: {', '.join(self.all_categories)}"
            )
        suite = self.load(self.split)
        selected: list[PromptSpec] = []
        for cat in cats:
            in_cat = [p for p in suite if p.category == cat]
            selected.extend(in_cat[: self.limit] if self.limit else in_cat)
        return selected[self.shard :: self.num_shards]
