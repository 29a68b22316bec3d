"""Export of run directories into T2V-CompBench's and VBench's own layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cvg_bench.benchmarks.t2vcompbench import V1_PROMPT_FILES
from cvg_bench.video_io import write_mp4
from cvg_bench.cli import main as cli
from cvg_bench.export import MANIFEST, export_t2vcompbench, export_vbench, vbench_file_name

SUITE = {  # two prompts per category in the v1 format (the export reads only the prompts)
    "spatial_relationships": [
        {"prompt": "A dog running on the left of a bicycle", "spatial": "left", "object_1": "dog",
         "object_2": "bicycle"},
        {"prompt": "A cat sitting on the right of a fireplace", "spatial": "right",
         "object_1": "cat", "object_2": "fireplace"}],
    "generative_numeracy": [
        {"prompt": "two cats chase a butterfly", "objects": "cat", "numbers": "2"},
        {"prompt": "three dogs play in the snow", "objects": "dog", "numbers": "3"}],
}
OTHER = ["consistent_attribute_binding", "dynamic_attribute_binding", "motion_binding",
         "action_binding", "object_interactions"]


def write_suite(root: Path) -> Path:
    (root / "meta_data").mkdir(parents=True)
    (root / "prompts").mkdir()
    for cat in list(SUITE) + OTHER:
        rows = SUITE.get(cat, [{"prompt": f"a {cat} prompt"}])
        (root / "meta_data" / f"{cat}.json").write_text(json.dumps(rows))
        (root / "prompts" / V1_PROMPT_FILES[cat]).write_text("\n".join(r["prompt"] for r in rows))
    return root


def tiny_video(frames: int, seed: int = 0) -> np.ndarray:
    """A real, small video (the export counts frames by decoding)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (frames, 16, 16, 3), dtype=np.uint8)


def write_run(run_dir: Path, samples: list[dict], benchmark: str = "t2vcompbench",
              version: str = "t2vcompbench-v1@sha256:0123456789ab") -> Path:
    """A run directory as the harness writes it: samples/<stem>.json + videos/<stem>.mp4."""
    (run_dir / "samples").mkdir(parents=True)
    (run_dir / "videos").mkdir()
    for s in samples:
        stem = f"{s['prompt_id']}__s{s['seed']}"
        video = None
        if not s.get("error"):
            video = f"videos/{stem}.mp4"
            write_mp4(run_dir / video, tiny_video(s.get("frames", 16), s["seed"]))
        record = {"schema_version": 1, "benchmark": benchmark, "benchmark_version": version,
                  "prompt_id": s["prompt_id"], "prompt": s["prompt"], "category": s["category"],
                  "split": "all", "seed": s["seed"], "video_path": video,
                  "error": s.get("error"), "method": "vanilla", "generator": "dummy"}
        (run_dir / "samples" / f"{stem}.json").write_text(json.dumps(record))
    return run_dir


def t2v_samples(seeds=(0, 1), cats=("spatial_relationships", "generative_numeracy"), upto=2):
    return [{"prompt_id": f"{c}-{i:04d}", "prompt": SUITE[c][i - 1]["prompt"], "category": c,
             "seed": s} for c in cats for i in range(1, upto + 1) for s in seeds]


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_t2v_complete_categories_keep_suite_numbers(tmp_path):
    suite = write_suite(tmp_path / "suite")
    run = write_run(tmp_path / "run", t2v_samples())
    out = tmp_path / "out"
    report = export_t2vcompbench(run, out, "v1", data_root=suite)
    assert files(out) == [MANIFEST,
                          "seed0/generative_numeracy/0001.mp4", "seed0/generative_numeracy/0002.mp4",
                          "seed0/meta_data/generative_numeracy.json",
                          "seed0/meta_data/spatial_relationships.json",
                          "seed0/spatial_relationships/0001.mp4", "seed0/spatial_relationships/0002.mp4",
                          "seed1/generative_numeracy/0001.mp4", "seed1/generative_numeracy/0002.mp4",
                          "seed1/meta_data/generative_numeracy.json",
                          "seed1/meta_data/spatial_relationships.json",
                          "seed1/spatial_relationships/0001.mp4", "seed1/spatial_relationships/0002.mp4"]
    exported = out / "seed1/spatial_relationships/0002.mp4"
    assert exported.read_bytes() == (run / "videos/spatial_relationships-0002__s1.mp4").read_bytes()
    assert exported.samefile(run / "videos/spatial_relationships-0002__s1.mp4")  # a hard link
    assert report.missing == {}
    manifest = json.loads((out / MANIFEST).read_text())
    assert len(manifest["files"]) == 8
    # with the suite, every category gets a metadata file with the official key "prompt"
    meta = manifest["folders"]["seed0/spatial_relationships"]["read_prompt_file"]
    assert json.loads(Path(meta).read_text()) == SUITE["spatial_relationships"]
    # one tree per seed, each with its own CSV output and model name (the v2 scripts resume)
    advice = {(f["output_path"], f["t2v_model"]) for f in manifest["folders"].values()}
    assert len(advice) == 4 and any("resume" in n for n in manifest["notes"])



