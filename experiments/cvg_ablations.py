"""CVG's ablations under a fixed protocol's report split (issue 29):

    python -m experiments.cvg_ablations [--experiment shapes_heldout] [--jobs 2] [--dry-run]
        [--reuse <an earlier protocol's work folder>]

Each ablation is CVG at the protocol's chosen setting with one thing changed: guided steps 1,
2 or 5 (those the chosen setting does not already use), the classifier trained on p+ only (no
dual inversion), and the classifier with the self-supervised ``video-encoder`` backbone (CVG's
own has backbone ``none``, chosen by seen validation accuracy). ``--reuse`` copies identical
runs (same run hash) from earlier protocols' ``ablations/`` or ``report/`` folders. They run on the protocol's report split (same prompts,
seeds, generator, scorers) with no re-tuning: eta stays CVG's chosen one. The table beside
them is recomputed from the protocol's committed records (vanilla, the best energy baseline,
CVG), with each row's per-prompt wins/ties/losses against vanilla and against CVG.

Runs go under ``<protocol work folder>/ablations/`` (resumable, like every run); the table to
``results/reference/<name>/ablations_cvg.{csv,md,json}``, stamped with the protocol's hash.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from cvg_bench.paired import compare, summarise
from cvg_bench.records import RunStore, atomic_write_text, confined, safe_name
from cvg_bench.reproduce import (Step, _common, fixed_overrides, method_table, provenance,
                                 read_exported, record_reused, reuse_runs, run_folder_of,
                                 run_steps, shipped_protocol, split_records, step_runs,
                                 write_contact_sheet)

#: label -> overrides on top of CVG's fixed and chosen settings
ABLATIONS = {
    "cvg[guided_steps=1]": ["method.guided_steps=1"],
    "cvg[guided_steps=2]": ["method.guided_steps=2"],
    "cvg[guided_steps=5]": ["method.guided_steps=5"],
    "cvg[p+ only]": ["method.classifier=cvg_classifier_v3_ablations/p_plus_only"],
    # cvg_classifier_v3/TRAINING.md says how it was trained
    "cvg[backbone video-encoder]": ["method.classifier=cvg_classifier_v3_ablations/backbone_video_encoder"],
}


def missing_classifiers() -> list[str]:
    """The ablations' classifiers not shipped yet (each names the command that trains it)."""
    from cvg_bench.methods.cvg import resolve_classifier

    out = []
    for label, extra in ABLATIONS.items():
        for o in extra:
            if o.startswith("method.classifier="):
                try:
                    resolve_classifier(o.split("=", 1)[1])
                except FileNotFoundError:
                    out.append(f"{label}: {o.split('=', 1)[1]} (not shipped; its command: "
                               "cvg_bench/assets/cvg_classifier_v3/TRAINING.md)")
    return out


def _replace(overrides: list[str], new: list[str]) -> list[str]:
    keys = {o.split("=", 1)[0] for o in new}
    return [o for o in overrides if o.split("=", 1)[0] not in keys] + new


def steps(protocol: dict, folder: Path, chosen: list[str],
          ablations: dict[str, list[str]] | None = None) -> list[Step]:
    spec = protocol["methods"]["cvg"]
    head, tail = _common(protocol, protocol["report"], spec["categories"], folder, None, False)
    return [Step("ablation", safe_name(label), [*head, "method=cvg",
                                                *_replace(fixed_overrides(spec) + chosen, extra), *tail],
                 len(spec["categories"]))
            for label, extra in (select(None, chosen) if ablations is None else ablations).items()]


