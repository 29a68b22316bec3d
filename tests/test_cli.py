"""The CLI end to end on the dummy generator: run, resume, bad input, list, help, score."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cvg_bench.records import iter_records

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "cvg_bench", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def quick_run_args(results: Path, *extra: str) -> list[str]:
    return ["run", "method=vanilla", "generator=dummy", "benchmark=shapes",
            "benchmark.limit=1", "benchmark.categories=[spatial_relationships,motion_binding]",
            "seeds=[0,1]", f"results_dir={results}", *extra]


def test_list_shows_plugins(tmp_path):
    out = cli("list", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "vanilla" in out.stdout and "dummy" in out.stdout and "shapes" in out.stdout


def test_unknown_command_and_kind(tmp_path):
    out = cli("rnu", cwd=tmp_path)
    assert out.returncode == 2 and "Did you mean 'run'" in out.stderr
    out = cli("list", "metod", cwd=tmp_path)
    assert out.returncode == 2 and "unknown plugin kind 'metod'" in out.stderr


@pytest.mark.parametrize("command", ["run", "score", "train", "leaderboard"])
def test_help(tmp_path, command):
    out = cli(command, "--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"cvg_bench {command}" in out.stdout


def test_run_writes_records_then_skips_them(tmp_path):
    results = tmp_path / "res"
    out = cli(*quick_run_args(results), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    records = list(iter_records(results))
    assert len(records) == 4  # 2 prompts x 2 seeds
    rec = records[0]
    assert rec["method"] == "vanilla" and rec["generator"] == "dummy"
    assert set(rec["timings"]) == {"generation_s", "guidance_s", "scoring_s"}
    assert "oracle/pass" in rec["scores"] and rec["faithfulness"] in (0.0, 1.0)
    assert rec["versions"]["torch"] != "absent" and rec["git_commit"]
    run_dir = next(results.glob("shapes/*"))
    assert (run_dir / "manifest.json").exists() and (run_dir / rec["video_path"]).exists()
    assert list((results / "shapes" / "leaderboard").glob("*.md"))  # the benchmark's table
    again = cli(*quick_run_args(results), cwd=tmp_path)
    assert again.returncode == 0 and "skipped (already done): 4" in again.stdout
    forced = cli(*quick_run_args(results, "force=true", "seeds=[0]"), cwd=tmp_path)
    assert "samples done: 2" in forced.stdout


def test_run_refuses_to_mix_two_generator_versions(tmp_path):
    """Same config, other weights (as after retraining at the same path): no silent resume."""
    results = tmp_path / "res"
    assert cli(*quick_run_args(results, "seeds=[0]"), cwd=tmp_path).returncode == 0
    manifest = next(results.glob("shapes/*/manifest.json"))
    info = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**info, "generator_version": "dummy-older-weights"}))
    out = cli(*quick_run_args(results, "seeds=[0]"), cwd=tmp_path)
    assert out.returncode != 0 and "holds samples of generator 'dummy-older-weights'" in out.stderr
    forced = cli(*quick_run_args(results, "seeds=[0]", "force=true"), cwd=tmp_path)
    assert forced.returncode == 0 and "samples done: 2" in forced.stdout
    assert json.loads(manifest.read_text())["generator_version"] == info["generator_version"]


def test_run_refuses_to_resume_with_a_retrained_cvg_classifier(tmp_path):
    """The classifier's path is in the run hash, its weights are not: retraining it in place
    must not let old samples pass for new ones."""
    import shutil

    from safetensors.torch import load_file, save_file

    from cvg_bench.methods.cvg import DEFAULT_CLASSIFIER

    clf = tmp_path / "classifier"
    shutil.copytree(DEFAULT_CLASSIFIER, clf)
    args = ["run", "method=cvg", f"method.classifier={clf}", "method.guided_steps=1",
            "generator=tiny", "benchmark=shapes", "benchmark.limit=1",
            "benchmark.categories=[spatial_relationships]", "seeds=[0]", "leaderboard=false",
            f"results_dir={tmp_path / 'res'}"]
    first = cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    manifest = json.loads(next((tmp_path / "res").glob("shapes/*/manifest.json")).read_text())
    assert manifest["method_version"].startswith("cvg_classifier:")
    weights = load_file(clf / "classifier.safetensors")  # "retrain": other weights, same path
    save_file({k: v + 0.01 if k.startswith("heads.") else v for k, v in weights.items()},
              clf / "classifier.safetensors")
    again = cli(*args, cwd=tmp_path)
    assert again.returncode != 0
    assert f"holds samples of method weights {manifest['method_version']!r}" in again.stderr


def test_killed_run_resumes_without_loss_or_duplicates(tmp_path):
    results = tmp_path / "res"
    args = ["run", "method=vanilla", "generator=dummy", "generator.delay_s=0.4",
            "benchmark=shapes", "benchmark.limit=2", "seeds=[0,1]", f"results_dir={results}",
            "leaderboard=false"]
    proc = subprocess.Popen([sys.executable, "-m", "cvg_bench", *args], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(results.rglob("samples/*.json"))) < 3:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(list(results.rglob("samples/*.json")))
    assert n_before >= 3
    out = cli(*args, cwd=tmp_path, timeout=400)
    assert out.returncode == 0, out.stderr
    assert f"skipped (already done): {n_before}" in out.stdout
    records = list(iter_records(results))
    keys = [(r["prompt_id"], r["seed"]) for r in records]
    n_expected = 7 * 2 * 2  # 7 categories x limit 2 x 2 seeds
    assert len(keys) == len(set(keys)) == n_expected
    assert all(r["error"] is None for r in records)


@pytest.mark.parametrize("override, message", [
    (["method=nope"], "Could not find 'method/nope'"),
    (["force=maybe"], "maybe"),
    (["generator.frames=many"], "'frames' = 'many' (str) is not of the accepted type int"),
    (["benchmark.split=test"], "unknown split 'test'"),
])
def test_bad_input_fails_clearly_without_records(tmp_path, override, message):
    results = tmp_path / "res"
    out = cli(*quick_run_args(results, *override), cwd=tmp_path)
    assert out.returncode != 0
    assert message in out.stderr + out.stdout
    assert list(iter_records(tmp_path)) == []


def test_unwritable_results_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = cli(*quick_run_args(blocker / "res"), cwd=tmp_path)
    assert out.returncode == 2 and "cannot write results to" in out.stderr


def test_score_folder_and_its_errors(tmp_path):
    from cvg_bench.shapes.grammar import parse
    from cvg_bench.shapes.render import render
    from cvg_bench.video_io import write_mp4

    videos = tmp_path / "vids"
    prompts = ["a red circle on the left of a blue square", "a green square moving up"]
    rows = []
    for i, prompt in enumerate(prompts):
        write_mp4(videos / f"v{i}.mp4", render(parse(prompt, f"v{i}"), seed=i))
        rows.append(json.dumps({"id": f"v{i}", "prompt": prompt}))
    (videos / "prompts.jsonl").write_text("\n".join(rows) + "\n")
    results = tmp_path / "res"
    out = cli("score", "benchmark=shapes", f"videos={videos}", f"results_dir={results}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    records = list(iter_records(results))
    assert len(records) == 2 and all(r["scores"]["oracle/pass"] == 1.0 for r in records)
    assert "spatial_relationships" in out.stdout  # the per-category table

    (videos / "prompts.jsonl").write_text('{"id": "v0"}\n')
    out = cli("score", "benchmark=shapes", f"videos={videos}", f"results_dir={tmp_path / 'r2'}",
              cwd=tmp_path)
    assert out.returncode == 2 and "prompts.jsonl:1: malformed line" in out.stderr
    out = cli("score", "benchmark=shapes", f"videos={tmp_path / 'none'}", cwd=tmp_path)
    assert out.returncode == 2 and "videos folder not found" in out.stderr


def test_multirun_sweeps_seeds_into_one_run_dir(tmp_path):
    results = tmp_path / "res"
    out = cli("run", "-m", "method=vanilla", "generator=dummy", "benchmark=shapes",
              "benchmark.limit=1", "benchmark.categories=[motion_binding]", "seed=0,1",
              f"results_dir={results}", "leaderboard=false", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    records = list(iter_records(results))
    assert sorted(r["seed"] for r in records) == [0, 1]
    assert len({r["run_hash"] for r in records}) == 1  # the seed is not part of the run


def test_train_names_its_components(tmp_path):
    out = cli("train", "component=clasifier", cwd=tmp_path)
    assert out.returncode != 0 and "Could not find 'component/clasifier'" in out.stderr + out.stdout