def test_t2v_one_seed_flat_and_copy(tmp_path):
    suite = write_suite(tmp_path / "suite")
    run = write_run(tmp_path / "run", t2v_samples())
    out = tmp_path / "out"
    export_t2vcompbench(run, out, "v1", seed=1, mode="copy", data_root=suite)
    assert "spatial_relationships/0001.mp4" in files(out)
    copied = out / "spatial_relationships/0001.mp4"
    assert not copied.samefile(run / "videos/spatial_relationships-0001__s1.mp4")
    assert copied.read_bytes() == (run / "videos/spatial_relationships-0001__s1.mp4").read_bytes()


def test_t2v_partial_export_renumbers_and_writes_matching_metadata(tmp_path, monkeypatch):
    monkeypatch.delenv("CVG_T2VCOMPBENCH_ROOT", raising=False)
    suite = write_suite(tmp_path / "suite")
    samples = [s for s in t2v_samples(seeds=(0,)) if s["prompt_id"] == "spatial_relationships-0002"]
    run = write_run(tmp_path / "run", samples)
    with pytest.raises(ValueError, match="partial export.*data_root"):
        export_t2vcompbench(run, tmp_path / "out0", "v1", seed=0)
    assert not (tmp_path / "out0").exists()  # nothing written before the error
    out = tmp_path / "out"
    report = export_t2vcompbench(run, out, "v1", seed=0, data_root=suite)
    assert files(out) == [MANIFEST, "meta_data/spatial_relationships.json",
                          "spatial_relationships/0001.mp4"]
    assert (out / "spatial_relationships/0001.mp4").read_bytes() == (run / "videos/spatial_relationships-0002__s0.mp4").read_bytes()
    meta = json.loads((out / "meta_data/spatial_relationships.json").read_text())
    assert meta == [SUITE["spatial_relationships"][1]]
    assert report.missing == {"spatial_relationships": ["spatial_relationships-0001"]}


def test_t2v_refuses_mismatched_records(tmp_path):
    suite = write_suite(tmp_path / "suite")
    run = write_run(tmp_path / "run", t2v_samples(), version="t2vcompbench-v2@sha256:0123456789ab")
    with pytest.raises(ValueError, match="not T2V-CompBench v1"):
        export_t2vcompbench(run, tmp_path / "out", "v1", data_root=suite)
    wrong = t2v_samples(seeds=(0,))
    wrong[0]["prompt"] = "some other prompt"
    run2 = write_run(tmp_path / "run2", wrong)
    with pytest.raises(ValueError, match="suite's prompt 1"):
        export_t2vcompbench(run2, tmp_path / "out", "v1", data_root=suite)
    vb = write_run(tmp_path / "run3", t2v_samples(), benchmark="vbench")
    with pytest.raises(ValueError, match="benchmark"):
        export_t2vcompbench(vb, tmp_path / "out", "v1", data_root=suite)