def select(only: list[str] | None, chosen: list[str] | None = None) -> dict[str, list[str]]:
    """The ablations to run and tabulate: all, or those named by ``--only``; without those
    that change nothing of ``chosen`` (CVG's chosen overrides: 5 guided steps chosen, the
    guided_steps=5 ablation is CVG itself)."""
    bad = [o for o in (only or []) if o not in ABLATIONS]
    if bad:
        raise SystemExit(f"--only {', '.join(bad)}: no such ablation; accepted: {', '.join(ABLATIONS)}")
    keep = set(chosen or [])
    return {label: extra for label, extra in ABLATIONS.items()
            if (not only or label in only) and not set(extra) <= keep}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiment", default="shapes_heldout")
    ap.add_argument("--work-dir", default="results/reference_runs")
    ap.add_argument("--out-dir", default=None)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--only", action="append", default=None, metavar="LABEL",
                    help="run and tabulate only this ablation (repeatable), e.g. 'cvg[p+ only]'")
    ap.add_argument("--reuse", action="append", default=None, metavar="FOLDER",
                    help="an earlier protocol's work folder whose identical runs are copied (repeatable)")
    args = ap.parse_args(argv)
    protocol = shipped_protocol(args.experiment)
    if protocol is None:
        raise SystemExit(f"no configs/experiment/{args.experiment}.yaml")
    prov = provenance(protocol)
    out = Path(args.out_dir or f"results/reference/{safe_name(protocol['name'])}")
    settings = json.loads((out / "chosen_settings.json").read_text())
    if settings["protocol"]["hash"] != prov["hash"]:
        raise SystemExit(f"{out}/chosen_settings.json is of protocol {settings['protocol']['hash']}, "
                         f"not {prov['hash']}: run the protocol first (python -m cvg_bench reproduce "
                         f"+experiment={args.experiment})")
    chosen = settings["methods"]["cvg"]["overrides"]
    chosen_ablations = select(args.only, chosen)
    folder = Path(args.work_dir) / f"{safe_name(protocol['name'])}-{prov['hash']}" / "ablations"
    todo = steps(protocol, folder, chosen, chosen_ablations)
    for step in todo:
        print(step.line())
    if args.dry_run:
        return 0
    lacking = [m for m in missing_classifiers() if m.split(":")[0] in chosen_ablations]
    if lacking:
        raise SystemExit("train these ablation classifiers first: " + "; ".join(lacking))
    if args.reuse:
        sources = [confined(r, ".", "reuse") for r in args.reuse]
        lacking = [str(r) for r in sources if not r.is_dir()]
        if lacking:
            raise SystemExit(f"--reuse folder(s) not found: {', '.join(lacking)}")
        record_reused(folder.parent, reuse_runs(todo, folder, sources, "."))
    run_steps(todo, args.jobs, folder.parent / "logs")

    ref = read_exported(out / f"records_{protocol['report']['split']}.jsonl.gz")
    keep = [protocol["baseline"], "cvg"] + [m for m in protocol["methods"] if m not in ("cvg",)]
    cats = set(protocol["methods"]["cvg"]["categories"])
    ref = ref[ref["method"].isin(keep) & ref["category"].isin(cats)]
    abl = split_records([folder], {**protocol, "methods": {"cvg": protocol["methods"]["cvg"]}}, "report")
    # each ablation's run, by the run folder its own overrides compose to
    abl_dirs = {label: run_folder_of(overrides)
                for step, label in zip(todo, chosen_ablations) for overrides in step_runs(step)}
    labels = {d.name.rsplit("__", 1)[1]: label for label, d in abl_dirs.items()}
    abl = abl[abl["run_hash"].isin(labels)].copy()
    abl["method"] = abl["run_hash"].map(labels)
    records = pd.concat([ref, abl], ignore_index=True)
    table = method_table(records, protocol["headline"], protocol["validity"], protocol["baseline"])
    key = ["prompt_id", "category", "seed"]
    score = records.assign(value=[s.get(protocol["headline"]) for s in records["scores_norm"]])
    cvg = score[score["method"] == "cvg"]
    for m in table.index:
        if m in (protocol["baseline"], "cvg"):
            continue
        s = summarise(compare(cvg[key + ["value"]], score[score["method"] == m][key + ["value"]]), "x").iloc[-1]
        table.loc[m, ["vs_cvg_wins", "vs_cvg_ties", "vs_cvg_losses", "vs_cvg_p"]] = [
            s["wins"], s["ties"], s["losses"], s["sign_test_p"]]
    def wtl(row, prefix: str) -> str:
        if pd.isna(row.get(f"{prefix}_wins")):
            return "-"
        return (f"{int(row[f'{prefix}_wins'])}/{int(row[f'{prefix}_ties'])}/{int(row[f'{prefix}_losses'])}"
                f" (p={row[f'{prefix}_p']:.2g})")

    shown = pd.DataFrame({
        "method": table.index, "run_hash": table["run_hash"].values,
        **{c: [f"{v:.3f}" for v in table[c]] for c in sorted(cats)},
        "overall": [f"{m:.3f} ± {e:.3f}" for m, e in zip(table["overall"], table["overall_se"])],
        "Δvalidity vs vanilla": [f"{v:+.3f}" for v in table["validity_vs_baseline"]],
        "W/T/L vs vanilla": [wtl(r, "vs_baseline") for _, r in table.iterrows()],
        "W/T/L vs cvg": [wtl(r, "vs_cvg") for _, r in table.iterrows()]})
    setting = " ".join(o for o in chosen if o.split("=")[0] in ("method.eta", "method.guided_steps"))
    title = (f"CVG ablations, `{protocol['report']['split']}` split, {protocol['headline']}, "
             f"{len(protocol['report']['seeds'])} seeds; {prov['note']}; CVG's chosen setting: {setting}")
    atomic_write_text(out / "ablations_cvg.csv", table.reset_index().to_csv(index=False))
    atomic_write_text(out / "ablations_cvg.md", f"## {title}\n\n"
                      + shown.to_markdown(index=False, disable_numparse=True) + "\n")
    atomic_write_text(out / "ablations_cvg.json", json.dumps(
        {"title": title, "protocol": prov, "ablations": chosen_ablations, "chosen": chosen,
         "rows": json.loads(table.reset_index().to_json(orient="records"))}, indent=1) + "\n")
    print((out / "ablations_cvg.md").read_text())
    sheet = ablation_contact_sheet(records, protocol, folder.parent / "report", abl_dirs, out)
    if sheet is not None:
        print(f"contact sheet: {sheet}")
    return 0


def ablation_contact_sheet(records: pd.DataFrame, protocol: dict, report_dir: Path,
                           abl_dirs: dict[str, Path], out: Path) -> Path | None:
    """The protocol's contact-sheet prompts and seeds, one column each for vanilla, CVG and
    every ablation (the videos from the protocol's report runs and the ablation runs)."""
    columns = [protocol["baseline"], "cvg", *abl_dirs]
    df = records[records["method"].isin(columns) & records["category"].isin(
        protocol["methods"]["cvg"]["categories"])].copy()
    df["_order"] = df["method"].map({m: i for i, m in enumerate(columns)})
    df = df.sort_values(["_order", "category", "prompt_id", "seed"], kind="stable")
    hashes = df.drop_duplicates("method").set_index("method")["run_hash"]
    run_dirs = {m: RunStore(report_dir, protocol["benchmark"], m, protocol["generator"], hashes[m]).root
                for m in (protocol["baseline"], "cvg") if m in hashes}
    return write_contact_sheet(df, {**run_dirs, **abl_dirs}, protocol.get("contact_sheet") or {},
                               out / "contact_sheet_ablations.png")


if __name__ == "__main__":
    raise SystemExit(main())
