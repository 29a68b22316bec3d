"""Where CVG's classifier gets its videos: render, folder, generate, mixed by weight; labellers
apart from the scorers (the judge never trains the contestant)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from cvg_bench.cvg.sources import (
    PromptParser,
    fit_video,
    mix_plan,
    read_folder,
    source_weights,
    write_folder,
)

ROOT = Path(__file__).resolve().parents[1]
CATS = ["spatial_relationships", "motion_binding"]

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def tiny_cfg(tmp_path: Path, gen_dir: Path, tag: str):
    cfg = OmegaConf.load(ROOT / "configs/component/classifier.yaml")
    cfg.generator = {"name": "tiny", "path": str(gen_dir), "num_frames": 4, "height": 16,
                     "width": 16, "num_inference_steps": 3}
    cfg.features.heads = [0, 1]
    cfg.categories = CATS
    cfg.backbone = {"name": "none"}
    cfg.aggregator = {"d_model": 16, "depth": 1}
    cfg.data.update({"train": 6, "val": 4, "split": "all", "synthetic_fraction": 0.0,
                     "shard_size": 3, "render": {"frames": 4, "size": 16}})
    cfg.optim = {"epochs": 2, "batch_size": 4, "lr": 1e-3, "augment": []}
    cfg.compare_without_dual = cfg.compare_backbone_none = False
    cfg.cache_dir, cfg.out = str(tmp_path / f"cache_{tag}"), str(tmp_path / f"clf_{tag}")
    cfg.ablations_out = str(tmp_path / f"abl_{tag}")
    return cfg


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from cvg_bench.generators.tiny import TEST_CONFIG, TinyGenerator

    gen_dir = tmp_path_factory.mktemp("tiny")
    TinyGenerator.random(TEST_CONFIG).pipe.save_pretrained(gen_dir)
    return gen_dir


def test_folder_source_equals_render_source_on_the_shapes_world(tmp_path, tiny_dir):
    """Render N videos, write them as a folder, train from the folder and from the renderer
    with the same seed: the same features, the same accuracy, the same weights."""
    from cvg_bench.cvg.classifier import CVGClassifier
    from cvg_bench.cvg.pipeline import example_source, train_cvg_classifier
    from cvg_bench.cvg.training import FeatureCache

    rendered = tiny_cfg(tmp_path, tiny_dir, "render")
    report_r = train_cvg_classifier(rendered)
    for part, n, seed in (("train", 6, 0), ("val", 4, 1)):
        stream = example_source(rendered, None, CATS, seed)
        examples = [next(stream) for _ in range(n)]
        write_folder(tmp_path / part, [(f"{part}{i:03d}", v, pos, neg, src)
                                       for i, (v, pos, neg, src) in enumerate(examples)])
    folder = tiny_cfg(tmp_path, tiny_dir, "folder")
    folder.data.update({"source": "folder", "folder": str(tmp_path / "train"),
                        "val_folder": str(tmp_path / "val")})
    report_f = train_cvg_classifier(folder)
    assert report_f["cache"] != report_r["cache"]  # built anew, not read from the render cache
    for part in ("train", "val"):
        (p1, n1, r1), (p2, n2, r2) = (FeatureCache(Path(r["cache"]) / part).load()
                                      for r in (report_r, report_f))
        assert torch.equal(p1, p2) and torch.equal(n1, n2)
        keys = ("prompt", "negative_prompt", "category", "label", "label_set")
        assert [{k: r[k] for k in keys} for r in r1] == [{k: r[k] for k in keys} for r in r2]
        assert {r["source"] for r in r2} == {"real"}  # the folder lines keep their source tag
    assert report_f["dual"]["val_acc_pos"] == report_r["dual"]["val_acc_pos"]
    assert report_f["dual"]["val_acc_neg"] == report_r["dual"]["val_acc_neg"]
    a, b = CVGClassifier.load(rendered.out), CVGClassifier.load(folder.out)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert b.meta["generator_name"] == "tiny" and len(b.meta["generator_config_hash"]) == 10
    # without "negative" the folder draws p- itself: a wrong label of Y, the same features of p+
    lines = [json.loads(x) for x in (tmp_path / "train" / "prompts.jsonl").read_text().splitlines()]
    (tmp_path / "train" / "prompts.jsonl").write_text(
        "".join(json.dumps({k: v for k, v in x.items() if k != "negative"}) + "\n" for x in lines))
    folder.cache_dir, folder.out = str(tmp_path / "cache_noneg"), str(tmp_path / "clf_noneg")
    report_n = train_cvg_classifier(folder)
    p3, _, r3 = FeatureCache(Path(report_n["cache"]) / "train").load()
    p1, _, r1 = FeatureCache(Path(report_r["cache"]) / "train").load()
    assert torch.equal(p1, p3)
    assert all(r["negative_prompt"] != r["prompt"] for r in r3)


def folder_with(tmp_path: Path, lines: list[dict], frames: int = 4, size: int = 16) -> Path:
    from cvg_bench.video_io import write_mp4

    tmp_path.mkdir(parents=True, exist_ok=True)
    for line in lines:
        write_mp4(tmp_path / f"{line['id']}.mp4", np.zeros((frames, size, size, 3), np.uint8))
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return tmp_path


def test_folder_labels_unparseable_prompts_and_bad_lines(tmp_path):
    parser = PromptParser({"name": "shapes"})
    root = folder_with(tmp_path / "ok", [
        {"id": "a", "prompt": "a red circle on the left of a blue square"},
        {"id": "b", "prompt": "a red circle on the left of a blue square", "label": "above"},
        {"id": "c", "prompt": "a cat riding a bicycle"},
        {"id": "d", "prompt": "a red circle moving left", "category": "motion_binding"},
    ])
    items, skipped = read_folder(root, parser, ["spatial_relationships"])
    assert [i.id for i in items] == ["a", "b"]
    assert items[0].spec.label == "on the left of"  # no label: the video shows its prompt
    assert items[1].spec.label == "above" and items[1].spec.prompt.startswith("a red circle above")
    reasons = {s["id"]: s["reason"] for s in skipped}
    assert sorted(reasons) == ["c", "d"] and reasons["c"].startswith("not a shapes prompt")
    assert reasons["d"].startswith("category 'motion_binding' is not trained")
    bad = folder_with(tmp_path / "bad", [
        {"id": "a", "prompt": "a red circle on the left of a blue square", "label": "left"}])
    with pytest.raises(ValueError, match=r"prompts.jsonl:1: label 'left' is not in the prompt's "
                                         r"label set Y; accepted: \['on the left of'"):
        read_folder(bad, parser)
    unsafe = folder_with(tmp_path / "unsafe", [{"id": "x", "prompt": "p"}])
    (unsafe / "prompts.jsonl").write_text(json.dumps({"id": "../x", "prompt": "p"}) + "\n")
    with pytest.raises(ValueError, match=r":1: id '../x' is not a safe name"):
        read_folder(unsafe, parser)
    (unsafe / "prompts.jsonl").write_text(json.dumps({"id": "x", "prompt": "p", "lable": 1}) + "\n")
    with pytest.raises(ValueError, match=r"unknown keys \['lable'\]; accepted: id, prompt"):
        read_folder(unsafe, parser)
    with pytest.raises(ValueError, match=r"negative 'on the left of'; accepted: a label of Y other"):
        read_folder(folder_with(tmp_path / "neg", [
            {"id": "a", "prompt": "a red circle on the left of a blue square",
             "negative": "on the left of"}]), parser)


def test_videos_of_any_size_and_length_are_fitted_to_the_generator():
    video = (np.random.default_rng(0).random((10, 24, 40, 3)) * 255).astype(np.uint8)
    fitted = fit_video(video, 4, 16, 16)
    assert fitted.shape == (4, 16, 16, 3) and fitted.dtype == np.uint8
    assert np.array_equal(fit_video(video, 10, 24, 40), video)  # already fits: unchanged
    assert np.array_equal(fit_video(video, 4, None, None), video[[0, 3, 6, 9]])  # evenly sampled


def test_sources_mix_by_weight_in_a_fixed_plan():
    plan = mix_plan(source_weights({"render": 2, "folder": 1}), 10, seed=0)
    counts = {s: sum(1 for x, _ in plan if x == s) for s in ("render", "folder")}
    assert counts == {"render": 7, "folder": 3}  # 6.67 / 3.33: the larger remainder rounds up
    assert sorted(j for s, j in plan if s == "render") == list(range(7))
    assert plan == mix_plan(source_weights({"folder": 1, "render": 2}), 10, seed=0)
    assert plan != mix_plan(source_weights({"render": 2, "folder": 1}), 10, seed=1)
    assert mix_plan({"folder": 1.0}, 3, seed=5) == [("folder", 0), ("folder", 1), ("folder", 2)]
    with pytest.raises(ValueError, match=r"data.source names \['videos'\]; accepted: render, folder, generate"):
        source_weights({"videos": 1})
    with pytest.raises(ValueError, match=r"weight of 'folder' is -1; accepted: a number > 0"):
        source_weights({"render": 1, "folder": -1})


def test_render_mixed_with_a_folder_trains(tmp_path, tiny_dir):
    from cvg_bench.cvg.pipeline import example_source, train_cvg_classifier

    base = tiny_cfg(tmp_path, tiny_dir, "base")
    stream = example_source(base, None, CATS, 7)
    write_folder(tmp_path / "real", [(f"v{i}", *next(stream)) for i in range(6)])
    mixed = tiny_cfg(tmp_path, tiny_dir, "mix")
    mixed.data.update({"source": {"render": 0.5, "folder": 0.5}, "folder": str(tmp_path / "real")})
    report = train_cvg_classifier(mixed)
    assert report["sources"] == {"folder": 0.5, "render": 0.5}
    assert report["data"]["folder"] == str(tmp_path / "real") and report["data"]["split"] == mixed.data.split
    assert report["val_sources"]["real"] == 4  # 2 held-out folder videos + 2 rendered
    mixed.data.train = 9  # 4.5 -> 5 folder videos, but only 4 remain after the held-out 2
    with pytest.raises(ValueError, match=r"data.train=9 takes 5 train videos from the folder "
                                         r"source, which has 4"):
        train_cvg_classifier(mixed)


def test_shapes_labeller_reads_rendered_videos_as_rendered():
    """The labeller (not the oracle) on clean renders: its labels are the rendered ones where
    it gives one, and it gives one for most."""
    from cvg_bench.labellers.shapes import ShapesLabeller
    from cvg_bench.shapes.grammar import sample_spec
    from cvg_bench.shapes.render import render

    labeller = ShapesLabeller()
    rng = np.random.default_rng(0)
    for category in ("spatial_relationships", "motion_binding", "action_binding",
                     "dynamic_attribute_binding"):
        found = []
        for i in range(12):
            spec = sample_spec(rng, category, "all")
            found.append((labeller.label(render(spec, seed=i), spec).label, spec.label))
        given = [(y, t) for y, t in found if y is not None]
        assert len(given) >= 8, (category, found)
        assert all(y == t for y, t in given), (category, found)
    spec = sample_spec(rng, "generative_numeracy", "all")
    with pytest.raises(ValueError, match=r"labeller 'shapes' cannot label categories "
                                         r"\['generative_numeracy'\]; it labels: spatial"):
        labeller.label(render(spec, seed=0), spec)


FORBIDDEN = ("cvg_bench.shapes.oracle", "cvg_bench.scorers")
CLASSIFIER_PATH = ["cvg_bench/cvg/pipeline.py", "cvg_bench/cvg/training.py",
                   "cvg_bench/cvg/sources.py", "cvg_bench/cvg/features.py",
                   "cvg_bench/cvg/classifier.py", "cvg_bench/cvg/aggregator.py",
                   "cvg_bench/cvg/augment.py", "cvg_bench/train.py",
                   "methods/cvg.py",  # inference
                   *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "cvg_bench/labellers").glob("*.py")),
                   *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "cvg_bench/backbones").glob("*.py"))]


def test_the_classifier_path_imports_no_scorer_and_not_the_oracle_statically():
    for rel in CLASSIFIER_PATH:
        tree = ast.parse((ROOT / rel).read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(FORBIDDEN), f"{rel}:{node.lineno} imports {name}"


def test_a_training_run_loads_no_scorer_and_not_the_oracle(tmp_path, tiny_dir):
    """The judge never trains the contestant: a whole training (render with a synthetic share
    labelled by the shapes labeller, plus a folder) in a fresh process, then its modules."""
    script = f"""
