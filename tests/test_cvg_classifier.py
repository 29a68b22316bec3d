"""CVG's classifier: entity maps, aggregator, frozen backbone, dual cross-entropy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cvg_bench.cvg.classifier import CVGClassifier
from cvg_bench.cvg.features import FeatureSpec, entity_maps
from cvg_bench.cvg.training import FeatureCache, accuracy, train_classifier
from cvg_bench.generators.base import AttentionMaps, PromptTokens

LABELS = {"spatial_relationships": ["left", "right"]}
FEATS = FeatureSpec(steps=(0, 1), layers=("down", "up"), heads=(0, 1), num_inference_steps=4,
                    map_size=8, max_entities=2)


def blob_maps(x1: int, x2: int, frames: int = 4, size: int = 8, noise: float = 0.0,
              rng: np.random.Generator | None = None) -> torch.Tensor:
    """Per-entity maps (L=2, H=2, E=2, F, s, s): a bright column at x1 (entity 1) and x2."""
    maps = torch.full((2, 2, 2, frames, size, size), 0.05)
    maps[:, :, 0, :, 2:6, x1] = 1.0
    maps[:, :, 1, :, 2:6, x2] = 1.0
    if noise and rng is not None:
        maps = maps + noise * torch.from_numpy(rng.random(maps.shape)).float()
    return maps


def with_text_trace(maps: torch.Tensor, relation_word: str) -> torch.Tensor:
    """Composition leakage: a uniform offset on entity 2's maps that encodes the prompt's
    relation word (as a causal text encoder leaks it into later tokens), not the layout."""
    out = maps.clone()
    out[:, :, :, 1] += 1.0 if relation_word == "left" else 0.0
    return out


def make_cache(tmp, n: int, seed: int, leak: bool) -> FeatureCache:
    """p+ maps: the true layout (+ the trace of the true word if ``leak``); p- maps: the same
    layout + the trace of the wrong word. Both carry the true label."""
    rng = np.random.default_rng(seed)
    pos, neg, rows = [], [], []
    for _ in range(n):
        label = str(rng.choice(["left", "right"]))
        wrong = "right" if label == "left" else "left"
        a, b = sorted(rng.choice(8, 2, replace=False))
        x1, x2 = (a, b) if label == "left" else (b, a)
        m = torch.stack([blob_maps(x1, x2, noise=0.3, rng=rng)] * 2)  # (|T|, L, H, E, F, s, s)
        pos.append(with_text_trace(m, label) if leak else m)
        neg.append(with_text_trace(m, wrong) if leak else m)
        rows.append({"category": "spatial_relationships", "label": label,
                     "label_set": ["left", "right"], "prompt": "", "source": "synthetic"})
    cache = FeatureCache(tmp)
    cache.write_shard(0, pos, neg, rows)
    return cache


def test_entity_maps_average_entity_tokens_and_withhold_the_relation():
    tokens = PromptTokens(prompt="a red circle on the left of a blue square", input_ids=(),
                          tokens=(), entity_tokens=((1, 2), (8, 9)), relation_tokens=(4, 5),
                          num_text_keys=12)
    heads, frames = 2, 3
    maps = torch.rand(heads, 4, frames, 16, 16, requires_grad=True)
    attn = AttentionMaps(maps={"down": maps, "up": maps[:, :, :, :8, :8]},
                         heads={"down": (0, 1), "up": (0, 1)}, tokens=(1, 2, 8, 9),
                         num_text_keys=12)
    spec = FeatureSpec(steps=(0,), layers=("down", "up"), map_size=8, max_entities=3)
    out, mask = entity_maps(attn, tokens, spec)
    assert out.shape == (2, heads, 3, frames, 8, 8)
    assert mask.tolist() == [True, True, False]
    assert torch.allclose(out[:, :, :2].mean(dim=(-2, -1)), torch.ones(2, heads, 2, frames), atol=1e-4)
    assert (out[:, :, 2] == 0).all()  # the empty entity slot
    out.sum().backward()
    assert maps.grad is not None and maps.grad.abs().sum() > 0
    with pytest.raises(KeyError, match="layer 'mid' was not captured"):
        entity_maps(attn, tokens, FeatureSpec(steps=(0,), layers=("mid",)))


def test_feature_spec_mismatch_is_an_error():
    other = FeatureSpec(steps=(0,), layers=FEATS.layers, heads=FEATS.heads, num_inference_steps=4,
                        map_size=8, max_entities=2)
    with pytest.raises(ValueError, match="trained on other features.*steps"):
        FEATS.check_same(other)
    with pytest.raises(ValueError, match="steps"):
        FeatureSpec(steps=(9,), layers=("a",), num_inference_steps=4)


@pytest.mark.parametrize("backbone", [{"name": "none"}, {"name": "video-encoder", "weights": None}])
def test_only_aggregator_and_head_train_and_it_learns_layout(tmp_path, backbone):
    torch.manual_seed(0)
    model = CVGClassifier(FEATS, LABELS, backbone, num_layer_heads=2, frames=4)
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    agg_before = model.aggregator.proj.weight.clone()
    train = make_cache(tmp_path / "train", 96, seed=1, leak=False)
    val = make_cache(tmp_path / "val", 48, seed=2, leak=False)
    train_classifier(model, train, None, epochs=12, batch_size=16, lr=3e-3)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, frozen[key]), f"backbone parameter {key} changed"
    assert not torch.equal(model.aggregator.proj.weight, agg_before)
    vpos, _, vrows = val.load()
    assert accuracy(model, vpos, vrows)["spatial_relationships"] >= 0.9


def test_dual_inversion_closes_the_leakage_gap(tmp_path):
    """With a text trace of the relation word in the maps, a p+-only classifier reads the
    trace; supervising p- with the true label forces it onto the layout."""
    train = make_cache(tmp_path / "train", 128, seed=3, leak=True)
    val = make_cache(tmp_path / "val", 64, seed=4, leak=True)
    vpos, vneg, vrows = val.load()
    results = {}
    for dual in (False, True):
        torch.manual_seed(0)
        model = CVGClassifier(FEATS, LABELS, {"name": "none"}, num_layer_heads=2, frames=4)
        # 20 epochs: at 12, one of 6 (seed, thread count) runs had not converged (0.69 / 0.61)
        train_classifier(model, train, None, dual=dual, epochs=20, batch_size=16, lr=3e-3)
        results[dual] = (accuracy(model, vpos, vrows)["mean"], accuracy(model, vneg, vrows)["mean"])
    gap = {dual: acc_pos - acc_neg for dual, (acc_pos, acc_neg) in results.items()}
    assert gap[False] >= 0.3, results  # p+ only: the shortcut fails on p- features
    assert results[True][1] >= 0.9 and gap[True] <= 0.1, results  # dual: reads the layout


def test_save_load_round_trip(tmp_path):
    model = CVGClassifier(FEATS, LABELS, {"name": "video-encoder", "weights": None},
                          num_layer_heads=2, frames=4)
    model.save(tmp_path / "clf")
    again = CVGClassifier.load(tmp_path / "clf")
    x = blob_maps(1, 6)[None]
    step = torch.tensor([1])
    assert torch.allclose(model.log_probs(x, step, "spatial_relationships"),
                          again.log_probs(x, step, "spatial_relationships"))
    assert again.features == FEATS
    with pytest.raises(FileNotFoundError, match="no CVG classifier"):
        CVGClassifier.load(tmp_path / "missing")
    with pytest.raises(ValueError, match="not in the 'spatial_relationships' label set"):
        model.label_index("spatial_relationships", "above")


TINY_VIT = {"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 64, "image_size": 32, "patch_size": 8}


def test_hf_vision_backbone_is_frozen_and_passes_gradients(tmp_path):
    model = CVGClassifier(FEATS, LABELS, {"name": "hf-vision", "config": TINY_VIT},
                          num_layer_heads=2, frames=4)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    x = blob_maps(1, 6)[None].requires_grad_(True)
    loss = -model.log_probs(x, torch.tensor([0]), "spatial_relationships")[0, 0]
    loss.backward()
    assert x.grad.abs().sum() > 0  # guidance reaches the maps through the frozen tower
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.aggregator.proj.weight.grad is not None
    model.save(tmp_path / "clf")
    again = CVGClassifier.load(tmp_path / "clf")
    assert torch.allclose(again.log_probs(x, torch.tensor([0]), "spatial_relationships"),
                          model.log_probs(x, torch.tensor([0]), "spatial_relationships"))


def test_hf_backbone_without_weights_names_the_config_key():
    with pytest.raises(FileNotFoundError, match="backbone.model_id=DIR"):
        CVGClassifier(FEATS, LABELS, {"name": "hf-vision", "model_id": "/nonexistent/siglip"},
                      num_layer_heads=2, frames=4)


def test_feature_cache_is_keyed_by_features_and_data_not_by_size():
    from omegaconf import OmegaConf

    from cvg_bench.cvg.pipeline import cache_name

    def name(layers=("a",), steps=(0, 1), train=64, synthetic=0.25, cats=("spatial_relationships",)):
        cfg = OmegaConf.create({"seed": 0, "data": {"train": train, "val": 16, "split": "all",
                                                    "synthetic_fraction": synthetic}})
        return cache_name(cfg, "tiny:abc", FeatureSpec(steps=steps, layers=layers), list(cats))

    assert name() == name(train=512)  # more data extends the same cache
    for other in (name(layers=("b",)), name(steps=(0,)), name(synthetic=0.5),
                  name(cats=("motion_binding",))):
        assert other != name()


def test_training_resumed_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path):
    train = make_cache(tmp_path / "train", 24, seed=5, leak=False)

    def fresh():
        torch.manual_seed(0)
        return CVGClassifier(FEATS, LABELS, {"name": "none"}, num_layer_heads=2, frames=4)

    straight = fresh()
    train_classifier(straight, train, None, epochs=4, batch_size=8, lr=3e-3)
    ckpt = tmp_path / "ckpt.pt"
    interrupted = fresh()
    train_classifier(interrupted, train, None, epochs=2, batch_size=8, lr=3e-3, checkpoint=ckpt)
    resumed = fresh()  # a new process: fresh weights, then the checkpoint
    result = train_classifier(resumed, train, None, epochs=4, batch_size=8, lr=3e-3, checkpoint=ckpt)
    assert [h["epoch"] for h in result["history"]] == [0, 1, 2, 3]
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_classifier_pipeline_end_to_end_on_a_random_tiny_generator(tmp_path):
    """`train component=classifier`: caches, three variants, saved classifiers, a report;
    a second run reuses the caches and checkpoints and gives the same numbers."""
    from omegaconf import OmegaConf

    from cvg_bench.cvg.pipeline import train_cvg_classifier
    from cvg_bench.generators.tiny import TEST_CONFIG, TinyGenerator

    torch.set_num_threads(1)
    gen_dir = tmp_path / "gen"
    TinyGenerator.random(TEST_CONFIG).pipe.save_pretrained(gen_dir)
    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs/component/classifier.yaml")
    cfg.generator = {"name": "tiny", "path": str(gen_dir), "num_frames": 4, "height": 16,
                     "width": 16, "num_inference_steps": 3}
    cfg.features.heads = [0, 1]
    cfg.categories = ["spatial_relationships"]
    cfg.backbone = {"name": "video-encoder", "weights": None, "width": 8, "out_dim": 16}
    cfg.aggregator = {"d_model": 16, "depth": 1}
    cfg.data = {"train": 4, "val": 2, "split": "seen", "synthetic_fraction": 0.0, "shard_size": 2,
                "heldout_eval": 2, "render": {"frames": 4, "size": 16}}
    cfg.optim = {"epochs": 2, "batch_size": 4, "lr": 1e-3}
    cfg.cache_dir, cfg.out = str(tmp_path / "cache"), str(tmp_path / "clf")
    cfg.ablations_out = str(tmp_path / "ablations")
    report = train_cvg_classifier(cfg)
    assert {"dual", "p_plus_only", "backbone_none"} <= set(report)
    for key in ("dual", "p_plus_only", "backbone_none"):
        acc = report[key]["val_acc_pos"]["spatial_relationships"]
        assert 0.0 <= acc <= 1.0
        assert report[key]["n_heldout"] == 2 and 0.0 <= report[key]["heldout_acc_neg"]["mean"] <= 1.0
    # the held-out evaluation videos are held-out compositions, p+ and p-; training's are not
    from cvg_bench.cvg.training import FeatureCache
    from cvg_bench.shapes.grammar import is_heldout, parse

    cache = Path(report["cache"])
    held = FeatureCache(cache / "heldout").load()[2]
    assert all(is_heldout(parse(r["prompt"])) and is_heldout(parse(r["negative_prompt"])) for r in held)
    seen = FeatureCache(cache / "train").load()[2] + FeatureCache(cache / "val").load()[2]
    assert not any(is_heldout(parse(r[k])) for r in seen for k in ("prompt", "negative_prompt"))
    assert report["val_sources"] == {"real": 2, "synthetic": 0}
    clf = CVGClassifier.load(tmp_path / "clf")
    assert clf.meta["data"] == {"sources": {"render": 1.0}, "split": "seen", "synthetic_fraction": 0.0,
                                "labeller": None, "folder": None}
    assert clf.meta["variant"] == "dual" and clf.features.layers == tuple(
        TinyGenerator.random(TEST_CONFIG).attention_layers())
    assert CVGClassifier.load(tmp_path / "ablations" / "backbone_none").backbone_cfg["name"] == "none"
    again = train_cvg_classifier(cfg)
    assert again["dual"]["val_acc_pos"] == report["dual"]["val_acc_pos"]
    assert again["cache_minutes"] < report["cache_minutes"]  # shards reused, nothing re-inverted


def _shapes_stream_cfg(stream: str):
    from omegaconf import OmegaConf

    return OmegaConf.create({"data": {"split": "all", "synthetic_fraction": 0.0, "stream": stream,
                                      "render": {"frames": 4, "size": 16}}})


def test_indexed_stream_makes_any_example_alone_and_the_same_each_time():
    from cvg_bench.cvg.pipeline import example_source

    cats = ["spatial_relationships", "motion_binding"]
    example = example_source(_shapes_stream_cfg("indexed"), None, cats, seed=3)
    a, b = example(5), example(5)
    assert np.array_equal(a[0], b[0]) and a[1].prompt == b[1].prompt and a[2].prompt == b[2].prompt
    assert a[1].category == "motion_binding"  # example i is of category i mod |categories|
    assert len({example(i)[1].prompt for i in range(8)}) > 1
    with pytest.raises(ValueError, match="data.stream='shuffled'; accepted: sequential, indexed"):
        example_source(_shapes_stream_cfg("shuffled"), None, cats, seed=3)


def test_cache_tasks_split_the_shards_and_together_equal_one_build(tmp_path, monkeypatch):
    """Two array tasks build disjoint shards; their union is the single-process cache."""
    from cvg_bench.cvg import training
    from cvg_bench.cvg.pipeline import example_source

    def fake_featurize(generator, video, spec, features):  # the split, not inversion, is tested
        return torch.from_numpy(video.astype(np.float32)).mean() + torch.zeros(2, 3)

    monkeypatch.setattr(training, "featurize", fake_featurize)
    example = example_source(_shapes_stream_cfg("indexed"), None, ["spatial_relationships"], seed=0)
    whole = training.build_feature_cache(None, example, FEATS, FeatureCache(tmp_path / "one"), 7, 2)
    split = FeatureCache(tmp_path / "two")
    training.build_feature_cache(None, example, FEATS, split, 7, 2, task=1, num_tasks=2)
    assert split.missing_shards(7, 2) == [0, 2]
    training.build_feature_cache(None, example, FEATS, split, 7, 2, task=0, num_tasks=2)
    assert split.missing_shards(7, 2) == []
    (pos1, neg1, rows1), (pos2, neg2, rows2) = whole.load(), split.load()
    def timeless(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert torch.equal(pos1, pos2) and torch.equal(neg1, neg2)
    assert timeless(rows1) == timeless(rows2) and len(rows1) == 7
    with pytest.raises(ValueError, match="cannot be split across cache tasks"):
        training.build_feature_cache(None, iter([]), FEATS, split, 7, 2, task=0, num_tasks=2)
    with pytest.raises(ValueError, match="cache task 2 is not in 0..1"):
        training.build_feature_cache(None, example, FEATS, split, 7, 2, task=2, num_tasks=2)


def test_sequential_cache_resumes_after_its_last_shard_without_redrawing(tmp_path, monkeypatch):
    """Extending a sequential cache draws only the new examples and equals one long build."""
    from cvg_bench.cvg import pipeline, training
    from cvg_bench.cvg.pipeline import example_source

    monkeypatch.setattr(training, "featurize", lambda g, v, s, f:
                        torch.from_numpy(v.astype(np.float32)).mean() + torch.zeros(2, 3))
    draws = []
    real_draw = pipeline._draw
    monkeypatch.setattr(pipeline, "_draw", lambda *a: draws.append(1) or real_draw(*a))
    cats = ["spatial_relationships", "motion_binding"]

    def stream():
        return example_source(_shapes_stream_cfg("sequential"), None, cats, seed=4)

    def timeless(cache):
        pos, neg, rows = cache.load()
        return pos, neg, [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    whole = timeless(training.build_feature_cache(None, stream(), FEATS,
                                                  FeatureCache(tmp_path / "one"), 6, 2))
    grown = FeatureCache(tmp_path / "two")
    training.build_feature_cache(None, stream(), FEATS, grown, 4, 2)
    draws.clear()
    training.build_feature_cache(None, stream(), FEATS, grown, 6, 2)
    assert len(draws) == 2  # only shard 2's examples (no synthetic rejections here)
    for a, b in zip(whole[:2], timeless(grown)[:2]):
        assert torch.equal(a, b)
    assert whole[2] == timeless(grown)[2]
    # a cache from before stream states were kept is drawn through once, then resumes
    for path in grown.root.glob("*.stream.json"):
        path.unlink()
    (grown.root / "shard-00002.jsonl").unlink()
    draws.clear()
    training.build_feature_cache(None, stream(), FEATS, grown, 6, 2)
    assert len(draws) == 6 and whole[2] == timeless(grown)[2]
    assert sorted(p.name for p in grown.root.glob("*.stream.json")) == [
        f"shard-0000{i}.stream.json" for i in range(3)]


def test_a_cache_task_builds_its_shards_and_stops_before_training(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from cvg_bench.cvg import training
    from cvg_bench.cvg.pipeline import train_cvg_classifier

    monkeypatch.setattr(training, "featurize", lambda g, v, s, f: torch.zeros(2, 3))
    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs/component/classifier.yaml")
    cfg.generator = {"name": "dummy"}
    cfg.features.layers, cfg.features.num_inference_steps = ["down"], 4
    cfg.categories = ["spatial_relationships"]
    cfg.data = {"train": 5, "val": 2, "split": "all", "synthetic_fraction": 0.0, "shard_size": 2,
                "stream": "indexed", "render": {"frames": 4, "size": 16}}
    cfg.cache_dir, cfg.out = str(tmp_path / "cache"), str(tmp_path / "clf")
    cfg.cache_task, cfg.cache_tasks = 1, 2
    report = train_cvg_classifier(cfg)
    assert report["missing_shards"] == {"train": [0, 2], "val": [0]}
    assert not (tmp_path / "clf").exists()  # no training until every shard is built
    cfg.data.stream = "sequential"
    with pytest.raises(ValueError, match="use data.stream=indexed"):
        train_cvg_classifier(cfg)


DIRS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
MOTION = {"motion_binding": list(DIRS) + [f"{a}/{b}" for a in DIRS for b in DIRS]}


def moving_maps(d1: str, d2: str | None, rng: np.random.Generator, frames: int = 4) -> torch.Tensor:
    """(|T|=2, L, H, E, F, 8, 8): each entity a 2x2 blob moving one pixel per frame in its
    direction from a random start (entity 2 empty when ``d2`` is None)."""
    maps = torch.full((2, 2, 2, 2, frames, 8, 8), 0.02)
    for e, d in enumerate((d1, d2)):
        if d is None:
            continue
        (dy, dx), (y0, x0) = DIRS[d], rng.integers(2, 5, size=2)  # stays inside 8x8
        for f in range(frames):
            y, x = y0 + dy * (f - 1), x0 + dx * (f - 1)
            maps[:, :, :, e, f, y:y + 2, x:x + 2] = 1.0
    return maps + 0.2 * torch.from_numpy(rng.random(maps.shape)).float()


def test_per_entity_head_is_the_product_of_per_entity_softmaxes(tmp_path):
    torch.manual_seed(0)
    model = CVGClassifier(FEATS, MOTION, {"name": "none"}, num_layer_heads=2, frames=4,
                          head_types={"motion_binding": "per_entity"})
    x, step = moving_maps("left", "up", np.random.default_rng(0))[0][None], torch.tensor([0])
    u = model.heads["motion_binding"].linear(model.backbone(model.aggregator(x, step)))
    per_entity = torch.log_softmax(u.view(1, 2, 4), dim=-1)  # atoms: left, right, up, down
    joint = model.log_probs(x, step, "motion_binding", MOTION["motion_binding"][4:])
    labels = MOTION["motion_binding"]
    for a, da in enumerate(DIRS):
        assert torch.allclose(model.log_probs(x, step, "motion_binding", labels[:4])[0, a],
                              torch.log_softmax(u.view(1, 2, 4)[:, 0], -1)[0, a], atol=1e-5)
        for b, db in enumerate(DIRS):
            expected = per_entity[0, 0, a] + per_entity[0, 1, b]
            assert torch.allclose(joint[0, labels.index(f"{da}/{db}")], expected, atol=1e-5)
    model.save(tmp_path / "clf")
    again = CVGClassifier.load(tmp_path / "clf")
    assert again.head_types == {"motion_binding": "per_entity"}
    assert torch.allclose(again.log_probs(x, step, "motion_binding"),
                          model.log_probs(x, step, "motion_binding"))
    with pytest.raises(ValueError, match="head type 'factored'; accepted: joint, per_entity"):
        CVGClassifier(FEATS, MOTION, {"name": "none"}, num_layer_heads=2, frames=4,
                      head_types={"motion_binding": "factored"})
    with pytest.raises(ValueError, match="no labels"):
        CVGClassifier(FEATS, MOTION, {"name": "none"}, num_layer_heads=2, frames=4,
                      head_types={"spatial": "per_entity"})


def _centroid_label(maps: torch.Tensor, category: str) -> str:
    """Read a (L, H, E, F, s, s) map stack the way the oracle reads a video: entity
    centroids (spatial: entity 1 vs 2 in x or y; motion: first vs last frame, per entity)."""
    m = maps.mean(dim=(0, 1))  # (E, F, s, s)
    grid = torch.arange(m.shape[-1], dtype=torch.float32)
    mass = m.sum(dim=(-1, -2))
    cy = (m.sum(-1) * grid).sum(-1) / mass
    cx = (m.sum(-2) * grid).sum(-1) / mass  # (E, F)
    if category == "spatial_relationships":
        dx, dy = cx[1, 0] - cx[0, 0], cy[1, 0] - cy[0, 0]
        if abs(dx) > abs(dy):
            return "on the left of" if dx > 0 else "on the right of"
        return "above" if dy > 0 else "below"
    parts = []
    for e in range(m.shape[0]):
        dx, dy = cx[e, -1] - cx[e, 0], cy[e, -1] - cy[e, 0]
        parts.append(("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up"))
    return "/".join(parts)


@pytest.mark.parametrize("transforms", [("flip_x",), ("flip_y",), ("reverse_time",),
                                        ("flip_x", "flip_y", "reverse_time")])
def test_augmented_labels_describe_the_augmented_maps(transforms):
    from cvg_bench.cvg.augment import augment_batch

    rng = np.random.default_rng(0)
    motion = torch.stack([moving_maps(a, b, rng) for a in DIRS for b in DIRS])
    motion_rows = [{"category": "motion_binding", "label": f"{a}/{b}"} for a in DIRS for b in DIRS]
    spatial = torch.full((4, 2, 2, 2, 2, 4, 8, 8), 0.02)
    spatial_rows = []
    for i, (label, (e1, e2)) in enumerate({"on the left of": ((3, 1), (3, 6)),
                                           "on the right of": ((3, 6), (3, 1)),
                                           "above": ((1, 3), (6, 3)),
                                           "below": ((6, 3), (1, 3))}.items()):
        for e, (y, x) in enumerate((e1, e2)):
            spatial[i, :, :, :, e, :, y, x] = 1.0
        spatial_rows.append({"category": "spatial_relationships", "label": label})
    flipped = 0  # layouts are static, so reverse_time changes only the motion maps
    for maps, rows in ((motion, motion_rows), (spatial, spatial_rows)):
        for r, m in zip(rows, maps):  # the reader agrees with the labels before augmenting
            assert _centroid_label(m[0], r["category"]) == r["label"]
        for seed in range(8):  # each transform is drawn with probability 1/2
            (out, none), out_rows = augment_batch([maps, None], rows, transforms,
                                                  np.random.default_rng(seed))
            assert none is None
            flipped += not torch.equal(out, maps)
            for r, m in zip(out_rows, out):
                assert _centroid_label(m[0], r["category"]) == r["label"], (transforms, seed)
    assert flipped > 0


def test_augmentation_names_are_checked():
    from cvg_bench.cvg.augment import check_transforms, transform_label

    with pytest.raises(ValueError, match=r"augmentations \['rotate'\]; accepted: flip_x, flip_y"):
        check_transforms(["flip_x", "rotate"])
    with pytest.raises(ValueError, match="no symmetry table for category 'numeracy'"):
        transform_label("numeracy", "3", "flip_x")


def test_symmetrized_score_is_invariant_under_every_symmetry():
    """s_sym(g A)[g y] = s_sym(A)[y] for all 8 g: the symmetrised score reads the same
    composition from a mirrored or reversed video; a wrong label map would break it."""
    from cvg_bench.cvg.augment import apply_to_label, apply_to_maps, symmetry_group

    torch.manual_seed(0)
    model = CVGClassifier(FEATS, {**MOTION, "spatial_relationships": ["on the left of", "on the right of", "above", "below"]},
                          {"name": "none"}, num_layer_heads=2, frames=4,
                          head_types={"motion_binding": "per_entity"})
    model.eval()
    x, step = moving_maps("left", "up", np.random.default_rng(1))[0][None], torch.tensor([0])
    for category in ("motion_binding", "spatial_relationships"):
        labels = model.label_sets[category]
        base = model.symmetrized_log_probs(x, step, category)
        plain = model.log_probs(x, step, category)
        assert not torch.allclose(base, plain)  # it is not the plain score
        for g in symmetry_group():
            moved = model.symmetrized_log_probs(apply_to_maps(x, g), step, category)
            idx = [labels.index(apply_to_label(category, y, g)) for y in labels]
            assert torch.allclose(moved[:, idx], base, atol=1e-5), (category, g)
    one_object = list(DIRS)  # a prompt's own Y (closed under the symmetries): the rest masked
    sym = model.symmetrized_log_probs(x, step, "motion_binding", one_object)
    assert torch.isinf(sym[0, len(DIRS):]).all() and torch.isfinite(sym[0, :len(DIRS)]).all()
    with pytest.raises(ValueError, match="not closed under flip_x"):
        model.symmetrized_log_probs(x, step, "motion_binding", ["left", "up"])


def test_evaluate_reads_the_cache_like_the_training_accuracy(tmp_path):
    from cvg_bench.cvg.evaluate import evaluate, group_of

    torch.manual_seed(0)
    model = CVGClassifier(FEATS, LABELS, {"name": "none"}, num_layer_heads=2, frames=4)
    pos, _, rows = make_cache(tmp_path, 24, 0, leak=False).load()
    result = evaluate(model, pos, rows)
    assert result["spatial_relationships"]["n"] == 24 * 2  # videos x steps of T
    assert result["spatial_relationships"]["plain"] == accuracy(model, pos, rows)["spatial_relationships"]
    assert group_of({"category": "motion_binding", "label": "up/left"}) == "motion_binding/2obj"


def test_variants_train_each_backbone_named_once():
    from omegaconf import OmegaConf

    from cvg_bench.cvg.pipeline import variants

    cfg = OmegaConf.create({"backbone": {"name": "video-encoder"}, "compare_without_dual": True,
                            "compare_backbone_none": True,
                            "compare_backbones": ["none", {"name": "hf-vision", "model_id": "x"}]})
    got = [(k, d, b["name"]) for k, d, b in variants(cfg)]
    assert got == [("dual", True, "video-encoder"), ("p_plus_only", False, "video-encoder"),
                   ("backbone_none", True, "none"), ("backbone_hf_vision", True, "hf-vision")]
    cfg.backbone = {"name": "none"}
    assert [k for k, *_ in variants(cfg)] == ["dual", "p_plus_only", "backbone_hf_vision"]
    cfg.compare_backbones = [{"model_id": "x"}]
    with pytest.raises(ValueError, match="compare_backbones entry"):
        variants(cfg)


def test_symmetries_of_action_interaction_and_numeracy():
    """Growth is mirror-invariant and reverses in time; an approach reversed moves away, a hit
    reversed is no label (time reversal is skipped there); counts never change."""
    from cvg_bench.cvg.augment import applicable, apply_to_label, apply_to_maps, augment_batch, symmetry_group
    from cvg_bench.shapes.grammar import label_set

    assert apply_to_label("action_binding", "growing/shrinking", ("flip_x", "reverse_time")) == "shrinking/growing"
    assert apply_to_label("object_interactions", "approaching", ("flip_x", "flip_y")) == "approaching"
    assert applicable("object_interactions") == ("flip_x", "flip_y")
    with pytest.raises(ValueError, match="reverse_time is not a symmetry of 'object_interactions'"):
        apply_to_label("object_interactions", "hitting", ("reverse_time",))
    assert apply_to_label("generative_numeracy", "two/three", ("flip_x", "flip_y", "reverse_time")) == "two/three"
    rng = np.random.default_rng(0)
    rows = [{"category": "object_interactions", "label": "hitting"}]
    maps = torch.arange(4 * 3 * 3, dtype=torch.float32).view(1, 1, 1, 1, 1, 4, 3, 3)
    for _ in range(16):  # time is never reversed for an interaction batch
        (out,), out_rows = augment_batch([maps], rows, ("reverse_time",), rng)
        assert torch.equal(out, maps) and out_rows[0]["label"] == "hitting"
    labels = {"action_binding": list(label_set("action_binding", 2)) + list(label_set("action_binding", 1)),
              "object_interactions": list(label_set("object_interactions", 2)),
              "generative_numeracy": list(label_set("generative_numeracy", 1))}
    torch.manual_seed(0)
    model = CVGClassifier(FEATS, labels, {"name": "none"}, num_layer_heads=2, frames=4,
                          head_types={"action_binding": "per_entity"})
    model.eval()
    x, step = moving_maps("left", "up", np.random.default_rng(1))[0][None], torch.tensor([0])
    for category, labs in labels.items():
        base = model.symmetrized_log_probs(x, step, category)
        for g in symmetry_group(applicable(category)):
            moved = model.symmetrized_log_probs(apply_to_maps(x, g), step, category)
            idx = [labs.index(apply_to_label(category, y, g)) for y in labs]
            assert torch.allclose(moved[:, idx], base, atol=1e-5), (category, g)


def test_a_smaller_data_size_reads_only_its_shards_of_a_larger_cache(tmp_path):
    """The cache folder is keyed without its size: data.train=8 on a folder a 12-example run
    filled must train on 8 examples, not 12 (it once read every shard present)."""
    from cvg_bench.cvg.training import FeatureCache, build_feature_cache

    cache = FeatureCache(tmp_path / "train")
    for i in range(3):
        cache.write_shard(i, [torch.zeros(2, 3)] * 4, [torch.ones(2, 3)] * 4,
                          [{"i": 4 * i + j} for j in range(4)])
    assert len(cache.load()[2]) == 12

    def never(i):
        raise AssertionError("finished shards are not rebuilt")

    small = build_feature_cache(None, never, None, FeatureCache(tmp_path / "train"), 8, shard_size=4)
    pos, neg, rows = small.load()
    assert [r["i"] for r in rows] == list(range(8)) and pos.shape[0] == neg.shape[0] == 8


def _tiny_classifier_cfg(tmp_path, categories):
    from omegaconf import OmegaConf

    from cvg_bench.generators.tiny import TEST_CONFIG, TinyGenerator

    gen_dir = tmp_path / "gen"
    if not gen_dir.exists():
        TinyGenerator.random(TEST_CONFIG).pipe.save_pretrained(gen_dir)
    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs/component/classifier.yaml")
    cfg.generator = {"name": "tiny", "path": str(gen_dir), "num_frames": 4, "height": 16,
                     "width": 16, "num_inference_steps": 3}
    cfg.features.heads = [0, 1]
    cfg.categories = categories
    cfg.aggregator = {"d_model": 16, "depth": 1}
    cfg.data = {"train": 4, "val": 2, "split": "seen", "synthetic_fraction": 0.0, "shard_size": 2,
                "stream": "indexed", "heldout_eval": 2, "render": {"frames": 4, "size": 16}}
    cfg.optim = {"epochs": 1, "batch_size": 4, "lr": 1e-3}
    cfg.compare_without_dual, cfg.compare_backbones = False, []
    cfg.cache_dir, cfg.out = str(tmp_path / "cache"), str(tmp_path / "clf")
    cfg.ablations_out = str(tmp_path / "ablations")
    return cfg


def test_cache_groups_reuse_a_groups_own_cache_and_train_on_the_union(tmp_path, monkeypatch):
    """A group's cache is the one a training on the group alone built: adding a group of
    categories inverts only the new group's videos, and the classifier has every head."""
    from cvg_bench.cvg import training
    from cvg_bench.cvg.pipeline import train_cvg_classifier
    from cvg_bench.cvg.training import FeatureCache

    torch.set_num_threads(1)
    first = _tiny_classifier_cfg(tmp_path, ["spatial_relationships"])
    first.out = str(tmp_path / "alone")
    alone = train_cvg_classifier(first)
    calls = []
    real = training.featurize
    monkeypatch.setattr(training, "featurize",
                        lambda g, v, s, f: calls.append(s.category) or real(g, v, s, f))
    cfg = _tiny_classifier_cfg(tmp_path, None)
    cfg.cache_groups = [{"categories": ["spatial_relationships"]},
                        {"categories": ["action_binding"], "train": 2, "val": 2, "heldout_eval": 2}]
    report = train_cvg_classifier(cfg)
    assert set(calls) == {"action_binding"}  # the spatial group's shards were all reused
    assert len(calls) == 2 * (2 + 2 + 2)     # p+ and p- of the new group's 6 videos
    assert report["groups"][0]["cache"] == alone["cache"]
    assert report["n_train"] == 6 and report["categories"] == ["spatial_relationships", "action_binding"]
    rows = FeatureCache(Path(report["groups"][1]["cache"]) / "train").load()[2]
    assert {r["category"] for r in rows} == {"action_binding"}
    assert set(report["dual"]["val_acc_pos"]) >= {"spatial_relationships", "action_binding"}
    assert report["dual"]["n_heldout"] == 4
    assert set(CVGClassifier.load(tmp_path / "clf").label_sets) == {"spatial_relationships",
                                                                     "action_binding"}
    # the held-out accuracy study reads the group caches as one, each classifier on its heads
    import json

    from experiments.cvg_heldout_accuracy import main as accuracy_main

    out = tmp_path / "acc"
    assert accuracy_main(["both=" + str(tmp_path / "clf"), "spatial=" + str(tmp_path / "alone"),
                          "--cache", report["groups"][0]["cache"],
                          "--cache", report["groups"][1]["cache"], "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    cats = {name: {r["group"] for r in rows if r["classifier"] == name} for name in ("both", "spatial")}
    assert cats == {"both": {"spatial_relationships", "action_binding"},
                    "spatial": {"spatial_relationships"}}
    assert {r["part"] for r in rows} == {"heldout", "val"}
    assert "| both " in out.with_suffix(".md").read_text()


@pytest.mark.parametrize("groups, match", [
    ([{"categories": ["spatial_relationships"]}, {"categories": ["spatial_relationships"]}],
     "each category belongs to one group"),
    ([{"categories": ["left_of"]}], "unknown categories"),
    ([{"categories": ["spatial_relationships"], "size": 3}], "accepted: a mapping"),
])
def test_cache_groups_are_checked(tmp_path, groups, match):
    from cvg_bench.cvg.pipeline import cache_groups

    cfg = _tiny_classifier_cfg(tmp_path / "x", None)
    cfg.cache_groups = groups
    with pytest.raises(ValueError, match=match):
        cache_groups(cfg, [])
    cfg.cache_groups, cfg.categories = [{"categories": ["spatial_relationships"]}], ["motion_binding"]
    with pytest.raises(ValueError, match="differ from the union of cache_groups"):
        cache_groups(cfg, [])