def test_t2v_duplicates_errors_and_existing_output(tmp_path):
    suite = write_suite(tmp_path / "suite")
    samples = t2v_samples(seeds=(0,))
    write_run(tmp_path / "runs/a", samples)
    write_run(tmp_path / "runs/b", samples[:1])
    with pytest.raises(ValueError, match="appears in two runs"):
        export_t2vcompbench(tmp_path / "runs", tmp_path / "out", "v1", data_root=suite)
    failed = [dict(s) for s in samples]
    failed[0]["error"] = "RuntimeError: boom"
    run = write_run(tmp_path / "failed", failed)
    report = export_t2vcompbench(run, tmp_path / "out", "v1", seed=0, data_root=suite)
    assert report.skipped == [{"prompt_id": failed[0]["prompt_id"], "seed": 0,
                               "reason": "RuntimeError: boom"}]
    assert report.missing == {"spatial_relationships": ["spatial_relationships-0001"]}
    with pytest.raises(FileExistsError, match="not empty"):
        export_t2vcompbench(run, tmp_path / "out", "v1", seed=0, data_root=suite)
    (tmp_path / "out/spatial_relationships/notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        export_t2vcompbench(run, tmp_path / "out", "v1", seed=0, data_root=suite, overwrite=True)
    (tmp_path / "out/spatial_relationships/notes.txt").unlink()
    export_t2vcompbench(run, tmp_path / "out", "v1", seed=0, data_root=suite, overwrite=True)


def test_records_without_run_dir_need_one(tmp_path):
    run = write_run(tmp_path / "run", t2v_samples(seeds=(0,)))
    records = [json.loads(p.read_text()) for p in sorted((run / "samples").glob("*.json"))]
    with pytest.raises(ValueError, match="run_dir"):
        export_t2vcompbench(records, tmp_path / "out", "v1")
    suite = write_suite(tmp_path / "suite")
    report = export_t2vcompbench(records, tmp_path / "out", "v1", seed=0, run_dir=run, data_root=suite)
    assert len(report.files) == 4


VB_SAMPLES = [
    {"prompt_id": "color-0001", "prompt": "a red bicycle", "category": "color"},
    {"prompt_id": "Composition-0001", "prompt": "A lion with the wings of an eagle. " * 8,
     "category": "Composition"},
]


def test_vbench_names_by_prompt_and_seed_rank(tmp_path):
    samples = [{**s, "seed": seed} for s in VB_SAMPLES for seed in (10, 11, 12, 13, 14)]
    run = write_run(tmp_path / "run", samples, benchmark="vbench", version="vbench@45e79ec")
    out = tmp_path / "out"
    report = export_vbench(run, out)
    long_stem = VB_SAMPLES[1]["prompt"][:180]
    assert files(out) == sorted([MANIFEST] + [f"color/a red bicycle-{i}.mp4" for i in range(5)]
                                + [f"Composition/{long_stem}-{i}.mp4" for i in range(5)])
    assert (out / "color/a red bicycle-2.mp4").read_bytes() == (run / "videos/color-0001__s12.mp4").read_bytes()
    assert report.missing == {}
    assert any("reads indices 0..2" in n for n in report.notes)  # VBench-2.0 takes 3 samples
    # fewer seeds than VBench's protocol: listed as missing
    run2 = write_run(tmp_path / "run2", [{**VB_SAMPLES[0], "seed": 0}], benchmark="vbench")
    report2 = export_vbench(run2, tmp_path / "out2")
    assert report2.missing == {"color": [f"color-0001 index {i}" for i in range(1, 5)]}


def test_vbench_file_names_that_cannot_exist():
    assert vbench_file_name("a red bicycle", 3, "color") == "a red bicycle-3.mp4"
    with pytest.raises(ValueError, match="'/'"):
        vbench_file_name("a cat on a 1/2 pipe", 0, "color")
    with pytest.raises(ValueError, match="255-byte"):
        vbench_file_name("a very long prompt " * 20, 0, "multiple_objects")
    with pytest.raises(ValueError, match="unknown VBench dimension"):
        vbench_file_name("x", 0, "colour")


def test_cli(tmp_path, capsys):
    suite = write_suite(tmp_path / "suite")
    run = write_run(tmp_path / "run", t2v_samples())
    assert cli(["export", "suite=t2vcompbench", f"run_dir={run}", f"out_dir={tmp_path / 'out'}", "seed=0",
                f"data_root={suite}"]) == 0
    assert "exported 4 videos" in capsys.readouterr().out
    assert cli(["export", f"run_dir={tmp_path / 'nowhere'}", f"out_dir={tmp_path / 'o2'}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli(["export", "suite=vbench2", f"run_dir={run}", f"out_dir={tmp_path / 'o3'}"]) == 2
    assert "suite='vbench2'; accepted: t2vcompbench, vbench" in capsys.readouterr().err
