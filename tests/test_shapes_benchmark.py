"""Plugins `shapes` (benchmark) and `oracle` (scorer), and rendered datasets on disk."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from cvg_bench import registry
from cvg_bench.benchmarks.shapes import SPLIT_ORDER, SUITE, ShapesBenchmark, draw_suite
from cvg_bench.shapes import grammar
from cvg_bench.shapes.dataset import build_dataset, load_dataset, main as dataset_main, sample
from cvg_bench.shapes.render import RenderConfig, render

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _shapes_bench(**overrides) -> ShapesBenchmark:
    cfg = OmegaConf.load(CONFIGS / "benchmark" / "shapes.yaml")
    return registry.build("benchmark", OmegaConf.merge(cfg, overrides))


def test_benchmark_plugin_from_config() -> None:
    assert registry.get("benchmark", "shapes") is ShapesBenchmark
    bench = _shapes_bench()
    assert bench.all_categories == grammar.CATEGORIES
    assert bench.splits == ("seen", "heldout", "all")
    specs = bench.prompts()
    assert len(specs) == 7 * 24
    ids = [s.prompt_id for s in specs]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[a-z_]+-\d{3}", i) for i in ids)
    assert {s.split for s in specs} == {"seen", "heldout"}


def test_suite_is_fixed_valid_and_split_right() -> None:
    bench = ShapesBenchmark()
    for cat in grammar.CATEGORIES:
        for part in SPLIT_ORDER:
            prompts = SUITE[cat][part]
            assert len(prompts) == 12 and len(set(prompts)) == 12, (cat, part)
            for p in prompts:
                spec = grammar.parse(p)
                assert spec.category == cat and spec.split == part, (p, spec.split)
                assert grammar.to_prompt(spec) == p  # canonical text
    seen, held = bench.load("seen"), bench.load("heldout")
    assert [s.prompt_id for s in seen][:2] == ["consistent_attribute_binding-000",
                                               "consistent_attribute_binding-001"]
    assert held[0].prompt_id == "consistent_attribute_binding-012"
    assert {s.prompt_id for s in bench.load("all")} == {s.prompt_id for s in seen + held}
    assert bench.load("all") == bench.load("all")  # stable
    with pytest.raises(ValueError, match="unknown split"):
        bench.load("train")


def test_selection_limit_and_shards() -> None:
    held = _shapes_bench(split="heldout", categories=["motion_binding"], limit=5).prompts()
    assert [s.prompt_id for s in held] == [f"motion_binding-{i:03d}" for i in range(12, 17)]
    parts = [_shapes_bench(split="seen", shard=k, num_shards=3).prompts() for k in range(3)]
    assert sum(len(p) for p in parts) == 84
    assert not {s.prompt_id for s in parts[0]} & {s.prompt_id for s in parts[1]}


def test_parse_prompt_any_grammar_prompt() -> None:
    bench = ShapesBenchmark()
    spec = bench.parse_prompt("a green square moving up", "ext-1")
    assert (spec.prompt_id, spec.category, spec.label) == ("ext-1", "motion_binding", "up")
    with pytest.raises(grammar.PromptGrammarError, match="accepted templates"):
        bench.parse_prompt("a cat playing piano", "ext-2")


def test_draw_suite_helper_is_deterministic() -> None:
    a, b = draw_suite(seed=1, per_split=3), draw_suite(seed=1, per_split=3)
    assert a == b and all(len(a[c]["heldout"]) == 3 for c in grammar.CATEGORIES)


def test_oracle_scorer_plugin() -> None:
    scorer = registry.build("scorer", OmegaConf.load(CONFIGS / "scorer" / "oracle.yaml"))
    assert (scorer.role, scorer.primary, scorer.version()) == ("faithfulness", "pass", "shapes-oracle-v2")
    assert all(scorer.higher_is_better[k] for k in ("pass", "score", "validity"))
    spec = ShapesBenchmark().load("seen")[0]
    good = scorer.score(render(spec, 0), spec)
    assert good.raw["pass"] == 1.0 and good.raw == good.normalised
    assert set(good.raw) == {"pass", "score", "validity", "relation"}
    assert all(0.0 <= v <= 1.0 for v in good.raw.values())
    json.dumps(good.details)
    wrong = grammar.negative(spec, np.random.default_rng(0))
    bad = scorer.score(render(wrong, 0), spec)
    assert bad.raw["pass"] == 0.0 and bad.raw["score"] < good.raw["score"]
    assert bad.raw["relation"] == 0.0
    with pytest.raises(ValueError):
        registry.build("scorer", {"name": "oracle", "min_validity": 2.0})


def test_oracle_relation_holds_without_valid_shapes() -> None:
    """Right layout, wrong shapes: ``relation`` passes, ``pass`` (which needs validity) fails."""
    scorer = registry.build("scorer", {"name": "oracle"})
    spec = grammar.spec_of(grammar.Composition(
        "spatial_relationships", (("red", "circle"), ("blue", "square")), "on the left of"))
    blobs = grammar.spec_of(grammar.Composition(
        "spatial_relationships", (("red", "triangle"), ("blue", "triangle")), "on the left of"))
    r = scorer.score(render(blobs, 0), spec)
    assert r.raw["relation"] == 1.0 and r.raw["pass"] == 0.0 and r.raw["validity"] < 0.5


def test_dataset_build_load_and_resume(tmp_path: Path) -> None:
    out = build_dataset(tmp_path / "ds", n=10, split="seen", seed=3, shard_size=4,
                        render_cfg=RenderConfig(frames=4, size=16), progress=False)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["dataset.json"] + [f"shard-0000{k}.{e}" for k in range(3) for e in ("jsonl", "npz")]
    ds = load_dataset(out)
    pairs = list(ds)
    assert len(ds) == len(pairs) == 10
    cats = [spec.category for _, spec in pairs]
    assert cats[:7] == list(grammar.CATEGORIES)  # categories in turn
    for i, (video, spec) in enumerate(pairs):
        assert video.shape == (4, 16, 16, 3) and video.dtype == np.uint8
        assert spec.split == "seen" and not grammar.is_heldout(spec)
        ref_video, ref_spec, _ = sample(i, 3, "seen", grammar.CATEGORIES, RenderConfig(frames=4, size=16))
        assert np.array_equal(video, ref_video) and spec == ref_spec
    # resume: a lost shard is rebuilt identically; complete shards are not rewritten
    kept = (out / "shard-00000.npz").stat().st_mtime_ns
    lost = (out / "shard-00001.npz").read_bytes()
    (out / "shard-00001.jsonl").unlink()
    build_dataset(out, n=10, split="seen", seed=3, shard_size=4,
                  render_cfg=RenderConfig(frames=4, size=16), progress=False)
    assert (out / "shard-00000.npz").stat().st_mtime_ns == kept
    assert np.array_equal(np.load(out / "shard-00001.npz")["videos"],
                          np.load(io.BytesIO(lost))["videos"])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    with pytest.raises(ValueError, match="other settings"):
        build_dataset(out, n=10, split="heldout", seed=3, shard_size=4,
                      render_cfg=RenderConfig(frames=4, size=16), progress=False)
    (out / "shard-00002.npz").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        load_dataset(out)


def test_dataset_cli(tmp_path: Path, capsys) -> None:
    dataset_main(["--out", str(tmp_path / "cli"), "--n", "3", "--split", "heldout",
                  "--categories", "motion_binding", "--frames", "4", "--size", "16"])
    ds = load_dataset(tmp_path / "cli")
    assert len(ds) == 3 and all(s.split == "heldout" and s.category == "motion_binding" for _, s in ds)
    assert "3 videos" in capsys.readouterr().out
    dataset_main(["--out", str(tmp_path / "cli"), "--n", "2", "--overwrite", "--frames", "4",
                  "--size", "16"])
    assert len(load_dataset(tmp_path / "cli")) == 2
