"""CVG on a real generator's pipeline, end to end on tiny random ``wan`` and ``zeroscope``:
generate -> label (a stub labeller, named as one) -> cache -> train -> ``run method=cvg
benchmark=t2vcompbench benchmark.limit=1`` with the trained classifier, on the shared
T2V-CompBench copy (read in place, never copied). Plumbing only: random weights, stub labels.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from cvg_bench import registry
from cvg_bench.cli import main as cli
from cvg_bench.labellers.base import Labelled, Labeller
from cvg_bench.scorers.base import Scorer, ScoreResult

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CVG_TEST_T2VCOMPBENCH",
                             ROOT.parent / "shared" / "data" / "t2vcompbench"))
needs_shared = pytest.mark.skipif(not (SHARED / "meta_data").is_dir(),
                                  reason=f"shared T2V-CompBench copy not at {SHARED}")
CATS = ["spatial_relationships", "motion_binding"]

pytestmark = pytest.mark.usefixtures("torch_one_thread")


class StubLabellerForTests(Labeller):
    """STUB labeller for plumbing tests: a label of Y picked by a hash of the video's bytes
    (one video in five: none). It looks at nothing; it only exercises the path."""

    def label(self, video, spec):
        h = int(hashlib.sha256(np.ascontiguousarray(video).tobytes()).hexdigest(), 16)
        if h % 5 == 0:
            return Labelled(None, "stub: ambiguous")
        return Labelled(spec.label_set[h % len(spec.label_set)], "stub: hash of the video")


class BrightnessScorer(Scorer):
    """A weight-free scorer for any category (the run's preflight needs one that can score
    every prompt): the mean pixel value in [0, 1]."""

    def score(self, video, spec):
        value = float(video.mean() / 255)
        return ScoreResult(raw={"score": value}, normalised={"score": value})


def random_wan(**kwargs):
    from cvg_bench.generators.wan import WanGenerator, build_random_wan_pipeline

    class RandomWanForTests(WanGenerator):
        """WanGenerator.random()'s pipeline under configs/generator/wan.yaml's keys."""

        def __init__(self, **kw):
            super().__init__(**{**kw, "pipeline": build_random_wan_pipeline(0, 2)})

    return RandomWanForTests


def random_zeroscope():
    from cvg_bench.generators.unet3d import build_random_t2v_pipeline
    from cvg_bench.generators.zeroscope import ZeroScopeGenerator

    class RandomZeroScopeForTests(ZeroScopeGenerator):
        """ZeroScopeGenerator.random()'s pipeline under configs/generator/zeroscope.yaml's keys."""

        def __init__(self, **kw):
            super().__init__(**{**kw, "pipeline": build_random_t2v_pipeline(0)})

    return RandomZeroScopeForTests


# generator -> (test class, overrides of configs/generator/<name>.yaml = what .random() uses)
GENERATORS = {
    "wan": (random_wan, {"device": "cpu", "num_frames": 5, "height": 32, "width": 48,
                         "num_inference_steps": 4, "max_sequence_length": 64,
                         "torch_dtype": "float32", "vae_dtype": None, "model": "random-seed0"}),
    "zeroscope": (random_zeroscope, {"device": "cpu", "num_frames": 4, "height": 16, "width": 16,
                                     "num_inference_steps": 4, "torch_dtype": "float32",
                                     "model": "random-seed0"}),
}


@pytest.fixture
def test_plugins(monkeypatch):
    """The random generators, the stub labeller and the test scorer, registered for this
    file's tests only (copies of the tables)."""
    registry.load_all()
    for kind in ("generator", "labeller", "scorer"):
        table = registry.registry(kind)
        monkeypatch.setattr(table, "entries", dict(table.entries))
    registry.register("generator", "test_random_wan")(GENERATORS["wan"][0]())
    registry.register("generator", "test_random_zeroscope")(GENERATORS["zeroscope"][0]())
    registry.register("labeller", "stub_labeller_for_tests")(StubLabellerForTests)
    registry.register("scorer", "test_brightness")(BrightnessScorer)


def generator_node(name: str) -> dict:
    """configs/generator/<name>.yaml with the random pipeline's sizes, under the test name."""
    node = yaml.safe_load((ROOT / "configs/generator" / f"{name}.yaml").read_text())
    return {**node, **GENERATORS[name][1], "name": f"test_random_{name}"}


def train_cfg(tmp_path: Path, name: str, n_videos: int, train: int, val: int):
    cfg = OmegaConf.load(ROOT / "configs/component/classifier.yaml")
    cfg.generator = generator_node(name)
    # the random pipelines have 2 (wan) / 4 (zeroscope) cross-attention layers, not the real
    # models' (configs/generator/cvg/<name>.yaml): every layer, heads 0-1 (zeroscope's layers
    # have 2 or 4), T = the first 2 steps
    cfg.features.update({"k": "entity_words", "layers": [], "heads": [0, 1], "steps": [0, 1],
                         "map_size": 4, "max_entities": 2})
    cfg.categories = CATS
    cfg.backbone = {"name": "none"}
    cfg.aggregator = {"d_model": 16, "depth": 1}
    cfg.data.update({"source": "generate", "train": train, "val": val, "shard_size": 2,
                     "benchmark": {"name": "t2vcompbench", "data_root": str(SHARED),
                                   "categories": CATS, "limit": 6},
                     "labeller": {"name": "stub_labeller_for_tests"},
                     "generate": {"out": str(tmp_path / "generated"), "num_videos": n_videos}})
    cfg.optim = {"epochs": 2, "batch_size": 4, "lr": 1e-3, "augment": []}
    cfg.compare_without_dual = cfg.compare_backbone_none = False
    cfg.cache_dir, cfg.out = str(tmp_path / "cache"), str(tmp_path / "clf")
    # the config's own ablations_out is the shipped assets folder: a test must never write there
    # (this one once overwrote cvg_classifier_v3_ablations/backbone_video_encoder)
    cfg.ablations_out = str(tmp_path / "ablations")
    return cfg


