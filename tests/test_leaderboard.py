"""Leaderboards: every number checked against hand arithmetic, plus dedup, errors and exports.

The fixture sweep (benchmark "bench", categories spatial = p1, p2 and count = p3):

* cvg / gA, seeds 0-2 (3 seeds), faithfulness per seed (p1, p2, p3):
  s0 (.8, .6, .5)  s1 (.9, .7, .2)  s2 (.7, .5, .5); generation 10, 12, 14 s; guidance 2 s.
* base / gA, seeds 0-1 (2 seeds): s0 (.4, .6, .9)  s1 (.2, .4, .7); generation 5, 7 s;
  guidance 0 s; no validity; plus one ERROR record (p3, seed 2) carrying absurd scores.
* cvg / gB, seed 0 only: (.5, .5, .5); no quality; generation 20 s; guidance 4 s.

Two duplicates are planted across the two sweep folders, one in each direction (the newest
record is in the first folder once and in the second folder once).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import matplotlib.image as mpimg
import pandas as pd
import pytest

from cvg_bench.leaderboard import (
    export,
    leaderboard,
    load_records,
    to_latex,
    to_markdown,
    write_leaderboards,
)
from cvg_bench.records import RunStore

CATEGORY = {"p1": "spatial", "p2": "spatial", "p3": "count"}
NEW, OLD = "2025-03-01T12:00:00+00:00", "2025-01-01T12:00:00+00:00"


def _rec(method: str, generator: str, run_hash: str, prompt_id: str, seed: int, f: float | None,
         q: float | None = None, gen_s: float = 1.0, guid_s: float = 0.0,
         validity: float | None = None, error: str | None = None, created_at: str = NEW,
         benchmark: str = "bench", category: str | None = None) -> dict:
    scores_norm = {"faith/score": f} if f is not None else {}
    if validity is not None:
        scores_norm["oracle/validity"] = validity
    return {
        "schema_version": 1, "run_hash": run_hash, "method": method, "generator": generator,
        "benchmark": benchmark, "benchmark_version": "1", "prompt_id": prompt_id,
        "prompt": f"prompt {prompt_id}", "category": category or CATEGORY[prompt_id],
        "split": "test", "seed": seed, "video_path": None, "scores": {}, "scores_norm": scores_norm,
        "faithfulness": f, "quality": q, "details": {},
        "timings": {"generation_s": gen_s, "guidance_s": guid_s, "scoring_s": 0.1},
        "evaluators": {}, "versions": {}, "git_commit": "abc", "created_at": created_at,
        "error": error,
    }


def _write(root: Path, rec: dict) -> None:
    RunStore(root, rec["benchmark"], rec["method"], rec["generator"], rec["run_hash"]).write(rec)


def _sweep(root: Path) -> list[Path]:
    a, b = root / "sweepA", root / "sweepB"
    cvg_f = {0: (.8, .6, .5), 1: (.9, .7, .2), 2: (.7, .5, .5)}
    cvg_q = {0: (.4, .5, .6), 1: (.6, .6, .6), 2: (.7, .8, .6)}
    cvg_v = {0: (1, 1, 0), 1: (1, 1, 1), 2: (1, 0, 1)}
    for seed in (0, 1, 2):
        for i, pid in enumerate(("p1", "p2", "p3")):
            _write(a, _rec("cvg", "gA", "h1", pid, seed, cvg_f[seed][i], cvg_q[seed][i],
                           gen_s=10 + 2 * seed, guid_s=2.0, validity=cvg_v[seed][i]))
    base_f = {0: (.4, .6, .9), 1: (.2, .4, .7)}
    for seed in (0, 1):
        for i, pid in enumerate(("p1", "p2", "p3")):
            _write(b, _rec("base", "gA", "h2", pid, seed, base_f[seed][i], (.8, .6)[seed],
                           gen_s=5 + 2 * seed, guid_s=0.0))
    # An error record must not count: its scores would change every base/gA number.
    _write(b, _rec("base", "gA", "h2", "p3", 2, 1.0, 1.0, gen_s=999, guid_s=999,
                   error="CUDA out of memory"))
    for pid in ("p1", "p2", "p3"):
        _write(b, _rec("cvg", "gB", "h3", pid, 0, .5, None, gen_s=20, guid_s=4.0))
    # Duplicates: stale copies with f=0 that must lose to the newer record, whichever folder.
    _write(b, _rec("cvg", "gA", "h1", "p1", 0, 0.0, 0.0, gen_s=10, guid_s=2.0, validity=1,
                   created_at=OLD))
    _write(a, _rec("cvg", "gB", "h3", "p1", 0, 0.0, None, gen_s=20, guid_s=4.0, created_at=OLD))
    return [a, b]


@pytest.fixture
def dirs(tmp_path: Path) -> list[Path]:
    return _sweep(tmp_path)


@pytest.fixture
def table(dirs: list[Path]) -> pd.DataFrame:
    return leaderboard(load_records(dirs))


S3 = math.sqrt(3)
S2 = math.sqrt(2)
NAN = float("nan")
# Hand arithmetic: per-seed values, then mean and std(ddof=1)/sqrt(n_seeds).
EXPECTED = {
    ("cvg", "gA"): {
        # spatial per seed: (.8+.6)/2=.7, (.9+.7)/2=.8, (.7+.5)/2=.6 -> mean .7, std .1
        "spatial": 0.7, "spatial_se": 0.1 / S3,
        # count per seed .5, .2, .5 -> mean .4; std sqrt((.01+.04+.01)/2)=sqrt(.03)
        "count": 0.4, "count_se": math.sqrt(0.03) / S3,
        # overall (macro) per seed: (.7+.5)/2=.6, (.8+.2)/2=.5, (.6+.5)/2=.55 -> std .05
        "overall": 0.55, "overall_se": 0.05 / S3,
        # micro per seed: 1.9/3, 1.8/3, 1.7/3 -> mean .6, std 1/30
        "overall_micro": 0.6, "overall_micro_se": (1 / 30) / S3,
        # quality per seed: 1.5/3=.5, .6, 2.1/3=.7 -> std .1
        "quality": 0.6, "quality_se": 0.1 / S3,
        # validity per seed 2/3, 1, 2/3 -> mean 7/9; std sqrt((1/81+4/81+1/81)/2)=sqrt(1/27)
        "validity": 7 / 9, "validity_se": math.sqrt(1 / 27) / S3,
        "sec_per_video": 12.0, "sec_per_video_se": 2.0 / S3,  # 10, 12, 14
        "guidance_sec": 2.0, "guidance_sec_se": 0.0,
        "time_x_vanilla": 12.0 / 10.0, "time_x_vanilla_se": math.nan,  # 12 s per video, 2 of them guidance
        "n_samples": 9, "n_seeds": 3, "errors": 0,
    },
    ("base", "gA"): {
        # spatial per seed .5, .3; count .9, .7; overall .7, .5; micro 1.9/3, 1.3/3;
        # each pair differs by .2 -> std .2/sqrt(2), se .1
        "spatial": 0.4, "spatial_se": (0.2 / S2) / S2,
        "count": 0.8, "count_se": 0.1,
        "overall": 0.6, "overall_se": 0.1,
        "overall_micro": 3.2 / 6, "overall_micro_se": 0.1,
        "quality": 0.7, "quality_se": 0.1,  # .8, .6
        "validity": NAN, "validity_se": NAN,  # no oracle/validity in these records
        "sec_per_video": 6.0, "sec_per_video_se": 1.0,  # 5, 7
        "guidance_sec": 0.0, "guidance_sec_se": 0.0,
        "n_samples": 6, "n_seeds": 2, "errors": 1,
    },
    ("cvg", "gB"): {  # one seed: s.e. is NaN by choice (unknown, not zero)
        "spatial": 0.5, "spatial_se": NAN, "count": 0.5, "count_se": NAN,
        "overall": 0.5, "overall_se": NAN, "overall_micro": 0.5, "overall_micro_se": NAN,
        "quality": NAN, "quality_se": NAN, "validity": NAN, "validity_se": NAN,
        "sec_per_video": 20.0, "sec_per_video_se": NAN,
        "guidance_sec": 4.0, "guidance_sec_se": NAN,
        "n_samples": 3, "n_seeds": 1, "errors": 0,
    },
}


def test_every_number_matches_hand_arithmetic(table: pd.DataFrame):
    assert list(table.index) == [("base", "gA"), ("cvg", "gA"), ("cvg", "gB")]
    assert list(table.index.names) == ["method", "generator"]
    assert list(table.columns) == list(EXPECTED[("cvg", "gA")])
    for row, expected in EXPECTED.items():
        for col, want in expected.items():
            got = table.loc[row, col]
            if math.isnan(want):
                assert math.isnan(got), (row, col, got)
            else:
                assert got == pytest.approx(want, abs=1e-12), (row, col, got, want)


def test_duplicates_keep_newest_and_warn(dirs: list[Path], caplog):
    with caplog.at_level(logging.WARNING, logger="cvg_bench.leaderboard"):
        df = load_records(dirs)
    assert "dropped 2 duplicate" in caplog.text
    key = ["run_hash", "method", "generator", "benchmark", "prompt_id", "seed"]
    assert not df.duplicated(key).any()
    assert len(df) == 9 + 6 + 1 + 3  # the error record is kept (counted, not scored)
    kept = df.set_index(["method", "generator", "prompt_id", "seed"])["faithfulness"]
    assert kept[("cvg", "gA", "p1", 0)] == 0.8  # newest was in the first folder
    assert kept[("cvg", "gB", "p1", 0)] == 0.5  # newest was in the second folder


def test_error_records_are_counted_not_scored(tmp_path: Path):
    _write(tmp_path, _rec("m", "g", "h", "p1", 0, 0.2))
    _write(tmp_path, _rec("m", "g", "h", "p3", 0, 0.4))
    _write(tmp_path, _rec("m", "g", "h", "p1", 1, 0.8))
    _write(tmp_path, _rec("m", "g", "h", "p3", 1, 1.0, error="boom"))  # seed 1 lacks "count"
    _write(tmp_path, _rec("dead", "g", "h", "p1", 0, None, error="boom"))  # every sample failed
    t = leaderboard(load_records([tmp_path]))
    m = t.loc[("m", "g")]
    assert (m["n_samples"], m["n_seeds"], m["errors"]) == (2 + 1, 2, 1)
    assert m["spatial"] == pytest.approx((0.2 + 0.8) / 2)
    assert m["count"] == pytest.approx(0.4) and math.isnan(m["count_se"])  # one seed has it
    # Seed 1 has no "count", so no macro overall: overall is seed 0's (.2 + .4) / 2 alone.
    assert m["overall"] == pytest.approx(0.3) and math.isnan(m["overall_se"])
    assert (t.loc[("dead", "g"), "n_samples"], t.loc[("dead", "g"), "errors"]) == (0, 1)
    assert math.isnan(t.loc[("dead", "g"), "overall"])
    assert "quality" not in t.columns  # no record has quality


def test_category_order_first_appearance_or_given(table: pd.DataFrame, dirs: list[Path]):
    assert table.attrs["categories"] == ["spatial", "count"]  # not alphabetical
    again = leaderboard(load_records(dirs), categories=["count", "spatial", "absent"])
    assert list(again.columns[:4]) == ["count", "count_se", "spatial", "spatial_se"]


def test_two_runs_of_one_method_generator_keep_run_hash(tmp_path: Path):
    _write(tmp_path, _rec("m", "g", "run1", "p1", 0, 0.2))
    _write(tmp_path, _rec("m", "g", "run2", "p1", 0, 0.6))
    _write(tmp_path, _rec("o", "g", "run3", "p1", 0, 0.9))
    t = leaderboard(load_records(tmp_path))
    assert list(t.index.names) == ["method", "generator", "run_hash"]
    assert t["spatial"].to_dict() == {("m", "g", "run1"): 0.2, ("m", "g", "run2"): 0.6,
                                      ("o", "g", "run3"): 0.9}
    assert "| m        | g           | run1       |" in to_markdown(t)


def _md_rows(md: str) -> dict[tuple[str, str], dict[str, str]]:
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines()]
    header, body = lines[0], lines[2:]
    return {(r[0], r[1]): dict(zip(header, r)) for r in body}


def _tex_rows(tex: str) -> dict[tuple[str, str], dict[str, str]]:
    lines = [ln.removesuffix(r" \\").split(" & ") for ln in tex.splitlines() if " & " in ln]
    header = [h.replace(r"\_", "_") for h in lines[0]]
    return {(r[0], r[1]): dict(zip(header, r)) for r in lines[1:]}


def test_markdown_bolds_best_and_shows_mean_pm_se(table: pd.DataFrame):
    rows = _md_rows(to_markdown(table))
    cvg, base, gb = rows[("cvg", "gA")], rows[("base", "gA")], rows[("cvg", "gB")]
    assert cvg["spatial"] == "**0.700 ± 0.058**" and base["spatial"] == "0.400 ± 0.100"
    assert base["count"] == "**0.800 ± 0.100**" and cvg["count"] == "0.400 ± 0.100"
    assert base["overall"] == "**0.600 ± 0.100**" and cvg["overall"] == "0.550 ± 0.029"
    assert cvg["overall_micro"] == "**0.600 ± 0.019**"  # micro and macro winners differ
    assert base["quality"] == "**0.700 ± 0.100**" and gb["quality"] == "-"
    assert cvg["validity"] == "**0.778 ± 0.111**"
    # Seconds: lower is better, so the minimum is bold.
    assert base["sec_per_video"] == "**6.00 ± 1.00**" and gb["sec_per_video"] == "20.00"
    assert base["guidance_sec"] == "**0.00 ± 0.00**" and cvg["guidance_sec"] == "2.00 ± 0.00"
    assert (cvg["n_samples"], cvg["n_seeds"], base["errors"]) == ("9", "3", "1")
    assert base["time_x_vanilla"] == "**1.00**" and cvg["time_x_vanilla"] == "1.20"  # 12 s, 2 guidance
    assert sum(cell.startswith("**") for r in rows.values() for cell in r.values()) == 9


def test_latex_booktabs_bolds_best(table: pd.DataFrame):
    tex = to_latex(table)
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}", r"\end{tabular}"):
        assert rule in tex
    rows = _tex_rows(tex)
    cvg, base = rows[("cvg", "gA")], rows[("base", "gA")]
    assert cvg["spatial"] == r"\textbf{0.700 $\pm$ 0.058}"
    assert base["spatial"] == r"0.400 $\pm$ 0.100"
    assert base["sec_per_video"] == r"\textbf{6.00 $\pm$ 1.00}"
    assert cvg["sec_per_video"] == r"12.00 $\pm$ 1.15"
    assert rows[("cvg", "gB")]["quality"] == "--"
    assert r"overall\_micro" in tex and "overall_micro" not in tex.replace(r"\_", "")


def test_export_writes_all_files(table: pd.DataFrame, tmp_path: Path):
    paths = export(table, tmp_path / "out", "bench")
    assert set(paths) == {"csv", "md", "tex", "json", "scatter", "categories", "cost"}
    csv = pd.read_csv(paths["csv"])
    assert {"spatial", "spatial_se", "overall_micro_se", "n_seeds"} <= set(csv.columns)
    cvg = csv[(csv["method"] == "cvg") & (csv["generator"] == "gA")].iloc[0]
    assert cvg["spatial_se"] == pytest.approx(0.1 / S3)  # full precision, not display text
    for kind in ("scatter", "categories", "cost"):
        _assert_png(paths[kind])


def _assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_write_leaderboards_per_benchmark(dirs: list[Path], tmp_path: Path):
    other = tmp_path / "other"
    for seed in (0, 1):  # a second benchmark, without quality: scatter falls back to seconds
        _write(other, _rec("cvg", "gA", "h9", "q1", seed, 0.3 + 0.2 * seed, benchmark="other",
                           category="motion"))
    paths = write_leaderboards([*dirs, other], tmp_path / "lb")
    for bench in ("bench", "other"):
        for kind in ("csv", "md", "tex", "json"):
            assert paths[f"{bench}/{kind}"].stat().st_size > 0
        _assert_png(paths[f"{bench}/scatter"])
        _assert_png(paths[f"{bench}/categories"])
    samples = [json.loads(line) for line in paths["samples"].read_text().splitlines()]
    assert len(samples) == 19 + 2 and sum(s["error"] is not None for s in samples) == 1
    assert "generation_s" not in samples[0] and samples[0]["timings"]["generation_s"] > 0
    summary = json.loads(paths["leaderboard"].read_text())
    assert summary["n_errors"] == 1 and set(summary["results"]) == {"bench", "other"}
    bench = summary["results"]["bench"]
    assert bench["categories"] == ["spatial", "count"]
    assert bench["higher_is_better"]["sec_per_video"] is False
    assert bench["higher_is_better"]["spatial"] is True
    assert bench["results"]["cvg / gA"]["overall"] == pytest.approx(0.55)
    assert bench["results"]["cvg / gB"]["overall_se"] is None
    assert summary["results"]["other"]["results"]["cvg / gA"]["motion"] == pytest.approx(0.4)


def test_clear_errors(tmp_path: Path, dirs: list[Path]):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no records found under .*empty"):
        load_records([tmp_path / "empty"])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_records([tmp_path / "nowhere"])
    _write(tmp_path / "two", _rec("m", "g", "h", "p1", 0, 0.1, benchmark="b1"))
    _write(tmp_path / "two", _rec("m", "g", "h", "p1", 0, 0.1, benchmark="b2"))
    df = load_records(tmp_path / "two")
    with pytest.raises(ValueError, match="several benchmarks"):
        leaderboard(df)
    with pytest.raises(ValueError, match="no records for benchmark 'b3'"):
        leaderboard(df, "b3")


def test_another_score_can_count_as_faithfulness(tmp_path: Path):
    from cvg_bench.leaderboard import with_faithfulness

    for i, (f, v) in enumerate([(1.0, 0.2), (0.0, 0.6)]):
        _write(tmp_path, _rec("m", "g", "h", f"p{i + 1}", 0, f, validity=v))
    df = load_records(tmp_path)
    by_validity = with_faithfulness(df, "oracle/validity")
    assert by_validity["faithfulness"].tolist() == [0.2, 0.6]
    assert df["faithfulness"].tolist() == [1.0, 0.0]  # the input is not changed
    assert with_faithfulness(df, None) is df
    with pytest.raises(ValueError, match="'oracle/relation' is in no record; scores found: "
                                         r"\['faith/score', 'oracle/validity'\]"):
        with_faithfulness(df, "oracle/relation")


def test_time_ratio_is_measured_inside_the_same_videos():
    from cvg_bench.leaderboard import _time_ratio

    index = pd.MultiIndex.from_tuples([("vanilla", "gA"), ("cvg", "gA"), ("cvg", "gB")], names=["method", "generator"])
    table = pd.DataFrame({"sec_per_video": [2.0, 2.5, 9.0], "guidance_sec": [0.0, 0.5, 9.0]}, index=index)
    ratio = _time_ratio(table)
    assert ratio[("vanilla", "gA")] == 1.0 and ratio[("cvg", "gA")] == 1.25
    assert math.isnan(ratio[("cvg", "gB")])  # no unguided time left: not a ratio
