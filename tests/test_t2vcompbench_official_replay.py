"""Replay of the official T2V-CompBench evaluation scripts' file finding and prompt pairing on
real exports of every category (v1 and v2), written here from the rules the official README
and scripts document (not their code):

- a category folder is listed (``os.listdir``), names starting with a digit are kept and sorted;
- v1 scripts pair the i-th sorted video with the i-th entry of ``--read-prompt-file``; v2
  scripts take entry ``int(name.split(".")[0]) - 1``; both read ``entry["prompt"]`` and the
  category's own keys;
- 16 frames are extracted per video (``np.linspace`` over its frames; all when it has fewer);
  the grid categories take 6 of them, dynamic attribute binding indexes frames 1-14;
- the v2 scripts append to ``<output-path>/<t2v-model>_*.csv`` and skip as many videos as
  it has rows, so two trees sharing an output path would score one of them only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import imageio.v2 as iio
import numpy as np
import pytest

from cvg_bench.benchmarks.t2vcompbench import CATEGORIES, EXPORT_FOLDERS
from cvg_bench.cli import main as cli
from cvg_bench.export import MANIFEST, MIN_FRAMES, export_t2vcompbench
from cvg_bench import registry
from cvg_bench.scorers.base import Scorer, ScoreResult


class BrightnessScorer(Scorer):
    """A weight-free faithfulness scorer for any category (this file is about files, not
    scores): the mean pixel value in [0, 1]."""

    def score(self, video, spec):
        value = float(video.mean() / 255)
        return ScoreResult(raw={"score": value}, normalised={"score": value})


@pytest.fixture(autouse=True)
def brightness_scorer(monkeypatch):
    """Registered as scorer 'test_brightness' for this file's tests only (a copy of the scorer
    table, so the suite's other tests see the built-ins alone)."""
    registry.load_all()
    table = registry.registry("scorer")
    monkeypatch.setattr(table, "entries", dict(table.entries))
    registry.register("scorer", "test_brightness")(BrightnessScorer)


SHARED = Path(os.environ.get("CVG_TEST_T2VCOMPBENCH",
                           Path(__file__).resolve().parents[2] / "shared" / "data" / "t2vcompbench"))
needs_shared = pytest.mark.skipif(not (SHARED / "meta_data").is_dir(),
                                  reason=f"shared T2V-CompBench copy not at {SHARED}")

# the metadata keys each category's official script reads besides "prompt"
SCRIPT_KEYS = {
    "consistent_attribute_binding": ("phrases",),
    "dynamic_attribute_binding": ("state 0", "state 1"),
    "spatial_relationships": ("object_1", "object_2", "spatial"),
    "motion_binding": ("object_1", "object_2", "d_1", "d_2"),
    "action_binding": ("phrase_0", "phrase_1"),
    "object_interactions": (),
    "generative_numeracy": ("objects", "numbers"),
}
GRID = {"consistent_attribute_binding", "action_binding", "object_interactions"}


def official_listing(folder: Path) -> list[str]:
    names = [n for n in os.listdir(folder) if n[0].isdigit()]
    return sorted(names, key=lambda n: int(n.split(".")[0]))


def extracted_frames(path: Path, num: int = 16) -> int:
    """How many frames the scripts' extraction yields (np.linspace over the video's frames)."""
    reader = iio.get_reader(path, format="FFMPEG")
    try:
        total = reader.count_frames()
    finally:
        reader.close()
    return total if total <= num else len(np.linspace(0, total - 1, num, dtype=int))


def replay(folder: Path, prompt_file: Path, category: str, version: str) -> list[tuple[str, str]]:
    """(video name, prompt) pairs as the official scripts of ``version`` make them; raises
    where they would crash (KeyError, IndexError)."""
    prompts = json.loads(prompt_file.read_text())
    pairs = []
    for i, name in enumerate(official_listing(folder)):
        entry = prompts[i] if version == "v1" else prompts[int(name.split(".")[0]) - 1]
        for key in SCRIPT_KEYS[category]:
            entry[key]  # noqa: B018 - a missing key is the scripts' KeyError
        n = extracted_frames(folder / name)
        if category in GRID:
            frames = list(range(n))
            [frames[int(j)] for j in np.linspace(0, n - 1, 6, dtype=int)]  # 3 x 2 grid
        if category == "dynamic_attribute_binding":
            frames = list(range(n))
            [frames[j] for j in range(1, 15)]  # intermediate frames: IndexError below 16
        pairs.append((name, entry["prompt"]))
    return pairs


