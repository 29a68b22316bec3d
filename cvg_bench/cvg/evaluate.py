"""Accuracy of a CVG classifier on a feature cache's validation split, read plainly and
symmetrised (``CVGClassifier.symmetrized_log_probs``), per category and, for motion, per
number of moving objects.

    python -m cvg_bench.cvg.evaluate cvg_bench/assets/cvg_classifier_v3 results/cvg_cache/<key> [--part heldout]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from cvg_bench.cvg.classifier import CVGClassifier
from cvg_bench.cvg.training import FeatureCache, accuracy


def group_of(row: dict[str, Any]) -> str:
    """The category, with motion split by how many objects move ("a" or "a/b")."""
    if row["category"] != "motion_binding":
        return row["category"]
    return f"motion_binding/{len(row['label'].split('/'))}obj"


@torch.no_grad()
def evaluate(clf: CVGClassifier, maps: torch.Tensor, rows: list[dict[str, Any]],
             features: str | None = None) -> dict[str, dict[str, float]]:
    """{group: {"n", "plain", "symmetrized"}}: argmax accuracy over each prompt's own Y, at
    every step of T (n counts video-steps). ``features``: "pos"/"neg", the prompt the maps
    were inverted under (default: the cache's tag; relative heads' targets depend on it)."""
    def groups(row: dict[str, Any]) -> set[str]:
        return {row["category"], group_of(row)}

    read = {how: accuracy(clf, maps, rows, score=score, groups=groups, features=features)
            for how, score in (("plain", clf.log_probs), ("symmetrized", clf.symmetrized_log_probs))}
    counts = Counter(g for r in rows for g in groups(r))
    return {g: {"n": counts[g] * maps.shape[1], **{how: read[how][g] for how in read}}
            for g in sorted(counts)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("classifier", type=Path)
    parser.add_argument("cache", type=Path, help="a feature cache folder (holding val/)")
    parser.add_argument("--part", choices=("val", "heldout"), default="val",
                        help="the validation videos, or the held-out compositions' (data.heldout_eval)")
    parser.add_argument("--features", choices=("pos", "neg"), default="pos",
                        help="the p+ or the p- inversions")
    args = parser.parse_args(argv)
    if not (args.cache / args.part).is_dir():
        raise SystemExit(f"{args.cache / args.part} not found: a cache folder holds "
                         f"{', '.join(p.name for p in args.cache.iterdir() if p.is_dir()) or 'nothing'}")
    pos, neg, rows = FeatureCache(args.cache / args.part).load()
    result = evaluate(CVGClassifier.load(args.classifier), pos if args.features == "pos" else neg,
                      rows, features=args.features)
    for group, r in result.items():
        print(f"{group:28s} n={r['n']:5d}  plain {r['plain']:.3f}  symmetrized {r['symmetrized']:.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
