"""The earlier `shapes` held-out leaderboard study (issues 5 and 6), superseded by the fixed
protocol ``python -m cvg_bench reproduce +experiment=shapes_heldout``, which alone makes the
committed reference tables; this study's tables are archived (results/reference/archive/).

1. Tune: every guided method runs a small grid (step size x guided steps) on the `seen`
   split (few prompts, one seed unless ``--tune-seeds``), on the categories the plan gives
   it: a method runs only where it can guide (layout_energy and cvg: spatial and motion;
   binding_energy: attribute binding; attend_excite: all four), and gets one setting for all
   of them.
2. Choose: per method, the best setting on `seen` by ``--score`` (:mod:`cvg_bench.select`).
3. Report: vanilla (on every planned category) and every method, with its chosen setting,
   on the `heldout` split over several seeds; leaderboards ranked by ``oracle/relation`` (``shapes_heldout.*``) and by
   ``oracle/pass`` (``shapes_heldout_pass.*``).

Every step is a plain `python -m cvg_bench ...` command (printed as it runs), and the run
store skips finished samples, so an interrupted script resumes where it stopped.

    python -m experiments.reference --out results/experiments_reference
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from cvg_bench.leaderboard import write_leaderboards
from cvg_bench.records import RunStore
from cvg_bench.select import choose_settings

# category group -> the guided methods run on it (the methods that can guide all of it)
PLAN = ("spatial_relationships,motion_binding=attend_excite,layout_energy,cvg",
        "consistent_attribute_binding,dynamic_attribute_binding=attend_excite,binding_energy")


def parse_plan(groups: list[str]) -> dict[str, list[str]]:
    """``["cat,cat=method,method", ...]`` -> method -> its categories, in plan order."""
    out: dict[str, list[str]] = {}
    for group in groups:
        cats, sep, methods = group.partition("=")
        if not sep or not cats or not methods:
            raise ValueError(f"plan group {group!r} is not 'category,...=method,...'")
        for method in methods.split(","):
            out.setdefault(method, [])
            out[method] += [c for c in cats.split(",") if c not in out[method]]
    return out


def run_cli(args: list[str], dry_run: bool = False) -> None:
    """Run ``python -m cvg_bench ARGS`` (printed first, so a log shows how to redo a step)."""
    cmd = [sys.executable, "-m", "cvg_bench", *args]
    print("+ python -m cvg_bench " + " ".join(shlex.quote(a) for a in args), flush=True)
    if not dry_run:
        subprocess.run(cmd, check=True)


def _reported_runs(heldout: Path, chosen: dict[str, Any], methods: list[str]) -> list[Path]:
    """The held-out run folders of the table: vanilla's and each method's chosen setting (a
    setting chosen by an earlier tuning may have left its own folder beside them)."""
    vanilla = sorted((heldout / "shapes").glob("vanilla__tiny__*"))
    if len(vanilla) != 1:
        raise ValueError(f"expected one vanilla run under {heldout / 'shapes'}, found "
                         f"{[p.name for p in vanilla]}")
    return vanilla + [RunStore(heldout, "shapes", m, "tiny", chosen["methods"][m]["best"]).root
                      for m in methods]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plan", action="append", default=None, metavar="CATS=METHODS",
                   help=f"category group and the guided methods run on it (repeatable); "
                        f"default: {' '.join(PLAN)}")
    p.add_argument("--etas", default="0.05,0.1,0.2")
    p.add_argument("--guided-steps", default="2,5")
    p.add_argument("--tune-limit", type=int, default=4, help="seen prompts per category")
    p.add_argument("--tune-seeds", default="0",
                   help="seen seeds (one seed, 8 videos per setting, cannot see a step size's "
                        "cost in validity on held-out: README Status)")
    p.add_argument("--seeds", default="0,1,2", help="held-out seeds")
    p.add_argument("--limit", type=int, default=None, help="held-out prompts per category")
    p.add_argument("--score", default="oracle/relation", help="what the tuning maximises")
    p.add_argument("--work", type=Path, default=Path("results/reference_runs"))
    p.add_argument("--out", type=Path, default=Path("results/experiments_reference"))
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    a = p.parse_args(argv)
    plan = parse_plan(a.plan or list(PLAN))
    every_cat = list(dict.fromkeys(c for cats in plan.values() for c in cats))
    common = ["generator=tiny", "benchmark=shapes", "leaderboard=false"]

    def cats(names: list[str]) -> str:
        return f"benchmark.categories=[{','.join(names)}]"

    tune, heldout = a.work / "tune_seen", a.work / "heldout"
    for method, method_cats in plan.items():
        run_cli(["run", "-m", f"method={method}", f"method.eta={a.etas}",
                 f"method.guided_steps={a.guided_steps}", "benchmark.split=seen", cats(method_cats),
                 f"benchmark.limit={a.tune_limit}", f"seeds=[{a.tune_seeds}]", f"results_dir={tune}",
                 *common],
                a.dry_run)
    if a.dry_run:
        return 0
    chosen = choose_settings([tune], a.score)
    chosen["categories"] = plan
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "chosen_settings.json").write_text(json.dumps(chosen, indent=1) + "\n")
    limit = [f"benchmark.limit={a.limit}"] if a.limit else []
    run_cli(["run", "method=vanilla", "benchmark.split=heldout", cats(every_cat), f"seeds=[{a.seeds}]",
             f"results_dir={heldout}", *limit, *common], False)
    for method, method_cats in plan.items():
        run_cli(["run", f"method={method}", *chosen["methods"][method]["overrides"],
                 "benchmark.split=heldout", cats(method_cats), f"seeds=[{a.seeds}]",
                 f"results_dir={heldout}", *limit, *common], False)
    reported = _reported_runs(heldout, chosen, list(plan))
    for score, stem in (("oracle/relation", "shapes_heldout"), ("oracle/pass", "shapes_heldout_pass")):
        out = a.work / f"leaderboard_{stem}"
        paths = write_leaderboards(reported, out, faithfulness=score)
        for kind in ("csv", "md", "tex"):
            target = a.out / f"{stem}.{kind}"
            target.write_text(paths[f"shapes/{kind}"].read_text())
        print(f"\n## held-out, faithfulness = {score}\n" + paths["shapes/md"].read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
