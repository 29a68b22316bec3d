"""Fuzz (issue 31): random truncations, wrong types, path-like ids and duplicates in records and
prompt files. Nothing crashes with a traceback, nothing outside the roots is read or written,
every good sample survives. Seeded, so a failure replays."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from cvg_bench.records import RunStore, file_digest, read_records
from cvg_bench.video_io import write_mp4

PATH_LIKE = ["../../outside/secret", "/abs/path", "a/b", "..", ".", "", " ", "x\x00y",
             "../" * 8 + "etc/passwd", "ok/../../..", "~root", "C:\\x", "-rf"]
INF = float("inf")
#: Per field, values that field must never accept (each mutant is invalid, by construction).
BAD: dict[str, list] = {
    "schema_version": [0, 3, "2", 2.0, None, True],
    "run_hash": [*PATH_LIKE, 5, None],
    "method": ["", 5, None, [], *PATH_LIKE],
    "benchmark": ["", 5, None, {}, *PATH_LIKE],
    "prompt_id": [*PATH_LIKE, 5, None],
    "prompt": [5, None, [], {}],
    "category": ["nonsense", "", 5, None],
    "seed": ["0", -1, 1.0, True, None],
    "video_path": [5, "", [], {}, "../../outside/secret", "/etc/passwd", "x\x00y"],
    "video_size": ["1", -1, 1.5],
    "video_sha256": ["abc", 5, "G" * 64],
    "scores": [[], "x", {"a/b": "x"}, {"a/b": INF}, None],
    "scores_norm": [{"a/b": 1.5}, {"a/b": -0.1}, {"a/b": 1e9}, [], None],
    "faithfulness": [7.3, -0.5, "abc", True, INF, []],
    "quality": [7.3, "abc", False, -INF],
    "details": [[], "x", 5, None],
    "timings": [[], {}, {"generation_s": -1.0, "guidance_s": 0.0},
                {"generation_s": "1", "guidance_s": 0.0}],
    "evaluators": [[], {"a": 5}, "x"],
    "created_at": ["yesterday", 5, None],
    "error": [5, [], {}],
}
FIELDS = list(BAD)


def _record(pid: str, seed: int, run_hash: str, f: float, video: dict | None = None) -> dict:
    return {
        "schema_version": 2, "run_hash": run_hash, "method": "m", "generator": "g",
        "benchmark": "bench", "benchmark_version": "1", "prompt_id": pid, "prompt": f"prompt {pid}",
        "category": "spatial" if int(pid[1:]) % 2 else "count", "split": "all", "seed": seed,
        "video_path": None, "video_size": None, "video_sha256": None,
        "scores": {"o/pass": f}, "scores_norm": {"o/pass": f}, "faithfulness": f,
        "quality": None, "details": {}, "timings": {"generation_s": 1.0, "guidance_s": 0.0},
        "evaluators": {}, "versions": {}, "git_commit": "abc",
        "created_at": "2026-01-01T00:00:00+00:00", "error": None, **(video or {})}


class OpenAudit:
    """Every path opened (``open`` audit event) and every subprocess argv while active."""

    def __init__(self) -> None:
        self.active = False
        self.opened: list[str] = []
        sys.addaudithook(self._hook)  # cannot be removed: it only records while active

    def _hook(self, event: str, args: tuple) -> None:
        if not self.active:
            return
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            self.opened.append(os.fsdecode(args[0]))
        elif event == "subprocess.Popen":
            self.opened.extend(os.fsdecode(a) for a in (args[1] or []) if isinstance(a, (str, bytes)))


AUDIT = OpenAudit()


def _mutant(rng: np.random.Generator, good: dict) -> str | bytes:
    """A broken record: truncated, a field of the wrong type or value, path-like, or not JSON."""
    kind = rng.integers(6)
    rec = json.loads(json.dumps(good))
    text = json.dumps(good)
    if kind == 0:  # truncated anywhere
        return text[: rng.integers(0, len(text))]
    if kind in (1, 2):  # a field set to a wrong type or value (path-like ones included)
        field = FIELDS[rng.integers(len(FIELDS))]
        values = BAD[field]
        rec[field] = values[rng.integers(len(values))]
        if field in ("video_size", "video_sha256") and rec["video_path"] is None:
            rec["video_path"] = "videos/x.mp4"  # else null would be the right value
    elif kind == 3:  # a field missing, or an unknown one
        if rng.random() < 0.5:
            rec.pop(FIELDS[rng.integers(len(FIELDS))], None)
        else:
            rec["injected"] = "x"
    elif kind == 4:  # not an object at all / random bytes
        return [b"\xff\xfe\x00garbage", b"[]", b"null", b"42", b'"s"', b"{}"][rng.integers(6)]
    else:  # a video from another sample, or outside the run folder
        rec["video_path"] = ["../../../outside/secret.mp4", "videos/../../h1/videos/p0__s0.mp4",
                             "/abs/video.mp4"][rng.integers(3)]
        rec["video_size"], rec["video_sha256"] = 1, "0" * 64
    return json.dumps(rec, allow_nan=True)


def _results(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, dict, Path]:
    """A results folder: good samples (some with videos), mutants and duplicates beside them,
    and symlinks to an outside folder. Returns (results, good faithfulness by key, outside)."""
    results, outside = tmp_path / "results", tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret")
    (outside / "secret.json").write_text(json.dumps(_record("p0", 9, "h1", 0.5)))
    secret_video = write_mp4(outside / "secret.mp4", np.zeros((2, 8, 8, 3), np.uint8))
    good: dict[tuple, float] = {}
    for run_hash in ("h1", "h2"):
        store = RunStore(results, "bench", "m", "g", run_hash)
        store.write_manifest({"categories": ["spatial", "count"]})
        for i in range(6):
            pid, f = f"p{i}", float(rng.random())
            video = None
            if i < 2:  # a real video with its hash
                path = write_mp4(store.video_path(pid, 0), np.full((2, 8, 8, 3), 40 * i, np.uint8))
                size, digest = file_digest(path)
                video = {"video_path": f"videos/{path.name}", "video_size": size,
                         "video_sha256": digest}
            rec = _record(pid, 0, run_hash, f, video)
            store.write(rec)
            good[(run_hash, pid, 0)] = f
            for j in range(3):  # mutants at the file names of other seeds
                bad = store.samples_dir / f"{pid}__s{10 + j}.json"
                text = _mutant(rng, {**rec, "seed": 10 + j})
                bad.write_bytes(text if isinstance(text, bytes) else text.encode())
        # duplicates: a good record copied under another name and into another run folder
        dup = store.samples_dir / "p0__s0.json"
        (store.samples_dir / "copy__s0.json").write_bytes(dup.read_bytes())
        # symlinks leading out of the root
        (store.samples_dir / "p0__s9.json").symlink_to(outside / "secret.json")
        (store.videos_dir / "p1__s9.mp4").symlink_to(secret_video)
    other = RunStore(results, "bench", "m", "g", "h3")
    other.samples_dir.mkdir(parents=True)
    (other.samples_dir / "p0__s0.json").write_bytes(
        RunStore(results, "bench", "m", "g", "h1").record_path("p0", 0).read_bytes())
    return results, good, outside


def _snapshot(root: Path, skip: list[Path]) -> dict[str, tuple]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*")
            if p.is_file() and not any(p.is_relative_to(s) for s in skip)}


@pytest.mark.parametrize("seed", range(6))
def test_fuzz_records(tmp_path, seed):
    from cvg_bench.leaderboard import load_records, write_leaderboards
    from cvg_bench.report import write_report

    rng = np.random.default_rng(seed)
    results, good, outside = _results(tmp_path, rng)
    out = tmp_path / "out"
    before = _snapshot(tmp_path, [results, out])
    AUDIT.opened.clear()
    AUDIT.active = True
    try:
        invalid: list = []
        kept = {(r["run_hash"], r["prompt_id"], r["seed"]): r["faithfulness"]
                for r in read_records(results, invalid)}
        df = load_records(results)
        write_leaderboards([results], out / "lb")
        write_report([results], out / "report")
        for run_hash in ("h1", "h2"):  # what `run` does before remaking a sample
            store = RunStore(results, "bench", "m", "g", run_hash)
            for i in range(6):
                for s in (0, 9, 10, 11, 12):
                    reason = store.check_done(f"p{i}", s, move_invalid=True)
                    assert (reason is None) == ((run_hash, f"p{i}", s) in good), reason
    finally:
        AUDIT.active = False
    # every good sample survives, with its number; nothing bad gets in
    assert kept == good
    assert dict(zip(zip(df["run_hash"], df["prompt_id"], df["seed"]), df["faithfulness"])) == good
    assert invalid and all("\n" not in reason for _, reason in invalid)
    # nothing outside the roots was written, or read
    assert _snapshot(tmp_path, [results, out]) == before
    assert any(str(results) in p for p in AUDIT.opened)  # the audit does see reads
    touched = [p for p in AUDIT.opened if str(outside) in p]
    assert touched == []
    # invalid records were moved aside, never deleted
    assert list(results.rglob("invalid/*.json"))
    assert (outside / "secret.json").exists() and (outside / "secret").read_text() == "secret"


def _prompt_line(rng: np.random.Generator, i: int) -> str:
    kind = rng.integers(7)
    good = {"id": f"v{i}", "prompt": f"a red circle number {i}"}
    if kind == 0:
        return json.dumps(good)[: rng.integers(1, 20)]
    if kind == 1:
        return json.dumps({**good, "id": PATH_LIKE[rng.integers(len(PATH_LIKE))]})
    if kind == 2:
        wrong = [[], {}, 5, 7.3, None, True, "", " "]
        return json.dumps({**good, ["id", "prompt"][rng.integers(2)]:
                           wrong[rng.integers(len(wrong))]})
    if kind == 3:
        return json.dumps({"id": "v0", "prompt": "a duplicate"})
    if kind == 4:
        return ["[]", "null", "3", '"x"', "{}", '{"id": "v1"}'][rng.integers(6)]
    return json.dumps(good)


@pytest.mark.parametrize("seed", range(40))
def test_fuzz_prompt_files(tmp_path, seed):
    from cvg_bench.score import read_prompts_file

    rng = np.random.default_rng(seed)
    lines = [json.dumps({"id": "v0", "prompt": "a red circle"})]
    lines += [_prompt_line(rng, i) for i in range(1, int(rng.integers(2, 8)))]
    blob = "\n".join(lines).encode()
    if rng.random() < 0.2:
        blob = blob[: rng.integers(1, len(blob))] + (b"\xff" if rng.random() < 0.5 else b"")
    (tmp_path / "prompts.jsonl").write_bytes(blob)
    try:
        pairs = read_prompts_file(tmp_path)
    except (ValueError, FileNotFoundError) as exc:
        message = str(exc)
        assert "\n" not in message and "prompts.jsonl" in message, message
        assert "accepted" in message or "expected" in message or "holds no prompts" in message
        return
    ids = [pid for pid, _ in pairs]
    assert len(ids) == len(set(ids))
    for pid, prompt in pairs:  # only plain file names inside the folder, real prompts
        assert (tmp_path / f"{pid}.mp4").resolve().parent == tmp_path.resolve()
        assert isinstance(prompt, str) and prompt.strip()
    good = [json.loads(line) for line in blob.decode().splitlines() if line.strip()]
    assert pairs == [(g["id"], g["prompt"]) for g in good]  # every good line survives
