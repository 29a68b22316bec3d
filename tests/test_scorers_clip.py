"""clip scorer on a tiny random open_clip model (registered from a config file, as open_clip
does for its own architectures): plumbing, normalisation, checkpoint loading, readiness errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from cvg_bench import registry
from cvg_bench.scorers import clip as cs
from cvg_bench.scorers._common import MODELS_ENV, ScorerNotReady
from cvg_bench.types import PromptSpec

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "scorer"
SPEC = PromptSpec(prompt_id="p", prompt="a red circle on the left of a blue square",
                  category="spatial_relationships")
TINY = "cvg-test-tiny-clip"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    import open_clip

    folder = tmp_path_factory.mktemp("open_clip")
    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (folder / f"{TINY}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder / f"{TINY}.json")
    return TINY


def _video(frames: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, 20, 24, 3), dtype=np.uint8)


def test_config_file_is_a_scorer_package_and_builds():
    assert (CONFIGS / "clip.yaml").read_text().splitlines()[0] == "# @package scorer.clip"
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / "clip.yaml"))
    assert cfg.pop("name") == cs.ClipScorer.registered_name
    registry.check_kwargs("scorer 'clip'", cs.ClipScorer, cfg)
    scorer = cs.ClipScorer(**cfg)
    assert scorer.model is None and scorer.pretrained == "openai" and not scorer.is_random


def test_normalisation_constants():
    assert cs.normalise_clip_score(0.25, 0.15, 0.35) == pytest.approx(0.5)
    assert cs.normalise_clip_score(0.10, 0.15, 0.35) == 0.0
    assert cs.normalise_clip_score(0.50, 0.15, 0.35) == 1.0
    with pytest.raises(ValueError):
        cs.ClipScorer(norm_lo=0.3, norm_hi=0.3)


def test_random_model_warns_and_scores(tiny):
    scorer = cs.ClipScorer(model=tiny, pretrained=None, batch_size=2)
    with pytest.warns(RuntimeWarning, match="RANDOM"):
        scorer.check_ready()
    assert scorer.version().endswith(f"{tiny}/random")
    video = _video(3)
    result = scorer.score(video, SPEC)
    # the metric is the mean frame-prompt cosine of unit embeddings
    img, txt = scorer.embed_frames(video), scorer.embed_text(SPEC.prompt)
    np.testing.assert_allclose(np.linalg.norm(img.numpy(), axis=1), 1.0, atol=1e-5)
    assert result.raw["clip_score"] == pytest.approx(float((img @ txt).mean()), abs=1e-5)
    assert result.normalised["clip_score"] == pytest.approx(
        cs.normalise_clip_score(result.raw["clip_score"], 0.15, 0.35))
    assert result.raw["temporal_consistency"] == pytest.approx(
        float((img[1:] * img[:-1]).sum(-1).mean()), abs=1e-5)
    assert len(result.details["frame_scores"]) == 3
    # identical frames are perfectly consistent; one frame has no consecutive pair
    same = scorer.score(np.repeat(video[:1], 4, axis=0), SPEC)
    assert same.raw["temporal_consistency"] == pytest.approx(1.0, abs=1e-5)
    assert math.isnan(scorer.score(video[:1], SPEC).raw["temporal_consistency"])
    # the text matters
    other = scorer.score(video, PromptSpec(prompt_id="q", prompt="zebra", category="x"))
    assert other.raw["clip_score"] != pytest.approx(result.raw["clip_score"], abs=1e-6)


def test_local_checkpoint_loads_its_weights(tiny, tmp_path, monkeypatch):
    import torch

    random_scorer = cs.ClipScorer(model=tiny, pretrained=None)
    random_scorer.load()
    (tmp_path / "clips").mkdir()
    torch.save(random_scorer.model.state_dict(), tmp_path / "clips" / "tiny.pt")
    monkeypatch.setenv(MODELS_ENV, str(tmp_path))  # relative paths are looked up there
    scorer = cs.ClipScorer(model=tiny, pretrained="clips/tiny.pt", num_frames=2)
    scorer.check_ready()
    assert "/file-" in scorer.version() and not scorer.is_random
    video = _video(5, seed=1)
    mine = scorer.score(video, SPEC)
    ref = random_scorer.score(video[[0, 4]], SPEC)  # num_frames=2: first and last frame
    assert mine.raw["clip_score"] == pytest.approx(ref.raw["clip_score"], abs=1e-5)


def test_missing_weights_and_unknown_models_fail_before_generation(tiny, tmp_path):
    missing = str(tmp_path / "nope.pt")
    with pytest.raises(ScorerNotReady) as err:
        cs.ClipScorer(model=tiny, pretrained=missing).check_ready()
    msg = str(err.value)
    assert missing in msg and "scorer.clip.pretrained=" in msg and MODELS_ENV in msg
    with pytest.raises(ScorerNotReady, match="ViT-B-32"):
        cs.ClipScorer(model="ViT-B-32x", pretrained=None).check_ready()
