"""The tiny generator's quality-bar evaluation: tabulation, the bar's checks, and one real run."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from experiments import quality_bar as qb
from cvg_bench.generators.tiny import TEST_CONFIG, TinyGenerator


def _records(rows: list[tuple[str, str, float, float, float]]) -> pd.DataFrame:
    """(split, category, validity, relation, pass) -> records shaped as load_records gives them."""
    return pd.DataFrame([{
        "split": s, "category": c, "validity": v, "error": None,
        "scores_norm": {"oracle/validity": v, "oracle/relation": r, "oracle/pass": p},
    } for s, c, v, r, p in rows])


def test_table_means_valid_share_and_overall_rows():
    df = _records([("seen", "a", 1.0, 1.0, 1.0), ("seen", "a", 0.5, 0.0, 0.0),
                   ("seen", "b", 0.75, 1.0, 1.0), ("heldout", "a", 0.25, 0.0, 0.0)])
    table = qb.quality_table(qb.sample_frame(df)).set_index(["split", "category"])
    assert table.loc[("seen", "a"), "validity"] == pytest.approx(0.75)
    assert table.loc[("seen", "a"), "valid_videos"] == pytest.approx(0.5)  # 0.5 < 0.75 is invalid
    assert table.loc[("seen", "b"), "valid_videos"] == 1.0  # 0.75 counts as valid
    assert table.loc[("seen", "overall"), "videos"] == 3
    assert table.loc[("seen", "overall"), "composition"] == pytest.approx(2 / 3)
    assert math.isnan(table.loc[("heldout", "a"), "validity_se"])  # one video: no s.e.


def test_bar_met_and_not_met():
    good = [("seen", "a", 1.0, 1.0, 1.0)] * 9 + [("seen", "a", 1.0, 0.0, 0.0)] \
        + [("heldout", "a", 1.0, 0.0, 0.0)] * 9 + [("heldout", "a", 1.0, 1.0, 1.0)]
    checks = qb.bar_checks(qb.quality_table(qb.sample_frame(_records(good))))
    assert len(checks) == 4 and all(c["met"] for c in checks), checks
    # held-out as good as seen: the held-out compositions leave CVG no room
    flat = [("seen", "a", 1.0, 1.0, 1.0)] * 10 + [("heldout", "a", 1.0, 1.0, 1.0)] * 10
    checks = {c["check"]: c for c in qb.bar_checks(qb.quality_table(qb.sample_frame(_records(flat))))}
    assert checks["seen: valid videos"]["met"] and not checks["held-out: composition below seen by"]["met"]
    poor = [("seen", "a", 0.5, 0.0, 0.0)] * 4
    assert not any(c["met"] for c in qb.bar_checks(qb.quality_table(qb.sample_frame(_records(poor)))))


def test_moving_share_counts_objects_that_move_any_way():
    df = _records([("seen", "motion_binding", 1.0, 0.0, 0.0), ("seen", "spatial_relationships", 1.0, 1.0, 1.0)])
    df["details"] = [{"oracle": {"red_circle_moving_left": {"value": {"along": -0.3, "across": 0.0}},
                                 "blue_square_moving_up": {"value": {"along": 0.01, "across": 0.02}}}},
                     {"oracle": {"left_of": {"value": 0.2}}}]
    table = qb.quality_table(qb.sample_frame(df)).set_index(["split", "category"])
    assert table.loc[("seen", "motion_binding"), "moving"] == 0.5  # moved right, not left: still moves
    assert math.isnan(table.loc[("seen", "spatial_relationships"), "moving"])
    assert table.loc[("seen", "overall"), "moving"] == 0.5  # over the motion videos only
    assert "| - |" in qb.to_markdown(table.reset_index())


def test_word_table_counts_each_relation_word_per_object_or_prompt():
    df = pd.DataFrame([
        {"split": "seen", "category": "motion_binding", "error": None,
         "prompt": "a red circle moving left and a blue square moving up",
         "details": {"oracle": {"red_circle_moving_left": {"passed": True}, "blue_square_moving_up": {"passed": False}}}},
        {"split": "seen", "category": "motion_binding", "error": None, "prompt": "a red circle moving up",
         "details": {"oracle": {"red_circle_moving_up": {"passed": True}}}},
        {"split": "heldout", "category": "spatial_relationships", "error": None,
         "prompt": "a red circle above a blue square", "details": {"oracle": {"above": {"passed": False}}}},
        {"split": "seen", "category": "spatial_relationships", "error": "boom",
         "prompt": "a red circle above a blue square", "details": None},
        {"split": "seen", "category": "generative_numeracy", "error": None, "prompt": "two red circles",
         "details": {"oracle": {}}},
    ])
    words = qb.word_table(df).set_index(["split", "category", "word"])
    assert words.loc[("seen", "motion_binding", "up"), ["asked", "passed"]].tolist() == [2, 1]
    assert words.loc[("seen", "motion_binding", "left"), "share"] == 1.0
    assert words.loc[("heldout", "spatial_relationships", "above"), ["asked", "passed"]].tolist() == [1, 0]
    assert len(words) == 3  # the failed record and the numeracy prompt are not counted
    md = qb.word_markdown(words.reset_index())
    assert "| motion_binding | up | 1/2 | - |" in md and "| spatial_relationships | above | - | 0/1 |" in md


def test_records_without_oracle_scores_are_refused():
    df = pd.DataFrame([{"split": "seen", "category": "a", "validity": None, "error": None,
                        "scores_norm": {"clip/score": 0.3}}])
    with pytest.raises(ValueError, match="scorer=\\[oracle\\]"):
        qb.sample_frame(df)


def test_end_to_end_on_a_random_generator(tmp_path, capsys):
    """The real command: vanilla runs on both splits, records, then the report."""
    folder = tmp_path / "weights"
    TinyGenerator.random(TEST_CONFIG, seed=0).pipe.save_pretrained(folder, safe_serialization=True)
    out = tmp_path / "quality"
    small = ["generator.num_frames=4", "generator.height=16", "generator.width=16",
             "generator.num_inference_steps=2", "benchmark.categories=[spatial_relationships,motion_binding]"]
    argv = ["--path", str(folder), "--out", str(out), "--limit", "2", "--seeds", "0"]
    assert qb.main(argv + [a for s in small for a in ("--set", s)]) == 0
    result = json.loads((out / "quality.json").read_text())
    cells = {(r["split"], r["category"]): r for r in result["table"]}
    assert cells[("seen", "overall")]["videos"] == 4 and cells[("heldout", "overall")]["videos"] == 4
    assert {c["check"] for c in result["checks"]} >= {"seen: valid videos", "seen: composition"}
    assert "| seen | spatial_relationships | 2 |" in (out / "quality.md").read_text()
    words = pd.read_csv(out / "words.csv")
    assert set(words["category"]) == {"spatial_relationships", "motion_binding"}
    assert words.groupby("split")["asked"].sum().to_dict()["seen"] >= 4
    assert "NOT met" in capsys.readouterr().out  # random weights are far from the bar


def test_jobs_split_the_prompts_across_processes(tmp_path, capsys):
    """--jobs 2: two shard processes fill one run folder with every (prompt, seed) once."""
    folder = tmp_path / "weights"
    TinyGenerator.random(TEST_CONFIG, seed=0).pipe.save_pretrained(folder, safe_serialization=True)
    small = ["generator.num_frames=4", "generator.height=16", "generator.width=16",
             "generator.num_inference_steps=2", "benchmark.categories=[spatial_relationships]"]
    argv = ["--path", str(folder), "--out", str(tmp_path / "q"), "--limit", "3", "--seeds", "0",
            "--splits", "seen", "--jobs", "2"]
    assert qb.main(argv + [a for s in small for a in ("--set", s)]) == 0
    assert "benchmark.shard=1" in capsys.readouterr().out
    records = qb.load_records(tmp_path / "q" / "runs")
    assert sorted(records["prompt_id"]) == [f"spatial_relationships-00{i}" for i in range(3)]
    assert len(list((tmp_path / "q" / "runs" / "shapes").iterdir())) == 1  # one run folder
    with pytest.raises(SystemExit):
        qb.main(["--jobs", "0"])


def test_unknown_split_is_refused(capsys):
    with pytest.raises(SystemExit):
        qb.main(["--splits", "seen,train", "--report-only"])
    assert "--splits has ['train']; accepted: seen, heldout" in capsys.readouterr().err
