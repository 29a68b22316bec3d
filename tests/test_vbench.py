"""The VBench adapter (compositional dimensions of VBench 1.0 and 2.0) on fixtures in VBench's
formats (written here), and on the shared copy when it is present."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from cvg_bench import registry
from cvg_bench.benchmarks.t2vcompbench import span_coverage
from cvg_bench.benchmarks.vbench import (
    CATEGORIES,
    ENV_VAR,
    LABEL_SETS,
    VBENCH1_DIMENSIONS,
    VBench,
)

SHARED = Path(os.environ.get("CVG_TEST_VBENCH",
                           Path(__file__).resolve().parents[2] / "shared" / "data" / "vbench"))
CONFIG = Path(__file__).resolve().parent.parent / "configs" / "benchmark" / "vbench.yaml"

V1 = {
    "color": [{"prompt_en": "a red bicycle", "color_en": "red"},
              {"prompt_en": "an orange umbrella", "color_en": "orange"}],
    "multiple_objects": [{"prompt_en": "a bird and a cat", "object_en": "bird and cat"},
                         {"prompt_en": "a couch and a potted plant", "object_en": "couch and potted plant"}],
    "spatial_relationship": [
        {"prompt_en": "a bicycle on the left of a car, front view", "object_a_en": "bicycle",
         "object_b_en": "car", "relationship_en": "on the left of"},
        {"prompt_en": "skis on the top of a snowboard, front view", "object_a_en": "skis",
         "object_b_en": "snowboard", "relationship_en": "on the top of"}],
}
V2 = {
    "Composition": [{"prompt_en": "A lion with the wings of an eagle, soaring through the sky.",
                     "dimension": "Composition",
                     "auxiliary_info": {"question": ["The wings of an eagle", "A lion"],
                                        "judge": [True, False]}}],
    "Dynamic_Spatial_Relationship": [
        {"prompt_en": "A dog is on the left of a table, then the dog runs to the front of the table.",
         "dimension": "Dynamic_Spatial_Relationship",
         "auxiliary_info": ["Is the dog on the left of the table? (yes or no)",
                            "Is the dog on the front of the table? (yes or no)"]}],
    "Dynamic_Attribute": [
        {"prompt_en": "A car changes from white to red.", "dimension": "Dynamic_Attribute",
         "auxiliary_info": ["Initially, is the color of the car mostly white? (yes or no)"]},
        {"prompt_en": "The wooden floor turned into a metal floor.", "dimension": "Dynamic_Attribute",
         "auxiliary_info": ["Initially, is the floor made of wood? (yes or no)"]}],
    "Motion_Order_Understanding": [
        {"prompt_en": "A cat is grooming itself, then it suddenly starts chasing a bug.",
         "dimension": "Motion_Order_Understanding", "auxiliary_info": ["grooming itself", "chasing a bug"]}],
}


def write_vbench(root: Path, v2: bool = True) -> Path:
    for dim, rows in V1.items():
        (root / "prompts" / "prompts_per_dimension").mkdir(parents=True, exist_ok=True)
        (root / "prompts" / "metadata").mkdir(parents=True, exist_ok=True)
        (root / "prompts" / "prompts_per_dimension" / f"{dim}.txt").write_text(
            "\n".join(r["prompt_en"] for r in rows) + "\n")
        (root / "prompts" / "metadata" / f"{dim}.json").write_text(json.dumps(rows))
    if v2:
        for dim, rows in V2.items():
            base = root / "VBench-2.0" / "prompts"
            (base / "prompt").mkdir(parents=True, exist_ok=True)
            (base / "meta_info").mkdir(parents=True, exist_ok=True)
            # VBench-2.0's .txt lines carry trailing spaces
            (base / "prompt" / f"{dim}.txt").write_text("".join(r["prompt_en"] + "  \n" for r in rows))
            (base / "meta_info" / f"{dim}.json").write_text(json.dumps(rows))
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_vbench(tmp_path / "vbench")


def specs_of(root: Path, **kw) -> dict:
    return {s.prompt_id: s for s in VBench(data_root=str(root), **kw).prompts()}


def text(spec, span) -> str:
    return spec.prompt[span[0]:span[1]]


def test_dimensions_labels_and_spans(root):
    specs = specs_of(root)
    assert list(specs)[:2] == ["multiple_objects-0001", "multiple_objects-0002"]
    assert len(specs) == 11
    red = specs["color-0001"]
    assert red.label == "red" and red.label_set == LABEL_SETS["color"]
    assert [e.phrase for e in red.entities] == ["bicycle"]
    assert [text(red, r) for r in red.relation_spans] == ["red"]  # the label word is withheld
    plant = specs["multiple_objects-0002"]
    assert [e.phrase for e in plant.entities] == ["couch", "potted plant"]
    assert plant.label == "both" and plant.relation_spans == ()
    top = specs["spatial_relationship-0002"]
    assert top.label == "above" and top.meta["relationship"] == "on the top of"
    assert [text(top, r) for r in top.relation_spans] == ["on the top of"]
    assert [e.phrase for e in top.entities] == ["skis", "snowboard"]

    dsr = specs["Dynamic_Spatial_Relationship-0001"]
    assert dsr.prompt.endswith("table.")  # trailing spaces of the .txt line stripped
    assert dsr.label == "left->in front of" and dsr.label in dsr.label_set
    assert [text(dsr, r) for r in dsr.relation_spans] == ["on the left of", "to the front of"]
    assert [e.phrase for e in dsr.entities] == ["dog", "table"]
    car = specs["Dynamic_Attribute-0001"]
    assert car.label == "state0->state1"
    assert [sorted(text(car, w) for w in e.word_spans) for e in car.entities] == \
        [["car", "white"], ["car", "red"]]
    floor = specs["Dynamic_Attribute-0002"]
    assert [e.phrase for e in floor.entities] == ["wooden floor", "metal floor"]
    order = specs["Motion_Order_Understanding-0001"]
    assert order.label == "action0->action1" and [e.phrase for e in order.entities] == ["cat"]
    assert [text(order, r) for r in order.relation_spans] == ["grooming itself", "chasing a bug"]
    comp = specs["Composition-0001"]
    assert comp.label is None and comp.entities == ()
    for spec in specs.values():
        if spec.label is not None:
            assert spec.label in spec.label_set


def test_sampling_protocol():
    assert VBench.samples_per_prompt == 5
    assert all(VBench.samples_for(d) == 5 for d in VBENCH1_DIMENSIONS)
    assert VBench.samples_for("Dynamic_Attribute") == 3


def test_only_selected_dimensions_need_files(tmp_path, monkeypatch):
    only_v1 = write_vbench(tmp_path / "v1only", v2=False)
    assert len(VBench(data_root=str(only_v1), categories=["color"]).prompts()) == 2
    with pytest.raises(FileNotFoundError, match="Composition.txt"):
        VBench(data_root=str(only_v1)).prompts()
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(ValueError, match=f"data_root.*{ENV_VAR}"):
        VBench()
    monkeypatch.setenv(ENV_VAR, str(only_v1))
    assert VBench(categories=["multiple_objects"], limit=1).prompts()[0].prompt == "a bird and a cat"


def test_mismatched_prompt_files_are_an_error(root):
    (root / "prompts" / "prompts_per_dimension" / "color.txt").write_text("a red bicycle\na blue cat\n")
    with pytest.raises(ValueError, match="differs from line 2"):
        VBench(data_root=str(root), categories=["color"]).prompts()


def test_config_and_registration(root):
    cfg = yaml.safe_load(CONFIG.read_text())
    assert cfg.pop("name") == "vbench"
    assert registry.registry("benchmark").entries["vbench"].target is VBench
    cfg.update(data_root=str(root), categories=["color", "Composition"])
    registry.check_kwargs("benchmark 'vbench'", VBench, cfg)
    bench = VBench(**cfg)
    assert [s.category for s in bench.prompts()] == ["color", "color", "Composition"]
    assert bench.version.startswith("vbench@sha256:")


@pytest.mark.skipif(not (SHARED / "prompts").is_dir(),
                    reason=f"shared VBench copy not at {SHARED} (set CVG_TEST_VBENCH)")
def test_shared_copy_loads():
    bench = VBench(data_root=str(SHARED))
    specs = bench.prompts()
    assert bench.version == "vbench@45e79ec"
    counts = {c: sum(s.category == c for s in specs) for c in CATEGORIES}
    assert counts == {"multiple_objects": 82, "spatial_relationship": 84, "color": 85,
                      "Composition": 53, "Dynamic_Spatial_Relationship": 69,
                      "Dynamic_Attribute": 91, "Motion_Order_Understanding": 99}
    cov = span_coverage(specs)
    for dim in ("multiple_objects", "spatial_relationship", "color",
                "Dynamic_Spatial_Relationship", "Motion_Order_Understanding"):
        assert cov[dim]["entity_spans"] == 1.0, dim
    assert cov["Dynamic_Attribute"]["entity_words"] == 1.0
