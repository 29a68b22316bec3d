"""The oracle accuracy study (experiments/oracle_accuracy): its second drawer draws correct
videos the strict oracle passes, its broken kinds really break the scene, and the two-way
measurement holds on a small sample (the doc's table is the n=20 run)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

STUDY = Path(__file__).resolve().parents[2] / "experiments" / "oracle_accuracy"
sys.path.insert(0, str(STUDY))

import oracle_accuracy as study  # noqa: E402
import scenes  # noqa: E402

from cvg_bench.shapes import grammar  # noqa: E402
from cvg_bench.shapes.oracle import judge  # noqa: E402


def _scene(prompt: str, frames: int = 8, seed: int = 0):
    spec = grammar.parse(prompt)
    return spec, scenes.plan_pil(spec, frames, np.random.default_rng(seed))


def test_second_drawer_shares_no_code_with_the_renderer() -> None:
    src = (STUDY / "scenes.py").read_text()
    assert "shapes.render import" not in src.split("def to_plan")[0]  # only the adapters use it
    assert "ImageDraw" in src


@pytest.mark.parametrize("prompt", ["a red circle hitting a blue square",
                                    "two green triangles and one yellow square",
                                    "a triangle changing from blue to red",
                                    "a red square growing and a blue circle shrinking"])
def test_second_drawer_videos_pass(prompt: str) -> None:
    for i, (frames, px) in enumerate(study.PIL_SIZES):
        spec, scene = _scene(prompt, frames, i)
        for aa in (True, False) if px >= 40 else (True,):  # aliased 5 px shapes: see the README
            video = scenes.draw_pil(scene, px, np.random.default_rng(i), antialias=aa)
            assert video.shape == (frames, px, px, 3)
            j = judge(video, spec)
            assert j.passed, (prompt, frames, px, aa, j.checks, j.predicates)


def test_kinds_break_what_they_say() -> None:
    rng = np.random.default_rng(0)
    spec, scene = _scene("a red circle on the left of a blue square", 12)
    merged = next(m for k in range(20) if (m := scenes.merge(scene, spec, np.random.default_rng(k))))
    assert max(scenes.overlap(*fr[:2]) for fr in merged) >= 0.3
    drift = scenes.colour_drift(scene, spec, rng)
    assert sum(o.colour != p.colour for fr, fq in zip(drift, scene) for o, p in zip(fr, fq)) >= 2
    dot = scenes.shrink_to_dot(scene, spec, rng)
    assert min(o.size / p.size for fr, fq in zip(dot, scene) for o, p in zip(fr, fq)) <= 0.3
    assert sum(len(fr) < 2 for fr in scenes.vanish(scene, spec, rng)) >= 2
    assert sum(len(fr) < 2 for fr in scenes.flicker(scene, spec, rng)) >= 12 // 3
    morph = scenes.morph(scene, spec, rng)
    assert sum(o.shape != p.shape for fr, fq in zip(morph, scene) for o, p in zip(fr, fq)) >= 2
    assert sum(len(fr) > 2 for fr in scenes.extra(scene, spec, rng)) >= 2
    assert scenes.wrong_count(scene, spec, rng) is None  # numeracy only
    spec_n, scene_n = _scene("three red circles", 8)
    wc = scenes.wrong_count(scene_n, spec_n, np.random.default_rng(1))
    assert sum(len(fr) != 3 for fr in wc) >= 2
    spec_a, scene_a = _scene("a red circle growing")
    assert scenes.shrink_to_dot(scene_a, spec_a, rng) is None


def test_two_way_small_sample() -> None:
    """Every correct video passes and every broken or p- video fails, on both drawers."""
    for cond in ("default", "pil_sharp"):
        misses: list = []
        res = study.two_way(1, study.CONDITIONS[cond], seed=5, examples=misses)["v2"]
        assert not misses, misses
        assert sum(v[1] for v in res["correct"].values()) == 7
        assert {k for k in study.ROWS if res[k]} == set(study.ROWS)  # every kind was built


def test_table_and_v1_column() -> None:
    v1 = study.load_v1_judge()
    judges = {"v2": judge} if v1 is None else {"v2": judge, "v1": v1}
    res = {"c": study.two_way(1, study.CONDITIONS["default"], ("spatial_relationships",), 2, judges)}
    md = study.table(res)
    assert md.count("\n") == len(study.ROWS) + 1 and "correct (pass)" in md
    if v1 is not None:
        assert "old oracle v1" in md


def test_measure_p_minus() -> None:
    """The renderer-only measure kept from the first accuracy table (p- must fail)."""
    res = study.measure(2, study.CONDITIONS["blurry"], seed=7)
    assert all(tp == 1.0 and tn == 1.0 for tp, tn in res.values()), res


@pytest.mark.slow
@pytest.mark.parametrize("condition", list(study.CONDITIONS))
def test_two_way_every_condition(condition: str) -> None:
    """Minutes: 6 compositions per category, correct and broken. Pooled over conditions the
    doc's run is >= 99 % in every row; one condition alone dips to 96 % (generator-like
    specks, 5 px morphs through mp4), so the floor here is 95 %."""
    res = study.two_way(6, study.CONDITIONS[condition], seed=11)["v2"]
    for row, cells in res.items():
        right, total = sum(c[0] for c in cells.values()), sum(c[1] for c in cells.values())
        assert right >= 0.95 * total, (condition, row, right, total)
