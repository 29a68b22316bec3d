"""Issue 31: records, videos and paths you can trust. One test (or more) per defect found:

1. score's ids leave the videos folder     -> test_score_ids_*
2. report links whatever video_path names  -> test_report_*
3. a damaged or missing video counts done  -> test_damaged_or_missing_video_is_redone,
                                              test_write_mp4_fails_on_a_full_disk
4. records are never validated on read     -> test_run_survives_*, test_leaderboard_leaves_out_*,
                                              test_validate_record_names_the_field
5. score resumes by (folder, id) only      -> test_score_resumes_by_prompt_text_and_video_hash,
                                              test_score_duplicate_ids_name_both_lines
6. torch.load(weights_only=False)          -> test_training_checkpoint_cannot_run_code
7. no per-sample lock                      -> test_two_processes_split_one_run,
                                              test_sample_lock_*
8. files written 0600                      -> test_files_follow_the_umask
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from cvg_bench.records import (
    LOCK_STALE_S,
    InvalidRecord,
    RunStore,
    SampleLock,
    atomic_write_json,
    file_digest,
    read_records,
    validate_record,
)
from cvg_bench.video_io import write_mp4

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["a red circle on the left of a blue square", "a green square moving up"]


def compose(command: str, *overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from cvg_bench.config import CONFIG_MODULE, register_schemas

    register_schemas()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return hydra_compose(config_name=command, overrides=list(overrides))


def run_args(results: Path, *extra: str) -> list[str]:
    return ["method=vanilla", "generator=dummy", "benchmark=shapes", "benchmark.limit=1",
            "benchmark.categories=[spatial_relationships]", "seeds=[0,1]",
            f"results_dir={results}", "leaderboard=false", *extra]


def do_run(results: Path, *extra: str):
    from cvg_bench.run import run

    return run(compose("run", *run_args(results, *extra)))


def record(prompt_id: str = "p1", seed: int = 0, run_hash: str = "h1", **fields) -> dict:
    rec = {
        "schema_version": 2, "run_hash": run_hash, "method": "m", "generator": "g",
        "benchmark": "bench", "benchmark_version": "1", "prompt_id": prompt_id,
        "prompt": f"prompt {prompt_id}", "category": "spatial", "split": "all", "seed": seed,
        "video_path": None, "video_size": None, "video_sha256": None,
        "scores": {"oracle/pass": 0.5}, "scores_norm": {"oracle/pass": 0.5},
        "faithfulness": 0.5, "quality": None, "details": {},
        "timings": {"generation_s": 1.0, "guidance_s": 0.0, "scoring_s": 0.1},
        "evaluators": {}, "versions": {}, "git_commit": "abc",
        "created_at": "2026-01-01T00:00:00+00:00", "error": None,
    }
    return {**rec, **fields}


def tiny_video(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    video = np.zeros((4, 16, 16, 3), np.uint8)
    video[:] = rng.integers(0, 255, 3, dtype=np.uint8)
    for t in range(4):
        video[t, 4:8, 2 * t:2 * t + 4] = 255
    return video


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


# ---------------------------------------------------------------------------------- 1. score ids


@pytest.mark.parametrize("bad_id", ["../../x", "/abs/path", "a/b", "..", ".hidden", ""])
def test_score_ids_must_be_safe_names(tmp_path, bad_id):
    from cvg_bench.score import read_prompts_file

    (tmp_path / "prompts.jsonl").write_text(
        json.dumps({"id": "ok", "prompt": PROMPTS[0]}) + "\n"
        + json.dumps({"id": bad_id, "prompt": PROMPTS[1]}) + "\n")
    with pytest.raises(ValueError, match=r"prompts.jsonl:2: id .* is not a safe name; accepted: ") as exc:
        read_prompts_file(tmp_path)
    assert "\n" not in str(exc.value)


def test_score_ids_symlinked_outside_are_refused_before_reading(tmp_path):
    from cvg_bench.records import PathEscape
    from cvg_bench.score import score_folder

    outside = tmp_path / "outside.mp4"
    write_mp4(outside, tiny_video())
    videos = tmp_path / "vids"
    videos.mkdir()
    (videos / "v0.mp4").symlink_to(outside)
    (videos / "prompts.jsonl").write_text(json.dumps({"id": "v0", "prompt": PROMPTS[0]}) + "\n")
    cfg = OmegaConf.create({"videos": str(videos), "results_dir": str(tmp_path / "res")})
    with pytest.raises(PathEscape, match="video of id 'v0' .* outside .*vids; accepted: paths inside"):
        score_folder(cfg)
    assert not (tmp_path / "res").exists()


# ---------------------------------------------------------------------------------- 2. report


def _report_fixture(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A results folder with one good sample and three hostile ones; returns (results, out,
    a folder of files outside both)."""
    results, outside = tmp_path / "results", tmp_path / "outside"
    secret = write_mp4(outside / "secret.mp4", tiny_video(7))
    good = RunStore(results, "bench", "m", "g", "h1")
    video = write_mp4(good.video_path("p1", 0), tiny_video(1))
    size, digest = file_digest(video)
    good.write(record("p1", 0, video_path="videos/p1__s0.mp4", video_size=size,
                      video_sha256=digest))
    # (a) a relative video_path leading out of the run folder to a real video
    sneaky = RunStore(results, "bench", "m", "g", "h2")
    size, digest = file_digest(secret)
    rel = os.path.relpath(secret, sneaky.root)
    sneaky.write(record("p1", 0, run_hash="h2", video_path=rel, video_size=size,
                        video_sha256=digest))
    # (b) a schema-1 record whose "video" is not a video
    plain = RunStore(results, "bench", "m", "g", "h3")
    plain.videos_dir.mkdir(parents=True)
    (plain.videos_dir / "p1__s0.mp4").write_text("not a video, a password file")
    rec_v1 = record("p1", 0, run_hash="h3", schema_version=1, video_path="videos/p1__s0.mp4")
    del rec_v1["video_size"], rec_v1["video_sha256"]
    plain.write(rec_v1)
    # (c) a run_hash that climbs out of out_dir, with an absolute video_path
    evil = results / "bench" / "m__g__h4" / "samples"
    evil.mkdir(parents=True)
    atomic_write_json(evil / "p1__s0.json",
                      record("p1", 0, run_hash="x/../../../../../../../escape",
                             video_path=str(secret), video_size=size, video_sha256=digest))
    return results, tmp_path / "a" / "b" / "out", outside


