"""Benchmark ``shapes``: the fixed prompt suite of the embedded shapes world.

12 prompts per category and split (seen | heldout), listed below so that ids never move:
``<category>-000`` .. ``-011`` are seen compositions, ``-012`` .. ``-023`` held-out ones
(rare compositions of seen parts, see ``cvg_bench.shapes.grammar.HELDOUT_RULES``). The lists
were drawn by :func:`draw_suite` (seed 2024) and then edited by hand to contain the
canonical examples and to balance forms and labels.
"""

from __future__ import annotations

import numpy as np

from cvg_bench.benchmarks.base import Benchmark
from cvg_bench.registry import register
from cvg_bench.shapes import grammar
from cvg_bench.types import PromptSpec

SUITE: dict[str, dict[str, tuple[str, ...]]] = {
    "consistent_attribute_binding": {
        "seen": (
            "a green circle and a yellow triangle",
            "a red triangle and a yellow circle",
            "a green circle and a yellow square",
            "a green circle and a red triangle",
            "a yellow circle and a blue triangle",
            "a green triangle and a yellow square",
            "a yellow triangle and a red circle",
            "a yellow triangle and a blue square",
            "a green circle and a blue square",
            "a red circle and a green triangle",
            "a red triangle and a yellow square",
            "a red circle and a blue square",
        ),
        "heldout": (
            "a blue circle and a yellow square",
            "a blue triangle and a red square",
            "a blue circle and a yellow triangle",
            "a blue circle and a red triangle",
            "a red square and a yellow circle",
            "a yellow square and a blue circle",
            "a green triangle and a blue circle",
            "a red square and a green triangle",
            "a yellow triangle and a red square",
            "a blue circle and a green square",
            "a red square and a yellow triangle",
            "a blue circle and a red square",
        ),
    },
    "dynamic_attribute_binding": {
        "seen": (
            "a circle changing from yellow to green",
            "a square changing from green to yellow",
            "a circle changing from red to blue",
            "a triangle changing from yellow to blue",
            "a square changing from yellow to red",
            "a triangle changing from red to blue",
            "a square changing from blue to red",
            "a square changing from blue to yellow",
            "a square changing from red to yellow",
            "a square changing from red to blue",
            "a circle changing from green to blue",
            "a triangle changing from red to green",
        ),
        "heldout": (
            "a circle changing from yellow to red",
            "a triangle changing from blue to green",
            "a circle changing from blue to green",
            "a triangle changing from blue to red",
            "a triangle changing from blue to yellow",
            "a circle changing from blue to red",
            "a circle changing from blue to yellow",
            "a circle changing from green to red",
            "a circle changing from green to yellow",
            "a triangle changing from yellow to red",
            "a triangle changing from green to yellow",
            "a triangle changing from green to red",
        ),
    },
    "spatial_relationships": {
        "seen": (
            "a yellow triangle on the right of a red circle",
            "a green square on the right of a yellow square",
            "a red square on the right of a blue square",
            "a yellow square above a red square",
            "a red square on the left of a yellow circle",
            "a green square on the left of a blue triangle",
            "a green triangle on the right of a yellow square",
            "a blue triangle above a green circle",
            "a red triangle on the right of a green circle",
            "a green circle on the left of a red triangle",
            "a red square below a blue triangle",
            "a red circle on the left of a blue square",
        ),
        "heldout": (
            "a red circle on the right of a blue circle",
            "a blue circle above a red circle",
            "a green circle below a red circle",
            "a red circle on the right of a blue square",
            "a yellow triangle below a red circle",
            "a red circle below a blue square",
            "a blue circle on the left of a red circle",
            "a red circle above a blue square",
            "a green square on the left of a red circle",
            "a yellow square above a red circle",
            "a red circle below a green square",
            "a red circle above a yellow square",
        ),
    },
    "motion_binding": {
        "seen": (
            "a red triangle moving down and a green triangle moving down",
            "a green triangle moving up and a yellow square moving left",
            "a blue circle moving up",
            "a green square moving up and a yellow square moving right",
            "a green square moving down and a blue triangle moving down",
            "a yellow square moving down and a blue square moving down",
            "a red circle moving down and a blue square moving left",
            "a green circle moving up",
            "a red circle moving left and a blue square moving right",
            "a blue circle moving down",
            "a red circle moving right",
            "a red circle moving left",
        ),
        "heldout": (
            "a red circle moving down and a yellow triangle moving down",
            "a red circle moving left and a yellow triangle moving down",
            "a yellow triangle moving up",
            "a yellow triangle moving down",
            "a yellow triangle moving down and a red square moving left",
            "a red triangle moving up and a yellow triangle moving down",
            "a yellow triangle moving up and a green triangle moving down",
            "a blue circle moving down and a yellow triangle moving up",
            "a yellow triangle moving up and a red square moving right",
            "a yellow triangle moving down and a green circle moving right",
            "a yellow triangle moving down and a red circle moving down",
            "a green circle moving up and a yellow triangle moving up",
        ),
    },
    "action_binding": {
        "seen": (
            "a yellow circle growing and a red circle growing",
            "a green circle growing and a red triangle growing",
            "a yellow triangle growing",
            "a blue circle shrinking and a green triangle growing",
            "a red circle growing and a blue square shrinking",
            "a blue square shrinking and a red square growing",
            "a red triangle growing",
            "a green square growing and a red triangle growing",
            "a red triangle growing and a green square growing",
            "a green circle shrinking",
            "a blue square shrinking and a red circle shrinking",
            "a blue square shrinking",
        ),
        "heldout": (
            "a red triangle shrinking",
            "a yellow triangle shrinking and a green square shrinking",
            "a red triangle shrinking and a yellow triangle shrinking",
            "a green triangle shrinking",
            "a green triangle shrinking and a red triangle growing",
            "a yellow triangle shrinking",
            "a blue triangle shrinking and a red square shrinking",
            "a blue triangle shrinking",
            "a yellow triangle shrinking and a green circle shrinking",
            "a blue circle shrinking and a red triangle shrinking",
            "a yellow square growing and a red triangle shrinking",
            "a red triangle shrinking and a yellow square growing",
        ),
    },
    "object_interactions": {
        "seen": (
            "a blue square moving away from a yellow circle",
            "a yellow triangle hitting a red triangle",
            "a yellow triangle approaching a green circle",
            "a blue circle moving away from a red triangle",
            "a green square moving away from a blue circle",
            "a red triangle hitting a green triangle",
            "a red circle hitting a blue square",
            "a red circle approaching a blue square",
            "a green circle hitting a blue square",
            "a green square approaching a red triangle",
            "a blue square approaching a yellow circle",
            "a red square moving away from a blue circle",
        ),
        "heldout": (
            "a blue square hitting a red square",
            "a blue square hitting a yellow circle",
            "a blue square hitting a red circle",
            "a blue circle hitting a red square",
            "a blue circle hitting a yellow triangle",
            "a blue circle hitting a red triangle",
            "a blue circle hitting a yellow circle",
            "a blue triangle hitting a yellow circle",
            "a blue triangle hitting a green square",
            "a blue circle hitting a green square",
            "a blue circle hitting a green circle",
            "a blue triangle hitting a green circle",
        ),
    },
    "generative_numeracy": {
        "seen": (
            "two blue circles",
            "four yellow squares",
            "one green triangle",
            "two blue circles and one red triangle",
            "two yellow triangles and three green circles",
            "three blue squares",
            "two red circles and one blue square",
            "three green circles and one red square",
            "three red circles",
            "one yellow triangle",
            "one red triangle",
            "one blue triangle and two red squares",
        ),
        "heldout": (
            "three yellow circles and three blue triangles",
            "one green square and three blue triangles",
            "three blue triangles and three green squares",
            "three blue triangles and two yellow triangles",
            "one yellow circle and three blue triangles",
            "three yellow triangles and two red squares",
            "one green circle and three red triangles",
            "three yellow circles and three green triangles",
            "three red triangles",
            "four green triangles",
            "one yellow circle and three green triangles",
            "four blue triangles",
        ),
    },
}
SPLIT_ORDER = ("seen", "heldout")  # ids count on across the splits in this order


