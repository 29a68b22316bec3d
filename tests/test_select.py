"""Choosing each method's setting on the tuning split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvg_bench.records import RunStore
from cvg_bench.cli import main as cli
from cvg_bench.select import choose_settings


def _run(root: Path, method: str, run_hash: str, setting: dict, passes: list[float]) -> None:
    store = RunStore(root, "shapes", method, "tiny", run_hash)
    store.write_manifest({"run_hash": run_hash, "identity": {"method": {"name": method, **setting}}})
    for i, v in enumerate(passes):
        store.write({
            "schema_version": 1, "run_hash": run_hash, "method": method, "generator": "tiny",
            "benchmark": "shapes", "benchmark_version": "1", "prompt_id": f"p{i}", "prompt": "x",
            "category": "spatial" if i % 2 else "motion", "split": "seen", "seed": 0,
            "video_path": None, "scores": {}, "scores_norm": {"oracle/relation": v},
            "faithfulness": v, "quality": None, "details": {},
            "timings": {"generation_s": 1.0, "guidance_s": 0.1}, "evaluators": {}, "versions": {},
            "git_commit": "x", "created_at": "2026-01-01T00:00:00+00:00", "error": None})


def test_best_setting_per_method_with_overrides_and_cheaper_tie_break(tmp_path: Path):
    _run(tmp_path, "ae", "h1", {"eta": 0.05, "guided_steps": 2}, [0, 0, 1, 0])
    _run(tmp_path, "ae", "h2", {"eta": 0.2, "guided_steps": 2}, [1, 1, 1, 0])
    _run(tmp_path, "ae", "h3", {"eta": 0.1, "guided_steps": 5}, [1, 1, 0, 1])  # tie, dearer
    _run(tmp_path, "le", "h4", {"eta": 0.1, "guided_steps": 2}, [0, 1, 0, 0])
    chosen = choose_settings([tmp_path], "oracle/relation")["methods"]
    assert chosen["ae"]["best"] == "h2" and chosen["ae"]["best_mean"] == 0.75
    assert chosen["ae"]["overrides"] == ["method.eta=0.2", "method.guided_steps=2"]
    assert [r["run_hash"] for r in chosen["ae"]["runs"]][2] == "h1"
    assert chosen["ae"]["runs"][0]["per_category"] == {"motion": 1.0, "spatial": 0.5}
    assert chosen["le"]["overrides"] == ["method.eta=0.1", "method.guided_steps=2"]
    assert chosen["le"]["swept"] == [] and chosen["le"]["best_mean"] == 0.25


def test_overrides_set_again_a_key_the_sweep_fixed_on_its_command_line(tmp_path: Path):
    """`method.eta=0.1,0.2 method.guided_steps=5` sweeps eta only, but the held-out run must
    get guided_steps=5 too, not the config's default (the reference script's tuning grid)."""
    _run(tmp_path, "cvg", "h1", {"eta": 0.1, "guided_steps": 5, "classifier": None}, [1, 0])
    _run(tmp_path, "cvg", "h2", {"eta": 0.2, "guided_steps": 5, "classifier": None}, [1, 1])
    chosen = choose_settings([tmp_path], "oracle/relation")["methods"]["cvg"]
    assert chosen["swept"] == ["eta"]
    assert chosen["overrides"] == ["method.classifier=null", "method.eta=0.2", "method.guided_steps=5"]


def test_a_key_only_some_runs_were_given_is_swept_and_re_created_with_force_add(tmp_path: Path):
    """A sweep may add a key the method's config lacks (++method.energy_threshold=0.05)."""
    _run(tmp_path, "cvg", "h1", {"eta": 0.1}, [1, 0, 0, 0])
    _run(tmp_path, "cvg", "h2", {"eta": 0.1, "energy_threshold": 0.05}, [1, 1, 0, 0])
    _run(tmp_path, "cvg", "h3", {"eta": 0.2, "energy_threshold": 0.05}, [1, 1, 1, 0])
    chosen = choose_settings([tmp_path], "oracle/relation")["methods"]["cvg"]
    assert chosen["best"] == "h3" and chosen["swept"] == ["energy_threshold", "eta"]
    assert chosen["overrides"] == ["++method.energy_threshold=0.05", "method.eta=0.2"]
    _run(tmp_path, "cvg", "h4", {"eta": 0.3}, [1, 1, 1, 1])  # best lacks the key: not set
    assert choose_settings([tmp_path], "oracle/relation")["methods"]["cvg"]["overrides"] == ["method.eta=0.3"]


def test_cli_writes_the_choice_and_names_a_missing_score(tmp_path: Path, capsys):
    _run(tmp_path / "r", "ae", "h1", {"eta": 0.1}, [1, 0])
    out = tmp_path / "chosen.json"
    assert cli(["select", f"results_dirs=[{tmp_path / 'r'}]", "score=oracle/relation", f"out={out}"]) == 0
    assert json.loads(out.read_text())["methods"]["ae"]["best_mean"] == 0.5
    assert cli(["select", f"results_dirs=[{tmp_path / 'r'}]", "score=oracle/nothing"]) == 2
    assert "no record has score 'oracle/nothing'" in capsys.readouterr().err


def test_reference_script_tunes_each_method_on_seen_only(capsys):
    from experiments.reference import main as reference

    assert reference(["--dry-run", "--plan", "spatial_relationships,motion_binding=attend_excite,cvg",
                      "--plan", "consistent_attribute_binding=attend_excite",
                      "--etas", "0.1,0.2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("benchmark.split=seen" in line for line in lines)
    # one tuning per method, on every category the plan gives it
    assert ("method=attend_excite method.eta=0.1,0.2 method.guided_steps=2,5 benchmark.split=seen "
            "'benchmark.categories=[spatial_relationships,motion_binding,consistent_attribute_binding]'"
            ) in lines[0]
    assert "method=cvg method.eta=0.1,0.2 method.guided_steps=2,5" in lines[1]
    assert "benchmark.categories=[spatial_relationships,motion_binding]" in lines[1]
    assert all("'seeds=[0]'" in line for line in lines)


def test_reference_script_tunes_on_the_seeds_it_is_given(capsys):
    from experiments.reference import main as reference

    assert reference(["--dry-run", "--plan", "spatial_relationships=cvg", "--tune-seeds", "0,1",
                      "--tune-limit", "12", "--guided-steps", "5"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert "'seeds=[0,1]'" in line and "benchmark.limit=12" in line
    assert "method.guided_steps=5 " in line


def test_reference_plan_names_a_malformed_group():
    from experiments.reference import parse_plan

    with pytest.raises(ValueError, match="'spatial_relationships' is not 'category,...=method,...'"):
        parse_plan(["spatial_relationships"])