def test_report_links_only_confined_verified_videos(tmp_path, caplog):
    from cvg_bench.report import write_report

    results, out, outside = _report_fixture(tmp_path)
    before = files_under(tmp_path) - files_under(out)
    write_report([results], out)
    written_outside = files_under(tmp_path) - files_under(out) - before
    assert written_outside == set()  # nothing outside out_dir was created
    media = [p for p in files_under(out / "media") if p.suffix == ".mp4"]
    assert len(media) == 1  # the good sample only
    secret_bytes = (outside / "secret.mp4").read_bytes()
    assert all(p.read_bytes() not in (secret_bytes, b"not a video, a password file")
               for p in files_under(out))
    page = (out / "bench.html").read_text()
    assert "video unreadable" in page  # (b): decoded before linking, so never linked
    assert "m__g__h2/samples/p1__s0.json" in caplog.text and "outside" in caplog.text  # (a)
    assert "m__g__h4/samples/p1__s0.json" in caplog.text  # (c): left out, named


# ------------------------------------------------------------------------ 3. damaged videos


def test_damaged_or_missing_video_is_redone(tmp_path, caplog):
    from cvg_bench.report import write_report

    results = tmp_path / "res"
    first = do_run(results)
    assert first.done == 2
    recs = {r["seed"]: r for r in read_records(results)}
    run_dir = first.run_dir
    video0 = run_dir / recs[0]["video_path"]
    video0.write_bytes(video0.read_bytes()[: video0.stat().st_size // 2])  # truncated
    (run_dir / recs[1]["video_path"]).unlink()  # deleted
    page = write_report([results], tmp_path / "report").parent / "shapes.html"
    assert page.read_text().count("<video ") == 0  # the report links neither
    again = do_run(results)
    assert (again.done, again.skipped) == (2, 0)
    assert "changed or is damaged" in caplog.text and "is missing" in caplog.text
    for rec in read_records(results):
        assert file_digest(run_dir / rec["video_path"]) == (rec["video_size"], rec["video_sha256"])
    assert do_run(results).skipped == 2


FULL_DISK = textwrap.dedent("""
    import resource, signal, sys
    import numpy as np
    from cvg_bench.video_io import write_mp4
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    video = np.random.default_rng(0).integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4000, resource.RLIM_INFINITY))  # "disk full"
    try:
        write_mp4(sys.argv[1], video)
    except OSError as exc:
        print("RAISED", type(exc).__name__, exc)
    else:
        print("RETURNED")
""")


def test_write_mp4_fails_on_a_full_disk(tmp_path):
    target = tmp_path / "v.mp4"
    out = subprocess.run([sys.executable, "-c", FULL_DISK, str(target)], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert "RAISED VideoWriteError" in out.stdout, out.stdout + out.stderr
    assert list(tmp_path.iterdir()) == []  # no partial file, no temp file


# ------------------------------------------------------------------------ 4. validation


@pytest.mark.parametrize("bad", ["[]", "{}", "{ half"])
def test_run_survives_a_bad_record_and_moves_it_aside(tmp_path, bad):
    results = tmp_path / "res"
    do_run(results, "seeds=[0]")
    path = next(results.rglob("samples/*.json"))
    path.write_text(bad)
    again = do_run(results, "seeds=[0]")  # no traceback: the sample is redone
    assert (again.done, again.skipped) == (1, 0)
    moved = list((again.run_dir / "invalid").iterdir())
    assert [p.read_text() for p in moved] == [bad]  # kept, not deleted
    assert len(list(read_records(results))) == 1


@pytest.mark.parametrize("field, value, message", [
    ("faithfulness", 7.3, r"faithfulness = 7.3; accepted: a number in \[0, 1\]"),
    ("faithfulness", "abc", "faithfulness = 'abc'; accepted: a finite number"),
    ("seed", "0", "seed = '0'; accepted: an integer >= 0"),
    ("seed", True, "seed = True; accepted: an integer >= 0"),
    ("scores", {"a/b": float("inf")}, "scores\\['a/b'\\] = inf"),
    ("scores_norm", {"a/b": 1.5}, r"scores_norm\['a/b'\] = 1.5; accepted: a number in \[0, 1\]"),
    ("run_hash", "../up", "run_hash = '../up'; accepted: 1-120 characters"),
    ("timings", {"generation_s": -1.0, "guidance_s": 0.0}, "timings\\['generation_s'\\] = -1.0"),
    ("video_path", "videos/x.mp4", "video_size = None; accepted: the video's size"),
    ("created_at", "yesterday", "created_at = 'yesterday'; accepted: an ISO-8601 time"),
])
def test_validate_record_names_the_field(field, value, message):
    with pytest.raises(InvalidRecord, match=message) as exc:
        validate_record(record(**{field: value}))
    assert "\n" not in str(exc.value)
    validate_record(record())  # the unchanged record is valid


def test_validate_record_rejects_unknown_categories_and_fields():
    with pytest.raises(InvalidRecord, match="category = 'nonsense'; accepted: one of the run's"):
        validate_record(record(category="nonsense"), categories=["spatial", "count"])
    with pytest.raises(InvalidRecord, match="unknown field\\(s\\) extra"):
        validate_record({**record(), "extra": 1})
    with pytest.raises(InvalidRecord, match="record is a list"):
        validate_record([])


def test_leaderboard_leaves_out_invalid_records_and_names_them(tmp_path, caplog):
    from cvg_bench.leaderboard import load_records, write_leaderboards

    store = RunStore(tmp_path / "res", "bench", "m", "g", "h1")
    store.write_manifest({"categories": ["spatial", "count"]})
    store.write(record("p1", 0, faithfulness=1.0))
    store.write(record("p2", 0, faithfulness=0.0))
    planted = {"p3__s0.json": record("p3", 0, faithfulness=7.3),
               "p4__s0.json": record("p4", 0, faithfulness="abc"),
               "p5__s0.json": record("p5", "0"),
               "p6__s0.json": record("p6", 0, category="nonsense"),
               "p7__s0.json": {}}
    for name, rec in planted.items():
        (store.samples_dir / name).write_text(json.dumps(rec))
    df = load_records(tmp_path / "res")
    assert sorted(df["prompt_id"]) == ["p1", "p2"] and df["faithfulness"].mean() == 0.5
    named = " ".join(df.attrs["invalid_records"])
    assert all(name in named for name in planted)
    assert all(name in caplog.text for name in planted)
    paths = write_leaderboards([tmp_path / "res"], tmp_path / "lb")
    summary = json.loads(paths["leaderboard"].read_text())
    assert len(summary["invalid_records"]) == len(planted)
    assert summary["results"]["bench"]["results"]["m / g"]["spatial"] == 0.5


# ---------------------------------------------------------------------------- 5. score resume


def _score_folder(tmp_path: Path) -> tuple[Path, Path]:
    from cvg_bench.shapes.grammar import parse
    from cvg_bench.shapes.render import render

    videos = tmp_path / "vids"
    for i, prompt in enumerate(PROMPTS):
        write_mp4(videos / f"v{i}.mp4", render(parse(prompt, f"v{i}"), seed=i))
    (videos / "prompts.jsonl").write_text(
        "".join(json.dumps({"id": f"v{i}", "prompt": p}) + "\n" for i, p in enumerate(PROMPTS)))
    return videos, tmp_path / "res"


def test_score_resumes_by_prompt_text_and_video_hash(tmp_path):
    from cvg_bench.score import score_folder
    from cvg_bench.shapes.grammar import parse
    from cvg_bench.shapes.render import render

    videos, results = _score_folder(tmp_path)
    args = ("benchmark=shapes", f"videos={videos}", f"results_dir={results}", "label=ext")
    assert score_folder(compose("score", *args)).done == 2
    new_prompt = "a red circle on the right of a blue square"
    (videos / "prompts.jsonl").write_text(
        json.dumps({"id": "v0", "prompt": new_prompt}) + "\n"
        + json.dumps({"id": "v1", "prompt": PROMPTS[1]}) + "\n")
    write_mp4(videos / "v1.mp4", render(parse("a green square moving down", "v1"), seed=5))
    again = score_folder(compose("score", *args))
    assert (again.done, again.skipped) == (2, 0)  # not "scored 0, skipped 2"
    recs = {r["prompt_id"]: r for r in read_records(results)}
    assert recs["v0"]["prompt"] == new_prompt
    assert recs["v1"]["video_sha256"] == file_digest(videos / "v1.mp4")[1]
    assert recs["v1"]["scores"]["oracle/pass"] == 0.0  # the moving-down video fails "up"
    assert score_folder(compose("score", *args)).skipped == 2


def test_score_duplicate_ids_name_both_lines(tmp_path):
    from cvg_bench.score import read_prompts_file

    (tmp_path / "prompts.jsonl").write_text(
        json.dumps({"id": "v0", "prompt": PROMPTS[0]}) + "\n\n"
        + json.dumps({"id": "v0", "prompt": PROMPTS[1]}) + "\n")
    with pytest.raises(ValueError, match="id 'v0' is on line 1 and on line 3; accepted: each id once"):
        read_prompts_file(tmp_path)


# ------------------------------------------------------------------------ 6. checkpoints


class _Payload:
    """Pickles to a call that creates a file: what a crafted checkpoint can do on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_training_checkpoint_cannot_run_code(tmp_path):
    import torch

    from cvg_bench.cvg.training import load_checkpoint

    marker, ckpt = tmp_path / "pwned", tmp_path / "ckpt.pt"
    torch.save({"model": {}, "optimizer": {}, "epoch": 0, "x": _Payload(marker)}, ckpt)
    with pytest.raises(ValueError, match="holds more than tensors and plain data"):
        load_checkpoint(ckpt)
    assert not marker.exists()
    source = (ROOT / "cvg_bench" / "cvg" / "training.py").read_text()
    assert "weights_only=False" not in source and "load_checkpoint(ckpt)" in source


# ------------------------------------------------------------------------------- 7. locks


def test_sample_lock_excludes_and_takes_over_stale_owners(tmp_path):
    path = tmp_path / "locks" / "p__s0.lock"
    lock = SampleLock.acquire(path)
    assert lock is not None and SampleLock.acquire(path) is None  # held by a live process
    owner = json.loads(path.read_text())
    assert owner["pid"] == os.getpid() and owner["host"]
    lock.release()
    assert not path.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    from cvg_bench.records import HOST

    path.write_text(json.dumps({"pid": int(dead), "host": HOST, "token": "t"}))
    taken = SampleLock.acquire(path)  # its owner is gone
    assert taken is not None
    taken.release()
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "token": "t"}))
    assert SampleLock.acquire(path) is None  # another host, heartbeat fresh: alive
    old = time.time() - LOCK_STALE_S - 1
    os.utime(path, (old, old))
    taken = SampleLock.acquire(path)  # no heartbeat for too long: gone
    assert taken is not None
    taken.release()


def test_two_processes_split_one_run(tmp_path):
    results = tmp_path / "res"
    args = [sys.executable, "-m", "cvg_bench", "run", "method=vanilla", "generator=dummy",
            "generator.delay_s=0.4", "benchmark=shapes", "benchmark.limit=1", "seeds=[0,1]",
            f"results_dir={results}", "leaderboard=false"]
    n_jobs = 7 * 2
    # Started together, so both want every sample (without locks both made all 14).
    procs = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    done = [int(out.split("samples done: ")[1].split(",")[0]) for out, _ in outs]
    assert sum(done) == n_jobs, outs  # every sample made once, none twice
    recs = list(read_records(results))
    assert len(recs) == n_jobs
    run_dir = next(results.glob("shapes/*"))
    for rec in recs:  # each record and its video come from the same process
        assert file_digest(run_dir / rec["video_path"]) == (rec["video_size"], rec["video_sha256"])
    assert list((run_dir / "locks").iterdir()) == []


# -------------------------------------------------------------------------- 8. file modes


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_follow_the_umask(tmp_path, umask, mode):
    from cvg_bench.leaderboard import write_leaderboards
    from cvg_bench.report import write_report

    old = os.umask(umask)
    try:
        store = RunStore(tmp_path / "res", "bench", "m", "g", "h1")
        video = write_mp4(store.video_path("p1", 0), tiny_video())
        size, digest = file_digest(video)
        store.write_manifest({"categories": ["spatial"]})
        store.write(record(video_path="videos/p1__s0.mp4", video_size=size, video_sha256=digest))
        write_leaderboards([tmp_path / "res"], tmp_path / "lb")
        write_report([tmp_path / "res"], tmp_path / "report")
        lock = store.lock("p1", 0)
        lock_mode = store.locks_dir.joinpath("p1__s0.lock").stat().st_mode & 0o777
        lock.release()
    finally:
        os.umask(old)
    files = [p for p in files_under(tmp_path) if not p.is_symlink()]
    assert len(files) > 10
    assert {p.relative_to(tmp_path).as_posix(): oct(p.stat().st_mode & 0o777) for p in files} \
        == {p.relative_to(tmp_path).as_posix(): oct(mode) for p in files}
    assert lock_mode == mode
