"""The check before any generation: default scorers per benchmark, can_score, weights."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from cvg_bench import registry
from cvg_bench.cli import main as cli
from cvg_bench.preflight import PreflightError, RoutedScorer, check_scorers
from cvg_bench.run import score_video
from cvg_bench.types import PromptSpec

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "t2vcompbench"
needs_shared = pytest.mark.skipif(not (SHARED / "meta_data").is_dir(), reason="no shared copy")


def spec(cat, pid="x-0001", meta=None, label=None):
    return PromptSpec(prompt_id=pid, prompt="a dog on the left of a cat", category=cat,
                      entities=(), label=label, label_set=(), relation_spans=(), split="all",
                      meta={"metadata": meta or {}})


@needs_shared
def test_the_issue_command_stops_before_generating_naming_scorer_category_download_key(
        tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CVG_BENCH_MODELS", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    code = cli(["run", "method=vanilla", "generator=dummy", "benchmark=t2vcompbench",
                f"benchmark.data_root={SHARED}", "benchmark.limit=1", "seeds=[0]",
                f"results_dir={tmp_path / 'runs'}", f"hydra.run.dir={tmp_path / 'h'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "nothing was generated" in err
    for name, key, cat in (("vlm", "model_id", "object_interactions"),
                           ("detector", "model_id", "generative_numeracy"),
                           ("motion", "model_id", "motion_binding")):
        assert f"scorer {name!r} (needed for" in err and cat in err
        assert f"scorer.{name}.{key}=" in err
    assert "huggingface-cli download llava-hf/llava-v1.6-34b-hf" in err
    assert not (tmp_path / "runs").exists()  # no run dir, no video


@needs_shared
def test_a_scorer_that_cannot_parse_the_prompts_is_refused_first(tmp_path, capsys):
    code = cli(["run", "method=vanilla", "generator=dummy", "benchmark=t2vcompbench",
                f"benchmark.data_root={SHARED}", "benchmark.limit=1", "seeds=[0]",
                "scorer=[oracle]", f"results_dir={tmp_path / 'runs'}",
                f"hydra.run.dir={tmp_path / 'h'}"])
    err = capsys.readouterr().err
    assert code == 2 and "scorer 'oracle' cannot score category 'spatial_relationships'" in err
    assert "not a shapes-world prompt" in err and not (tmp_path / "runs").exists()


def test_shapes_defaults_are_oracle_and_quality(tmp_path):
    from hydra import compose, initialize_config_module

    from cvg_bench.config import register_schemas

    register_schemas()
    with initialize_config_module("cvg_bench.configs", version_base="1.3"):
        assert list(compose("run").scorer) == ["oracle", "quality"]
        cfg = compose("run", overrides=["benchmark=t2vcompbench", "scorer.vlm.model_id=/m"])
        assert list(cfg.scorer) == ["vlm", "detector", "motion"] and cfg.scorer.vlm.model_id == "/m"
        assert list(compose("run", overrides=["benchmark=t2vcompbench", "scorer=[clip]"]).scorer) == ["clip"]
        assert cfg.benchmark.scorers.spatial_relationships == ["detector"]


def test_can_score_reasons_without_loading_anything():
    det = registry.build("scorer", {"name": "detector"})
    assert det.can_score(spec("spatial_relationships", meta={"object_1": "dog", "object_2": "cat"},
                              label="left")) is None
    assert "depth_model_id" in det.can_score(spec("spatial_relationships", label="behind",
                                                  meta={"object_1": "dog", "object_2": "cat"}))
    assert "scores only" in det.can_score(spec("motion_binding"))
    vlm = registry.build("scorer", {"name": "vlm"})
    assert "two phrases" in vlm.can_score(spec("consistent_attribute_binding"))
    assert vlm.model is None and det.detector.model is None


def test_missing_weights_error_and_uncovered_categories(tmp_path, monkeypatch):
    monkeypatch.delenv("CVG_BENCH_MODELS", raising=False)
    motion = registry.build("scorer", {"name": "motion", "model_id": str(tmp_path / "nothing")})
    specs = [spec("motion_binding", meta={"object_1": "dog", "d_1": "left"})]
    with pytest.raises(PreflightError, match=r"scorer 'motion' \(needed for motion_binding\).*"
                                             r"scorer\.motion\.model_id="):
        check_scorers({"motion": motion}, specs)
    quality = registry.build("scorer", {"name": "quality"})
    with pytest.raises(ValueError, match="no scorer of this run .quality. scores category "
                                         "'motion_binding'.*default is \\['motion'\\]"):
        check_scorers({"quality": quality}, specs, {"motion_binding": ["motion"]})


class Const(registry.get("scorer", "quality").__mro__[1]):  # a Scorer
    role = "faithfulness"

    def __init__(self, cats, value):
        self.categories, self.value = cats, value

    def score(self, video, spec):
        from cvg_bench.scorers.base import ScoreResult

        v = self.value if spec.category in self.categories else math.nan
        return ScoreResult(raw={"score": v}, normalised={"score": v})


def test_routing_gives_each_category_its_own_judges_faithfulness():
    scorers = {"vlm": Const(("action_binding",), 0.3), "detector": Const(("spatial_relationships",), 0.7)}
    specs = [spec("action_binding"), spec("spatial_relationships", pid="s")]
    routed = check_scorers(scorers, specs, {"spatial_relationships": ["detector"],
                                            "action_binding": ["vlm"]}, load=False)
    assert all(isinstance(s, RoutedScorer) for s in routed.values())
    video = np.zeros((2, 4, 4, 3), np.uint8)
    assert score_video(routed, video, specs[1])["faithfulness"] == 0.7  # not the vlm's NaN
    assert score_video(routed, video, specs[0])["faithfulness"] == 0.3
