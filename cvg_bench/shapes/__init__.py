"""The shapes world: the project's embedded, exact testbed.

- :mod:`~cvg_bench.shapes.grammar`: prompts of T2V-CompBench's seven categories over coloured
  shapes, their entities, label y, label set Y, held-out split, p- sampling;
- :mod:`~cvg_bench.shapes.render`: deterministic videos of a composition;
- :mod:`~cvg_bench.shapes.oracle`: the exact judge (segmentation, tracks, predicates);
- :mod:`~cvg_bench.shapes.dataset`: rendered training data on disk.
"""

from cvg_bench.shapes.grammar import (
    CATEGORIES,
    PromptGrammarError,
    is_heldout,
    label_set,
    negative,
    parse,
    sample_spec,
    to_prompt,
)

__all__ = ["CATEGORIES", "PromptGrammarError", "is_heldout", "label_set", "negative", "parse",
           "sample_spec", "to_prompt"]
