"""Paired per-prompt comparison: counts, means and the sign test checked by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvg_bench import paired
from cvg_bench.cli import main as cli
from cvg_bench.records import RunStore


def _rec(method: str, prompt_id: str, category: str, seed: int, value: float | None,
         error: str | None = None, run_hash: str | None = None) -> dict:
    return {
        "schema_version": 1, "run_hash": run_hash or f"h_{method}", "method": method, "generator": "g",
        "benchmark": "bench", "benchmark_version": "1", "prompt_id": prompt_id,
        "prompt": prompt_id, "category": category, "split": "test", "seed": seed,
        "video_path": None, "scores": {}, "scores_norm": {"oracle/relation": value},
        "faithfulness": value, "quality": None, "details": {},
        "timings": {"generation_s": 1.0, "guidance_s": 0.0}, "evaluators": {}, "versions": {},
        "git_commit": "abc", "created_at": "2026-01-01T00:00:00+00:00", "error": error,
    }


def _run(root: Path, method: str, values: dict[tuple[str, str, int], float | None],
         errors: tuple[tuple[str, str, int], ...] = (), run_hash: str | None = None) -> Path:
    store, run_hash = None, run_hash or f"h_{method}"
    for (pid, cat, seed), v in values.items():
        store = RunStore(root, "bench", method, "g", run_hash)
        store.write(_rec(method, pid, cat, seed, v, run_hash=run_hash))
    for pid, cat, seed in errors:
        store.write(_rec(method, pid, cat, seed, 99.0, error="boom"))
    return store.root


BASE = {("a", "spatial", 0): 0.0, ("a", "spatial", 1): 0.5, ("b", "spatial", 0): 1.0,
        ("b", "spatial", 1): 1.0, ("c", "motion", 0): 0.5, ("c", "motion", 1): 0.5}
# a: 0.25 -> 1.0 (win); b: 1.0 -> 0.5 (loss); c: 0.5 -> 0.5 (tie); seed 2 only in the method.
CAND = {("a", "spatial", 0): 1.0, ("a", "spatial", 1): 1.0, ("a", "spatial", 2): 0.0,
        ("b", "spatial", 0): 0.0, ("b", "spatial", 1): 1.0, ("c", "motion", 0): 0.5,
        ("c", "motion", 1): 0.5}


def test_sign_test_matches_hand_values():
    assert paired.sign_test_p(0, 0) == 1.0
    assert paired.sign_test_p(5, 0) == pytest.approx(2 / 32)
    assert paired.sign_test_p(8, 2) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert paired.sign_test_p(3, 3) == 1.0


def test_paired_counts_means_and_shared_seeds(tmp_path):
    base = paired.per_prompt(_run(tmp_path / "b", "vanilla", BASE), "oracle/relation")
    cand = paired.per_prompt(_run(tmp_path / "c", "cvg", CAND, errors=(("c", "motion", 2),)),
                             "oracle/relation")
    table = paired.compare(base, cand)
    got = {r.prompt_id: (r.baseline, r.method, r.outcome) for r in table.itertuples()}
    assert got == {"a": (0.25, 1.0, "win"), "b": (1.0, 0.5, "loss"), "c": (0.5, 0.5, "tie")}
    summary = paired.summarise(table, "cvg").set_index("category")
    assert summary.loc["spatial", ["wins", "ties", "losses"]].tolist() == [1, 0, 1]
    assert summary.loc["spatial", "mean_diff"] == pytest.approx((0.75 - 0.5) / 2)
    assert summary.loc["all", "prompts"] == 3
    assert summary.loc["motion", "ties"] == 1 and summary.loc["motion", "sign_test_p"] == 1.0


def test_cli_writes_tables(tmp_path, capsys):
    b, c = _run(tmp_path / "b", "vanilla", BASE), _run(tmp_path / "c", "cvg", CAND)
    assert cli(["paired", f"baseline={b}", f"candidates=[{c}]", f"out={tmp_path / 'o'}"]) == 0
    assert "| cvg | spatial | 2 | 1 / 0 / 1 |" in (tmp_path / "o" / "paired.md").read_text()
    assert (tmp_path / "o" / "per_prompt.csv").read_text().count("\n") == 4


def test_candidates_of_one_method_are_told_apart(tmp_path, capsys):
    b = _run(tmp_path / "b", "vanilla", BASE)
    c1 = _run(tmp_path / "c1", "cvg", CAND, run_hash="h1")
    c2 = _run(tmp_path / "c2", "cvg", BASE, run_hash="h2")
    args = ["paired", f"baseline={b}", f"candidates=[{c1},{c2}]"]
    assert cli(args + [f"out={tmp_path / 'o'}"]) == 0
    text = (tmp_path / "o" / "paired.md").read_text()
    assert "| cvg@h1 | spatial | 2 | 1 / 0 / 1 |" in text and "| cvg@h2 | spatial | 2 | 0 / 2 / 0 |" in text
    assert cli(args + ["labels=[five steps,p+ only]"]) == 0
    assert "| p+ only | motion |" in capsys.readouterr().out
    assert cli(args + ["labels=[only one]"]) == 2
    assert "labels has 1 names for 2 candidates" in capsys.readouterr().err


def test_errors_name_the_problem(tmp_path):
    root = tmp_path / "two"
    _run(root, "vanilla", BASE)
    _run(root, "cvg", CAND)
    with pytest.raises(ValueError, match="holds 2 runs"):
        paired.per_prompt(root, "oracle/relation")
    with pytest.raises(ValueError, match="'oracle/pass' is in no record.*oracle/relation"):
        paired.per_prompt(_run(tmp_path / "x", "vanilla", BASE), "oracle/pass")
    other = paired.per_prompt(_run(tmp_path / "y", "cvg", {("z", "spatial", 0): 1.0}), "oracle/relation")
    with pytest.raises(ValueError, match="share no"):
        paired.compare(paired.per_prompt(tmp_path / "x", "oracle/relation"), other)
