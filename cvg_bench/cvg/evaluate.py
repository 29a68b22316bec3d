"""Accuracy of a CVG classifier on a feature cache's validation split, read plainly and
symmetrised (``CVGClassifier.symmetrized_log_probs``), per category and, for motion, per
number of moving objects.

    python -m cvg_bench.cvg.evaluate cvg_bench/assets/cvg_classifier results/cvg_cache/<key>
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvg_bench.cvg.classifier import CVGClassifier
from cvg_bench.cvg.training import FeatureCache, batches_by_prompt_form


def group_of(row: dict[str, Any]) -> str:
    """The category, with motion split by how many objects move ("a" or "a/b")."""
    if row["category"] != "motion_binding":
        return row["category"]
    return f"motion_binding/{len(row['label'].split('/'))}obj"


@torch.no_grad()
def evaluate(clf: CVGClassifier, maps: torch.Tensor, rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """{group: {"n", "plain", "symmetrized"}}: argmax accuracy over each prompt's own Y, at
    every step of T (n counts video-steps)."""
    clf.eval()
    hits: dict[str, dict[str, list[bool]]] = {}
    for idx in batches_by_prompt_form(rows, 256, np.random.default_rng(0)):
        sub = [rows[i] for i in idx]
        category, allowed = sub[0]["category"], sub[0]["label_set"]
        target = torch.tensor([clf.label_index(category, r["label"]) for r in sub])
        for slot in range(maps.shape[1]):
            steps = torch.full((len(idx),), slot)
            for how, score in (("plain", clf.log_probs), ("symmetrized", clf.symmetrized_log_probs)):
                right = (score(maps[idx, slot], steps, category, allowed).argmax(-1) == target).tolist()
                for r, ok in zip(sub, right):
                    for group in {category, group_of(r)}:
                        hits.setdefault(group, {}).setdefault(how, []).append(ok)
    return {g: {"n": len(h["plain"]), **{k: float(np.mean(v)) for k, v in h.items()}}
            for g, h in sorted(hits.items())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("classifier", type=Path)
    parser.add_argument("cache", type=Path, help="a feature cache folder (holding val/)")
    parser.add_argument("--features", choices=("pos", "neg"), default="pos",
                        help="the p+ or the p- inversions")
    args = parser.parse_args(argv)
    pos, neg, rows = FeatureCache(args.cache / "val").load()
    result = evaluate(CVGClassifier.load(args.classifier), pos if args.features == "pos" else neg, rows)
    for group, r in result.items():
        print(f"{group:28s} n={r['n']:5d}  plain {r['plain']:.3f}  symmetrized {r['symmetrized']:.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