def run_and_export(tmp_path: Path, version: str, frames: int, policy: str, seeds: str = "[0,1]"):
    runs = tmp_path / "runs"
    code = cli(["run", "method=vanilla", "generator=dummy", f"generator.frames={frames}",
                "benchmark=t2vcompbench", f"benchmark.data_root={SHARED}",
                f"benchmark.version={version}", "benchmark.limit=2", f"seeds={seeds}",
                "scorer=[]", "+scorer.brightness.name=test_brightness", f"results_dir={runs}", "leaderboard=false",
                f"hydra.run.dir={tmp_path / 'hydra'}"])
    assert code == 0
    (run_dir,) = [p.parent for p in runs.rglob("samples")]
    out = tmp_path / "export"
    report = export_t2vcompbench(run_dir, out, version, data_root=SHARED, frames=policy,
                                 csv_root=str(tmp_path / "csv"))
    return run_dir, out, report


def check_replay(run_dir: Path, out: Path, version: str) -> None:
    manifest = json.loads((out / MANIFEST).read_text())
    records = {(r["prompt_id"], r["seed"]): r for r in
               (json.loads(p.read_text()) for p in (run_dir / "samples").glob("*.json"))}
    seen_outputs = set()
    for seed in (0, 1):
        for cat in CATEGORIES:
            rel = f"seed{seed}/{EXPORT_FOLDERS[cat]}"
            how = manifest["folders"][rel]
            prompt_file = Path(how["read_prompt_file"])
            pairs = replay(Path(how["video_path"]), prompt_file, cat, version)
            # every video is paired with the prompt it was generated from
            assert [p for _, p in pairs] == [records[(f"{cat}-{n:04d}", seed)]["prompt"]
                                             for n in (1, 2)]
            seen_outputs.add((how["output_path"], how["t2v_model"]))
    assert len(seen_outputs) == 2 * len(CATEGORIES)  # no two trees share a CSV (resume)


@needs_shared
def test_v1_export_passes_the_official_replay(tmp_path):
    run_dir, out, report = run_and_export(tmp_path, "v1", frames=MIN_FRAMES, policy="check")
    assert len(report.files) == 2 * 2 * len(CATEGORIES)
    assert all(f["frames"] == MIN_FRAMES and "resampled_from" not in f for f in report.files)
    check_replay(run_dir, out, "v1")


@needs_shared
def test_v2_export_passes_the_official_replay_with_the_official_key(tmp_path):
    """The shared v2 copy is a mirror keyed "caption": the export writes "prompt"."""
    mirror = json.loads((SHARED / "v2" / "meta_data" / "spatial_relationships.json").read_text())
    assert "caption" in mirror[0] and "prompt" not in mirror[0]
    with pytest.raises(KeyError, match="prompt"):  # the official scripts on the mirror's file
        mirror[0]["prompt"]
    run_dir, out, report = run_and_export(tmp_path, "v2", frames=8, policy="resample")
    assert all(f["frames"] == 8 and f["resampled_from"] == 8 for f in report.files)
    check_replay(run_dir, out, "v2")
    video = out / "seed0" / "dynamic_attr" / "0001.mp4"
    assert extracted_frames(video) == MIN_FRAMES


@needs_shared
def test_short_videos_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"fewer than the 16 frames.*resample=true"):
        run_and_export(tmp_path, "v1", frames=8, policy="check", seeds="[0]")
    assert not (tmp_path / "export").exists()


def test_replay_catches_what_the_official_scripts_would_trip_on(tmp_path):
    """The replay itself fails on a mirror key, a short video and a wrong pairing."""
    from cvg_bench.video_io import write_mp4

    folder = tmp_path / "dynamic_attr"
    write_mp4(folder / "0001.mp4", np.zeros((16, 16, 16, 3), np.uint8))
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps([{"caption": "x", "state 0": "a", "state 1": "b"}]))
    with pytest.raises(KeyError):
        replay(folder, meta, "dynamic_attribute_binding", "v2")
    meta.write_text(json.dumps([{"prompt": "x", "state 0": "a", "state 1": "b"}]))
    assert replay(folder, meta, "dynamic_attribute_binding", "v2") == [("0001.mp4", "x")]
    write_mp4(folder / "0001.mp4", np.zeros((8, 16, 16, 3), np.uint8))
    with pytest.raises(IndexError):
        replay(folder, meta, "dynamic_attribute_binding", "v1")
    (folder / "0001.mp4").rename(folder / "0002.mp4")
    with pytest.raises(IndexError):  # v2 looks up entry 2 of 1
        replay(folder, meta, "object_interactions", "v2")
