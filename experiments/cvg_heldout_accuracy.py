"""CVG classifiers' accuracy on held-out compositions they never saw (issue 29):

    python -m experiments.cvg_heldout_accuracy NAME=CLASSIFIER_FOLDER ... \
        --cache results/cvg_cache/<key> [--cache results/cvg_cache/<key2> ...] --out STEM

Each classifier is read on each cache's ``heldout/`` part (rendered videos of held-out
compositions, p+ and p- both held out: ``data.heldout_eval``), on its p+ and its p-
inversions, per category, plainly and symmetrised (CVG guides with the symmetrised reading),
and on the ``val/`` part (seen compositions) for comparison. Several caches (one per
``cache_groups`` group) are read as one; a classifier is read only on the categories it has a
head for. Writes ``--out``.{json,md}: one line per classifier and category.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cvg_bench.cvg.classifier import CVGClassifier
from cvg_bench.cvg.evaluate import evaluate
from cvg_bench.cvg.training import CacheUnion, FeatureCache
from cvg_bench.records import atomic_write_text

PARTS = ("heldout", "val")


def table_lines(rows: list[dict], names: list[str]) -> list[dict]:
    """One line per classifier and category: symmetrised accuracy, held-out then seen, p+ / p-."""
    lines = []
    for name in names:
        mine = [r for r in rows if r["classifier"] == name]
        for cat in dict.fromkeys(r["group"] for r in mine if "/" not in r["group"]):
            line = {"classifier": name, "category": cat}
            for part in PARTS:
                for feat in ("p+", "p-"):
                    hit = [r for r in mine if r["part"] == part and r["features"] == feat
                           and r["group"] == cat]
                    line[f"{part} {feat}"] = hit[0]["symmetrized"] if hit else None
            lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("classifiers", nargs="+", help="NAME=FOLDER")
    ap.add_argument("--cache", type=Path, required=True, action="append",
                    help="a feature cache folder (holding heldout/ and val/); repeat for several")
    ap.add_argument("--out", type=Path, required=True, help="path stem of the .json and .md")
    args = ap.parse_args(argv)
    parts = {p: CacheUnion([FeatureCache(c / p) for c in args.cache]).load() for p in PARTS}
    rows, names = [], []
    for item in args.classifiers:
        name, _, folder = item.partition("=")
        clf = CVGClassifier.load(folder)
        names.append(name)
        meta = clf.meta
        for part, (pos, neg, recs) in parts.items():
            keep = [i for i, r in enumerate(recs) if r["category"] in clf.label_sets]
            if not keep:
                continue
            for feat, maps in (("p+", pos), ("p-", neg)):
                sub = maps[keep]
                res = evaluate(clf, sub, [recs[i] for i in keep],
                               features="pos" if feat == "p+" else "neg")
                for group, r in res.items():
                    rows.append({"classifier": name, "folder": folder, "part": part, "features": feat,
                                 "group": group, **r, "dual": meta.get("dual"),
                                 "data": meta.get("data", "unrecorded")})
    caches = [str(c) for c in args.cache]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(
        {"caches": caches, "n": {p: len(parts[p][2]) for p in parts}, "rows": rows}, indent=1) + "\n")
    import pandas as pd

    md = pd.DataFrame(table_lines(rows, names)).to_markdown(index=False, floatfmt=".3f")
    names_md = ", ".join(f"`{Path(c).name}`" for c in caches)
    atomic_write_text(args.out.with_suffix(".md"),
                      f"Symmetrised accuracy (mean over the steps of T), {len(parts['heldout'][2])} "
                      f"held-out and {len(parts['val'][2])} seen validation videos of {names_md}\n\n"
                      f"{md}\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
