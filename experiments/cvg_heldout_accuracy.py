"""CVG classifiers' accuracy on held-out compositions they never saw (issue 29):

    python -m experiments.cvg_heldout_accuracy NAME=CLASSIFIER_FOLDER ... --cache results/cvg_cache/<key>

Each classifier is read on the cache's ``heldout/`` part (rendered videos of held-out
compositions, p+ and p- both held out: ``data.heldout_eval``), on its p+ and its p-
inversions, per category, plainly and symmetrised (CVG guides with the symmetrised reading),
and on the ``val/`` part (seen compositions) for comparison. Writes ``--out``.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cvg_bench.cvg.classifier import CVGClassifier
from cvg_bench.cvg.evaluate import evaluate
from cvg_bench.cvg.training import FeatureCache
from cvg_bench.records import atomic_write_text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("classifiers", nargs="+", help="NAME=FOLDER")
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="path stem of the .json and .md")
    args = ap.parse_args(argv)
    parts = {p: FeatureCache(args.cache / p).load() for p in ("heldout", "val")}
    rows, table = [], []
    for item in args.classifiers:
        name, _, folder = item.partition("=")
        clf = CVGClassifier.load(folder)
        meta = clf.meta
        for part, (pos, neg, recs) in parts.items():
            for feat, maps in (("p+", pos), ("p-", neg)):
                res = evaluate(clf, maps, recs, features="pos" if feat == "p+" else "neg")
                for group, r in res.items():
                    rows.append({"classifier": name, "folder": folder, "part": part, "features": feat,
                                 "group": group, **r, "dual": meta.get("dual"),
                                 "data": meta.get("data", "unrecorded")})
        line = {"classifier": name}
        for part in ("heldout", "val"):
            for feat in ("p+", "p-"):
                for cat in ("spatial_relationships", "motion_binding"):
                    hit = [r for r in rows if r["classifier"] == name and r["part"] == part
                           and r["features"] == feat and r["group"] == cat]
                    if hit:
                        line[f"{part} {cat.split('_')[0]} {feat}"] = hit[0]["symmetrized"]
        table.append(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(
        {"cache": str(args.cache), "n": {p: len(parts[p][2]) for p in parts}, "rows": rows}, indent=1) + "\n")
    import pandas as pd

    md = pd.DataFrame(table).to_markdown(index=False, floatfmt=".3f")
    atomic_write_text(args.out.with_suffix(".md"),
                      f"Symmetrised accuracy (mean over the steps of T), {len(parts['heldout'][2])} held-out "
                      f"and {len(parts['val'][2])} seen validation videos of `{args.cache.name}`\n\n{md}\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