def draw_suite(seed: int = 2024, per_split: int = 12) -> dict[str, dict[str, list[str]]]:
    """Distinct random prompts per category and split (how SUITE's lists were first drawn)."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, list[str]]] = {}
    for cat in grammar.CATEGORIES:
        out[cat] = {}
        for split in SPLIT_ORDER:
            prompts: list[str] = []
            while len(prompts) < per_split:
                p = grammar.sample_spec(rng, cat, split).prompt
                if p not in prompts:
                    prompts.append(p)
            out[cat][split] = prompts
    return out


@register("benchmark", "shapes")
class ShapesBenchmark(Benchmark):
    """The embedded shapes world: 7 categories x (12 seen + 12 held-out) exact prompts."""

    version = "shapes-suite-v1"

    @property
    def all_categories(self) -> tuple[str, ...]:
        return grammar.CATEGORIES

    @property
    def splits(self) -> tuple[str, ...]:
        return ("seen", "heldout", "all")

    def load(self, split: str) -> list[PromptSpec]:
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; accepted: {', '.join(self.splits)}")
        specs = []
        for cat in grammar.CATEGORIES:
            i = 0
            for part in SPLIT_ORDER:
                for prompt in SUITE[cat][part]:
                    if split in ("all", part):
                        specs.append(self.parse_prompt(prompt, f"{cat}-{i:03d}"))
                    i += 1
        return specs

    def parse_prompt(self, prompt: str, prompt_id: str) -> PromptSpec:
        """Any prompt of the grammar (not only the suite's); raises PromptGrammarError."""
        return grammar.parse(prompt, prompt_id)
