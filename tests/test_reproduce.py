"""The fixed protocol end to end (`python -m cvg_bench reproduce`): selection rule, protocol hash
in every table, tables recomputed from the exported records alone, resume."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from cvg_bench.cli import main as cli
from cvg_bench.records import RunStore
from cvg_bench.reproduce import (check_protocol, cost, protocol_hash, provenance, reproduce,
                                 shipped_protocol, table_from_records)
from cvg_bench.select import choose_within_validity, run_settings
from cvg_bench.leaderboard import load_records

EXPERIMENT = Path(__file__).resolve().parents[1] / "configs" / "experiment" / "shapes_heldout.yaml"

MICRO = {
    "name": "micro", "benchmark": "shapes", "generator": "tiny",
    "generator_overrides": ["generator.num_inference_steps=4"], "scorers": ["oracle", "quality"],
    "headline": "oracle/pass", "validity": "oracle/validity", "baseline": "vanilla",
    "methods": {"layout_energy": {"categories": ["spatial_relationships"],
                                  "grid": {"eta": [0.1, 0.3], "guided_steps": [1]}}},
    "tune": {"split": "seen", "limit": 1, "seeds": [0]},
    "report": {"split": "heldout", "limit": 1, "seeds": [0]},
    "selection": {"rule": "validity_constrained", "max_validity_drop": 0.02},
    "contact_sheet": {"prompts_per_category": 1, "seeds": [0], "frames": 2},
}


# ---------------------------------------------------------------------------------------------
# The selection rule on synthetic records


def _run(root: Path, method: str, run_hash: str, setting: dict, rows: list[tuple[float, float]],
         prompts: list[str] | None = None) -> None:
    store = RunStore(root, "shapes", method, "tiny", run_hash)
    store.write_manifest({"run_hash": run_hash, "identity": {"method": {"name": method, **setting}}})
    for i, (passed, valid) in enumerate(rows):
        pid = (prompts or [f"spatial_relationships-{j:03d}" for j in range(len(rows))])[i]
        store.write({
            "schema_version": 1, "run_hash": run_hash, "method": method, "generator": "tiny",
            "benchmark": "shapes", "benchmark_version": "1", "prompt_id": pid, "prompt": "x",
            "category": "spatial_relationships", "split": "seen", "seed": 0, "video_path": None,
            "scores": {}, "scores_norm": {"oracle/pass": passed, "oracle/validity": valid},
            "faithfulness": passed, "quality": 0.9, "details": {},
            "timings": {"generation_s": 1.0, "guidance_s": 0.1}, "evaluators": {}, "versions": {},
            "git_commit": "x", "created_at": "2026-01-01T00:00:00+00:00", "error": None})


def _choose(root: Path, drop: float = 0.02) -> dict:
    return choose_within_validity(load_records([root]), run_settings([root]), "oracle/pass",
                                  "oracle/validity", drop, "vanilla")["methods"]


def test_rule_maximises_pass_among_settings_that_keep_validity(tmp_path: Path):
    _run(tmp_path, "vanilla", "v0", {}, [(0, 1), (0, 1), (1, 1), (0, 0.5)])  # validity 0.875
    _run(tmp_path, "le", "best_pass", {"eta": 0.3, "guided_steps": 2}, [(1, 1), (1, 0.5), (1, 1), (1, 0.5)])
    _run(tmp_path, "le", "keeps", {"eta": 0.1, "guided_steps": 2}, [(1, 1), (0, 1), (1, 1), (0, 0.5)])
    _run(tmp_path, "le", "tie_dear", {"eta": 0.1, "guided_steps": 5}, [(1, 1), (0, 1), (1, 1), (0, 0.5)])
    chosen = _choose(tmp_path)
    le = chosen["le"]
    # best_pass has pass 1.0 but loses 0.125 validity: out; keeps and tie_dear tie, keeps is cheaper
    assert le["best"] == "keeps" and le["qualified"] and le["best_score"] == 0.5
    assert "within 0.02 of vanilla" in le["reason"]
    runs = {r["run_hash"]: r for r in le["runs"]}
    assert runs["best_pass"]["qualifies"] is False
    assert runs["best_pass"]["validity_drop"] == pytest.approx(0.125)
    assert runs["keeps"]["chosen"] and not runs["tie_dear"]["chosen"]
    assert le["overrides"] == ["method.eta=0.1", "method.guided_steps=2"]
    assert chosen["vanilla"]["best"] == "v0"  # the baseline goes through the same rule


def test_rule_falls_back_to_the_smallest_validity_loss(tmp_path: Path):
    _run(tmp_path, "vanilla", "v0", {}, [(0, 1), (0, 1)])
    _run(tmp_path, "le", "a", {"eta": 0.3}, [(1, 0.5), (1, 0.5)])  # drop 0.5, pass 1
    _run(tmp_path, "le", "b", {"eta": 0.1}, [(0, 0.75), (1, 0.75)])  # drop 0.25, pass 0.5
    le = _choose(tmp_path)["le"]
    assert le["best"] == "b" and not le["qualified"]
    assert "no setting keeps oracle/validity within 0.02" in le["reason"]
    assert _choose(tmp_path, drop=0.5)["le"]["best"] == "a"  # a looser rule admits both


def test_rule_compares_validity_on_the_same_videos_only(tmp_path: Path):
    """Vanilla is perfect on a prompt the method never ran: that must not count against it."""
    p = ["spatial_relationships-000", "spatial_relationships-001"]
    _run(tmp_path, "vanilla", "v0", {}, [(0, 0.5), (0, 1)], prompts=p)
    _run(tmp_path, "le", "a", {"eta": 0.3}, [(1, 0.5)], prompts=p[:1])
    le = _choose(tmp_path)["le"]
    assert le["qualified"] and le["runs"][0]["baseline_validity"] == 0.5


def test_rule_names_a_missing_baseline_sample(tmp_path: Path):
    _run(tmp_path, "vanilla", "v0", {}, [(0, 1)], prompts=["spatial_relationships-000"])
    _run(tmp_path, "le", "a", {"eta": 0.3}, [(1, 1)], prompts=["spatial_relationships-009"])
    with pytest.raises(ValueError, match="'vanilla' lacks validity on samples of 'le'.*spatial_relationships-009 seed 0"):
        _choose(tmp_path)


# ---------------------------------------------------------------------------------------------
# The shipped protocol


def test_shipped_protocol_checks_and_its_cost_is_the_one_in_its_header():
    protocol = check_protocol(shipped_protocol("shapes_heldout"))
    assert len(protocol["report"]["seeds"]) >= 6 and protocol["headline"] == "oracle/pass"
    assert protocol["tune"]["split"] == "seen" and protocol["report"]["split"] == "heldout"
    c = cost(protocol)
    header = EXPERIMENT.read_text()
    assert f"total {c['videos']} videos ({c['vanilla_videos']} vanilla, {c['guided_videos']} guided)" in header
    assert f"{c['cpu_hours']:.1f} CPU-hours" in header
    assert c["cpu_hours"] <= 6  # a few hours of 2 cores (seven categories for CVG: 5.1)
    assert provenance(protocol)["is_shipped"]


@pytest.mark.parametrize("path, value, message", [
    ("selection.rule", "best", "protocol.selection.rule is 'best'; accepted: validity_constrained"),
    ("report.split", "test", "protocol.report.split is 'test'; accepted: seen, heldout, all"),
    ("tune.seeds", [], "protocol.tune.seeds must be a non-empty list of integers"),
    ("methods.layout_energy.fixed", {"eta": 0.1}, "'eta' is both fixed and in the grid"),
    ("methods.layout_energy.fixed", {"classifier": "../elsewhere"},
     "fixed.classifier is '../elsewhere'; accepted: a plain number, name or relative path"),
])
def test_bad_protocol_values_are_named(path, value, message):
    protocol = copy.deepcopy(MICRO)
    node = protocol
    *parents, leaf = path.split(".")
    for k in parents:
        node = node[k]
    node[leaf] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        check_protocol(protocol)


def test_dry_run_prints_the_commands_and_an_overridden_protocol_says_so(tmp_path: Path, capsys):
    assert cli(["reproduce", "+experiment=shapes_heldout", "dry_run=true", f"root={tmp_path}",
                "launcher=slurm"]) == 0
    out = capsys.readouterr().out
    digest = protocol_hash(shipped_protocol("shapes_heldout"))
    assert f"protocol shapes_heldout {digest}: 2592 videos" in out and "NOT" not in out
    runs = [line for line in out.splitlines() if line.startswith("python -m cvg_bench run")]
    assert len(runs) == 10 and all(" -m hydra/launcher=slurm " in line for line in runs)
    assert "method.eta=0.05,0.1,0.2 method.guided_steps=2,5" in runs[1]
    assert all("benchmark.split=seen" in line for line in runs[:5])
    assert all("benchmark.split=heldout" in line and "'seeds=[0,1,2,3,4,5]'" in line for line in runs[5:])
    assert not list(tmp_path.rglob("*.json"))  # nothing ran
    assert cli(["reproduce", "+experiment=shapes_heldout", "dry_run=true", f"root={tmp_path}",
                "protocol.tune.limit=2"]) == 0
    assert f"(NOT configs/experiment/shapes_heldout.yaml, whose protocol is {digest})" in capsys.readouterr().out
    assert cli(["reproduce", "+experiment=shapes_heldout", "dry_run=true", f"root={tmp_path}",
                "launcher=pbs"]) == 2
    assert "launcher='pbs'; accepted: null (local processes), local, slurm, slurm_gpu" in capsys.readouterr().err
    assert cli(["reproduce", "+experiment=shapes_heldout", "dry_run=true", f"root={tmp_path}",
                "out_dir=/etc/x"]) == 2
    assert "outside" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The whole protocol, end to end, on a micro protocol


def _samples(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("samples/*.json")}


def test_micro_protocol_end_to_end_then_resume(tmp_path: Path, capfd):
    res = reproduce(copy.deepcopy(MICRO), root=tmp_path, work_dir="runs", out_dir="out")
    out = tmp_path / "out"
    prov = provenance(MICRO)
    assert prov["note"].startswith(f"protocol micro {protocol_hash(MICRO)} (NOT a shipped protocol")
    # selection: every setting with score, validity and why
    chosen = json.loads((out / "chosen_settings.json").read_text())
    le = chosen["methods"]["layout_energy"]
    assert len(le["runs"]) == 2 and le["reason"] and chosen["protocol"]["hash"] == prov["hash"]
    assert all({"score", "validity", "validity_drop", "qualifies"} <= set(r) for r in le["runs"])
    # tables: one per split, the protocol's hash in each title and in the JSON beside
    for split in ("seen", "heldout"):
        md = (out / f"table_{split}.md").read_text()
        assert md.splitlines()[0].startswith(f"## shapes `{split}` split") and prov["hash"] in md.splitlines()[0]
        assert "NOT a shipped protocol" in md.splitlines()[0]
        assert (out / f"table_{split}.tex").read_text().startswith(f"% shapes `{split}` split")
        assert json.loads((out / f"table_{split}.json").read_text())["protocol"]["hash"] == prov["hash"]
        # the records file alone recomputes the table exactly
        recomputed = table_from_records(out / f"records_{split}.jsonl.gz").reset_index()
        written = pd.read_csv(out / f"table_{split}.csv")
        pd.testing.assert_frame_equal(recomputed, written, check_dtype=False)
        assert list(written["method"]) == ["vanilla", "layout_energy"]
        assert written.loc[0, "time_x_baseline"] == 1.0 and written.loc[1, "vs_baseline_wins"] + \
            written.loc[1, "vs_baseline_ties"] + written.loc[1, "vs_baseline_losses"] == 1
        assert written["quality"].notna().all()
    recs = pd.read_json(out / "records_heldout.jsonl.gz", lines=True, compression="gzip")
    assert len(recs) == 2 and set(recs["split"]) == {"heldout"} and "validity" not in recs
    assert (out / "contact_sheet_heldout.png").stat().st_size > 0
    assert "contact_sheet_heldout.png" in (out / "report" / "index.html").read_text()
    assert "contact_sheet_heldout.png" in (out / "index.html").read_text()
    assert res["tables"]["heldout"]["md"] == out / "table_heldout.md"
    # resume: a second invocation generates nothing new
    before = _samples(tmp_path / "runs")
    assert len(before) == 1 + 2 + 1 + 1  # tune: vanilla + 2 settings; report: vanilla + chosen
    capfd.readouterr()
    # ... here with two processes at once (their logs are printed as each ends)
    reproduce(copy.deepcopy(MICRO), root=tmp_path, work_dir="runs", out_dir="out", jobs=2)
    log = capfd.readouterr().out
    assert sorted(p.name for p in (tmp_path / "runs").glob("*/logs/*.log")) == [
        "report-layout_energy.log", "report-vanilla.log", "tune-layout_energy.log", "tune-vanilla.log"]
    assert "thread(s), log" in log
    assert _samples(tmp_path / "runs") == before
    assert re.findall(r"samples done: (\d+)", log) and set(re.findall(r"samples done: (\d+)", log)) == {"0"}

    # the run folder each step will write is computed exactly as the run computes it
    from cvg_bench.reproduce import run_folder_of, step_runs, tune_steps

    work = next((tmp_path / "runs").glob("micro-*"))
    expected = {run_folder_of(o) for st in tune_steps(MICRO, work / "tune") for o in step_runs(st)}
    assert expected == {p.parent for p in (work / "tune").glob("shapes/*/manifest.json")}

    # another protocol (layout_energy with a fixed setting) reuses the identical vanilla runs
    # and remakes only what changed
    other = copy.deepcopy(MICRO)
    other["methods"]["layout_energy"]["fixed"] = {"max_grad_norm": 2.0}
    reproduce(copy.deepcopy(other), root=tmp_path, work_dir="runs", out_dir="out2",
              reuse=[str(work.relative_to(tmp_path))])
    log = capfd.readouterr().out
    work2 = tmp_path / "runs" / f"micro-{protocol_hash(other)}"
    reused = json.loads((work2 / "reused.json").read_text())
    assert len(reused) == 2 and all("vanilla__tiny__" in r for r in reused)  # tune + report
    assert "method.max_grad_norm=2.0" in log
    assert re.findall(r"samples done: (\d+)", log) == ["0", "1", "1", "0", "1"]  # vanilla copied
    le = {p.parent.name for p in work2.glob("*/shapes/layout_energy*/manifest.json")}
    assert le and le.isdisjoint({p.parent.name for p in work.glob("*/shapes/layout_energy*/manifest.json")})
    t1 = pd.read_csv(tmp_path / "out" / "table_heldout.csv").set_index("method")
    t2 = pd.read_csv(tmp_path / "out2" / "table_heldout.csv").set_index("method")
    assert t1.loc["vanilla", "run_hash"] == t2.loc["vanilla", "run_hash"]
    assert t1.loc["vanilla", "overall"] == t2.loc["vanilla", "overall"]
    with pytest.raises(FileNotFoundError, match="reuse folder"):
        reproduce(copy.deepcopy(other), root=tmp_path, work_dir="runs", out_dir="out2",
                  reuse=["runs/nothing-here"])


def test_parallel_steps_name_each_failure_and_its_log(tmp_path: Path):
    from cvg_bench.reproduce import Step, run_steps

    bad = Step("tune", "nosuch", ["run", "method=nosuch_method_xyz"], 1)
    bad2 = Step("tune", "nosuch2", ["run", "generator=nosuch_generator_xyz"], 2)
    with pytest.raises(RuntimeError, match=r"2 step\(s\) failed: tune nosuch2 .*log .*tune-nosuch2.log"):
        run_steps([bad, bad2], jobs=2, log_dir=tmp_path / "logs")
    assert "nosuch_method_xyz" in (tmp_path / "logs" / "tune-nosuch.log").read_text()
    with pytest.raises(ValueError, match="jobs=0"):
        run_steps([bad], jobs=0)


def test_a_learned_methods_training_data_is_named_under_its_table(tmp_path: Path):
    from cvg_bench.reproduce import describe_training_data, training_data, write_table

    runs = {"vanilla": tmp_path / "vanilla", "cvg": tmp_path / "cvg", "old": tmp_path / "old"}
    data = {"sources": {"render": 1.0}, "split": "seen", "synthetic_fraction": 0.2,
            "labeller": {"name": "shapes"}, "folder": None}
    manifests = {"vanilla": {"method_training_data": None},
                 "cvg": {"method_training_data": {"classifier": "cvg_classifier_v2", "variant": "dual",
                                                  "dual": True, "backbone": "video-encoder", "data": data}},
                 "old": {"method_training_data": {"classifier": "cvg_classifier_v1", "data": "unrecorded"}}}
    for m, folder in runs.items():
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps(manifests[m]))
    trained = training_data(runs)
    assert list(trained) == ["cvg", "old"]
    line = describe_training_data("cvg", trained["cvg"])
    assert line == ("cvg: cvg_classifier_v2 (dual, backbone video-encoder); data: render 1, "
                    "compositions `seen`, rendered videos labelled by construction, generated "
                    "videos labelled by the `shapes` labeller (0.2 of the render stream)")
    assert "training data unrecorded" in describe_training_data("old", trained["old"])
    ref = Path(__file__).resolve().parents[1] / "results" / "reference" / "shapes_heldout"
    table = table_from_records(ref / "records_heldout.jsonl.gz")
    paths = write_table(table, tmp_path, "t", "title", {"hash": "x"}, {"training_data": trained},
                        [line])
    assert paths["md"].read_text().rstrip().endswith(f"Trained parts:\n- {line}")
    assert json.loads(paths["json"].read_text())["training_data"]["cvg"]["data"]["split"] == "seen"


def test_reused_runs_are_recorded_as_soon_as_they_are_copied(tmp_path):
    """reused.json is appended after each copy, not after the stage: a tuning stage that fails
    after its copies (e.g. a classifier not yet trained) still leaves them on record."""
    from cvg_bench.reproduce import record_reused

    record_reused(tmp_path, [])
    assert not (tmp_path / "reused.json").exists()
    record_reused(tmp_path, ["a -> b"])
    record_reused(tmp_path, ["c -> d"])
    assert json.loads((tmp_path / "reused.json").read_text()) == ["a -> b", "c -> d"]


def test_a_report_run_is_reused_from_an_earlier_protocols_ablations(tmp_path, monkeypatch):
    """An ablation run of the report split (same run hash) serves a later protocol's report
    stage; a tuning stage never takes runs from ablations/."""
    import cvg_bench.reproduce as rp

    old, new = tmp_path / "runs" / "p-old", tmp_path / "runs" / "p-new"
    made = old / "ablations" / "shapes" / "cvg__tiny__abc"
    (made / "samples").mkdir(parents=True)
    (made / "manifest.json").write_text("{}")
    (made / "samples" / "x__s0.json").write_text("{}")
    monkeypatch.setattr(rp, "step_runs", lambda step: [["method=cvg"]])
    for stage in ("tune", "report"):
        monkeypatch.setattr(rp, "run_folder_of", lambda o, st=stage: new / st / "shapes" / "cvg__tiny__abc")
        copied = rp.reuse_runs([object()], new / stage, [old], tmp_path)
        assert bool(copied) == (stage == "report"), stage
    assert (new / "report" / "shapes" / "cvg__tiny__abc" / "samples" / "x__s0.json").is_file()
    assert not (new / "tune" / "shapes" / "cvg__tiny__abc").exists()