def generate_label_cache_train_run(tmp_path: Path, name: str, tasks: int = 1) -> dict:
    from cvg_bench.cvg.pipeline import train_cvg_classifier

    cfg = train_cfg(tmp_path, name, n_videos=10, train=4, val=2)
    if tasks > 1:  # the SLURM array: each task generates its share, then caches its shards
        cfg.data.stream = "indexed"
        cfg.cache_tasks = tasks
        for _ in range(2):
            for k in range(tasks):
                cfg.cache_task = k
                train_cvg_classifier(cfg)
        cfg.cache_tasks, cfg.cache_task = 1, 0
    report = train_cvg_classifier(cfg)
    generated = tmp_path / "generated"
    kept = [json.loads(x) for x in (generated / "prompts.jsonl").read_text().splitlines()]
    rejected = (generated / "rejected.jsonl").read_text().splitlines()
    assert len(kept) + len(rejected) == 10 and rejected  # the stub rejects some
    assert all((generated / f"{row['id']}.mp4").is_file() for row in kept)
    assert report["generator_name"] == f"test_random_{name}"
    runs = tmp_path / "runs"
    overrides = [f"generator.{k}={'null' if v is None else v}" for k, v in GENERATORS[name][1].items()]
    code = cli(["run", "method=cvg", f"method.classifier={cfg.out}", "method.guided_steps=1",
                f"generator={name}", f"generator.name=test_random_{name}", *overrides,
                "benchmark=t2vcompbench", f"benchmark.data_root={SHARED}", "benchmark.limit=1",
                f"benchmark.categories=[{','.join(CATS)}]", "seeds=[0]", "scorer=[]",
                "+scorer.brightness.name=test_brightness", f"results_dir={runs}",
                "leaderboard=false", "fail_fast=true", f"hydra.run.dir={tmp_path / 'hydra'}"])
    assert code == 0
    records = [json.loads(p.read_text()) for p in runs.rglob("samples/*.json")]
    assert sorted(r["category"] for r in records) == sorted(CATS)
    for r in records:
        assert r["error"] is None and r["method"] == "cvg"
        guidance = r["details"]["guidance"]
        assert guidance and json.dumps(guidance)  # CVG's per-step record from the hook
    return report


@needs_shared
@pytest.mark.parametrize("name", ["wan", "zeroscope"])
def test_generate_label_cache_train_and_guide_on_t2vcompbench(tmp_path, test_plugins, name):
    report = generate_label_cache_train_run(tmp_path, name)
    assert 0.0 <= report["dual"]["val_acc_pos"]["mean"] <= 1.0
    assert report["generated"]["kept"] >= 6


@needs_shared
def test_the_same_through_a_two_task_array(tmp_path, test_plugins):
    report = generate_label_cache_train_run(tmp_path, "wan", tasks=2)
    assert report["generated"]["kept"] >= 6


@needs_shared
def test_guiding_another_generator_is_an_error(tmp_path, test_plugins):
    """A classifier trained on random wan's maps refuses zeroscope's."""
    from cvg_bench.cvg.pipeline import train_cvg_classifier

    cfg = train_cfg(tmp_path, "zeroscope", n_videos=10, train=4, val=2)
    train_cvg_classifier(cfg)
    method = registry.build("method", {"name": "cvg", "classifier": cfg.out, "guided_steps": 1})
    other = registry.build("generator", generator_node("wan"))
    from cvg_bench.benchmarks.t2vcompbench import T2VCompBench

    spec = T2VCompBench(data_root=str(SHARED), categories=["spatial_relationships"], limit=1).prompts()[0]
    with pytest.raises(ValueError, match="trained on the cross-attention maps of generator "
                                         "'zeroscope:random-seed0', not of 'wan:random-seed0'"):
        method.prepare(other, spec)


def test_folder_labels_must_be_in_the_t2vcompbench_label_set(tmp_path):
    """A T2V-CompBench prompt in a folder: parsed by its adapter (the suite looked up by
    text); p+ / p- rewrite its relation words; a label outside Y names the line."""
    if not (SHARED / "meta_data").is_dir():
        pytest.skip(f"shared T2V-CompBench copy not at {SHARED}")
    from cvg_bench.cvg.sources import PromptParser, read_folder
    from cvg_bench.video_io import write_mp4

    parser = PromptParser({"name": "t2vcompbench", "data_root": str(SHARED), "categories": CATS})
    spec = [s for s in parser.prompts() if s.category == "spatial_relationships"
            and len(s.relation_spans) == 1][0]
    wrong = "below" if spec.label != "below" else "above"
    write_mp4(tmp_path / "a.mp4", np.zeros((4, 16, 16, 3), np.uint8))
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"id": "a", "prompt": spec.prompt,
                                                        "label": wrong}) + "\n")
    (item,), skipped = read_folder(tmp_path, parser, CATS)
    assert not skipped and item.spec.label == wrong and f" {wrong} " in item.spec.prompt
    tokens = {item.spec.prompt[a:b] for e in item.spec.entities for a, b in e.word_spans}
    assert tokens == {spec.prompt[a:b] for e in spec.entities for a, b in e.word_spans}
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"id": "a", "prompt": spec.prompt,
                                                        "label": "on the left of"}) + "\n")
    with pytest.raises(ValueError, match=r"prompts.jsonl:1: label 'on the left of' is not in "
                                         r"the prompt's label set Y; accepted: \['left'"):
        read_folder(tmp_path, parser, CATS)