import sys, json
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
from omegaconf import OmegaConf
sys.path.insert(0, {str(ROOT / 'tests')!r})
from test_cvg_sources import tiny_cfg
from cvg_bench.cvg.pipeline import example_source, train_cvg_classifier
from cvg_bench.cvg.sources import write_folder
tmp = Path({str(tmp_path)!r})
cfg = tiny_cfg(tmp, Path({str(tiny_dir)!r}), "imports")
stream = example_source(cfg, None, {CATS!r}, 3)
write_folder(tmp / "f", [(f"v{{i}}", *next(stream)) for i in range(4)])
cfg.data.update({{"source": {{"render": 0.5, "folder": 0.5}}, "folder": str(tmp / "f"),
                 "synthetic_fraction": 0.5, "train": 4, "val": 2}})
report = train_cvg_classifier(cfg)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("cvg_bench"))))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    assert "cvg_bench.labellers.shapes" in modules and "cvg_bench.cvg.pipeline" in modules
    assert not [m for m in modules if m.startswith(FORBIDDEN)], modules


def test_generator_feature_defaults_exist_and_name_real_layers():
    """K(p), L, H, T of each real generator: a defaults file, layers that exist in the
    published model (built on the meta device: no weights, no memory)."""
    import yaml
    from diffusers import UNet3DConditionModel

    from cvg_bench.cvg.pipeline import FEATURE_KEYS, generator_defaults
    from cvg_bench.generators.published import ZEROSCOPE_V2_576W

    with torch.device("meta"):
        unet = UNet3DConditionModel(**ZEROSCOPE_V2_576W)
    unet_layers = {n: unet.get_submodule(n).heads for n, _ in unet.named_modules() if n.endswith("attn2")}
    for name, n_layers in (("wan", 30), ("cogvideox", 30), ("zeroscope", None), ("modelscope", None)):
        d = generator_defaults(name)
        assert set(d) == set(FEATURE_KEYS), name
        assert d["k"] == "entity_words" and d["steps"] == [0, 1, 2, 3, 4] and d["map_size"] == 8
        text = " ".join((ROOT / "configs/generator/cvg" / f"{name}.yaml").read_text()
                        .replace("#", " ").split())
        assert "NOT chosen by a localisation score" in text  # documented: no masks here
        if n_layers:
            assert all(0 <= i < n_layers for i in d["layers"])
        else:
            assert len({unet_layers[x] for x in d["layers"]}) == 1  # one head count
        generator_cfg = yaml.safe_load((ROOT / "configs/generator" / f"{name}.yaml").read_text())
        assert "cvg" not in generator_cfg  # those keys are constructor arguments only
    with pytest.raises(ValueError, match=r"generator 'mine' has no CVG feature defaults.*"
                                         r"generators with defaults: cogvideox, dummy, modelscope"):
        generator_defaults("mine")
