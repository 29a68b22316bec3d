"""The T2V-CompBench adapter on small fixtures in the official formats (written here), and on
the shared copy of the suite when it is present."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from cvg_bench import registry
from cvg_bench.benchmarks.t2vcompbench import (
    CATEGORIES,
    all_spans,
    overlaps,
    ENV_VAR,
    LABEL_SETS,
    SPATIAL_LABELS,
    V1_PROMPT_FILES,
    T2VCompBench,
    span_coverage,
)

SHARED = Path(os.environ.get("CVG_TEST_T2VCOMPBENCH",
                           Path(__file__).resolve().parents[2] / "shared" / "data" / "t2vcompbench"))
CONFIG = Path(__file__).resolve().parent.parent / "configs" / "benchmark" / "t2vcompbench.yaml"

# Three prompts per category, in the official metadata formats (v1 wording, some edge cases:
# plurals, two moving objects, "from right to left", a count word for 1, a typo, a metadata
# phrase that disagrees with the prompt, a .txt line without the metadata's final period).
FIXTURE: dict[str, list[dict]] = {
    "consistent_attribute_binding": [
        {"prompt": "A blue car drives past a white picket fence on a sunny day",
         "phrases": "a blue car; a white picket fence"},
        {"prompt": "Girl in a pink sweater holding a golden trophy",
         "phrases": "a girl in a pink sweater; a golden trophy"},
        {"prompt": "Red toaster toasting bread beside a white refrigerator",
         "phrases": "red toaster; a gray refrigerator"},
    ],
    "dynamic_attribute_binding": [
        {"prompt": "A timelapse of a leaf transitioning from green to bright red as autumn progresses.",
         "state 0": "A green leaf", "state 1": "A bright red leaf", "tag": "attribute change"},
        {"prompt": "Green apple ripens to red", "state 0": "Green apple", "state 1": "A red apple",
         "tag": "attribute change"},
        {"prompt": "The plant is reviving.", "state 0": "A wilted plant",
         "state 1": "A revived plant", "tag": "state change"},
    ],
    "spatial_relationships": [
        {"prompt": "A dog running on the left of a bicycle", "spatial": "left",
         "object_1": "dog", "object_2": "bicycle"},
        {"prompt": "A bird flying on the left side of a hot air balloon", "spatial": "left",
         "object_1": "bird", "object_2": "hot air balloon"},
        {"prompt": "A kite stuck in a tree above a boy in a park", "spatial": "above",
         "object_1": "kite", "object_2": "boy"},
    ],
    "motion_binding": [
        {"prompt": "A golden retriever scampering leftwards across a garden",
         "object_1": "golden retriever", "d_1": "left", "object_2": "", "d_2": ""},
        {"prompt": "A robot walking from right to left across the moon with a car driving left to right in the background",
         "object_1": "robot", "d_1": "left", "object_2": "car", "d_2": "right"},
        {"prompt": "A kite rises upward, while an apple falls downward.",
         "object_1": "kite", "d_1": "up", "object_2": "apple", "d_2": "down"},
    ],
    "action_binding": [
        {"prompt": "A dog runs through a field while a cat climbs a tree",
         "phrase_0": ["a dog?", "a dog runs through a field?"],
         "phrase_1": ["a cat?", "a cat climbs a tree?"]},
        {"prompt": "A dog chases after a balloon drifting in the wind",
         "phrase_0": ["a dog?", "a dog chases after a balloon?"],
         "phrase_1": ["a balloon?", "a balloon drifts in the wind?"]},
        {"prompt": "A horse races alongside a moving train",
         "phrase_0": ["a horse?", "a horse races alongside?"],
         "phrase_1": ["a train?", "a train moves?"]},
    ],
    "object_interactions": [
        {"prompt": "Two cars collide at an intersection"},
        {"prompt": "Football players bump into each other during a game"},
        {"prompt": "A swimmer dives into a pool, creating ripples."},
    ],
    "generative_numeracy": [
        {"prompt": "two cats chase a butterfly in a sunny garden", "objects": "cat", "numbers": "2"},
        {"prompt": "three dogs play in the snow with a red ball", "objects": "dog,red ball",
         "numbers": "3,1"},
        {"prompt": "Five people sit around a table, and one child watches.",
         "objects": "person, child", "numbers": "5, 1"},
    ],
}
# the v1 .txt line of one prompt lacks the metadata's final period (as in the official suite)
TXT_OVERRIDE = {("dynamic_attribute_binding", 2): "The plant is reviving"}


def write_suite(root: Path, version: str = "v1", nested: bool = True) -> Path:
    """Write the fixture suite under ``root`` in the official layout; returns the data root."""
    key = "prompt" if version == "v1" else "caption"
    meta_dir = root / ("v2" if version == "v2" and nested else "") / "meta_data"
    meta_dir.mkdir(parents=True, exist_ok=True)
    for cat, rows in FIXTURE.items():
        data = [{key if k == "prompt" else k: v for k, v in row.items()} for row in rows]
        (meta_dir / f"{cat}.json").write_text(json.dumps(data, indent=4))
        if version == "v1":
            (root / "prompts").mkdir(exist_ok=True)
            lines = [TXT_OVERRIDE.get((cat, i), row["prompt"]) for i, row in enumerate(rows)]
            (root / "prompts" / V1_PROMPT_FILES[cat]).write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def v1_root(tmp_path: Path) -> Path:
    return write_suite(tmp_path / "t2v", "v1")


def by_id(bench: T2VCompBench) -> dict:
    return {s.prompt_id: s for s in bench.prompts()}


def text(spec, span) -> str:
    return spec.prompt[span[0]:span[1]]


def test_every_category_loads_in_suite_order(v1_root):
    specs = T2VCompBench(data_root=str(v1_root)).prompts()
    assert [s.prompt_id for s in specs] == [f"{c}-{i:04d}" for c in CATEGORIES for i in (1, 2, 3)]
    assert [s.prompt for s in specs[:3]] == [r["prompt"] for r in FIXTURE[CATEGORIES[0]]]
    for spec in specs:
        assert spec.meta["suite_version"] == "v1"
        if spec.label is not None:
            assert spec.label in spec.label_set
            assert set(spec.label_set) <= set(LABEL_SETS[spec.category])
        for ent in spec.entities:  # every span points into the prompt, at the entity's words
            if ent.span != (0, 0):
                assert text(spec, ent.span) == ent.phrase
                assert ent.phrase.lower().endswith(text(spec, max(ent.word_spans)).lower())
            for s in ent.word_spans:
                assert 0 <= s[0] < s[1] <= len(spec.prompt)
        for s in spec.relation_spans:  # relation words are withheld from K(p): no overlap
            assert 0 <= s[0] < s[1] <= len(spec.prompt)
            assert not overlaps(s, all_spans(spec.entities)), spec.prompt_id


def test_spatial_entities_relation_and_label(v1_root):
    specs = by_id(T2VCompBench(data_root=str(v1_root), categories=["spatial_relationships"]))
    s = specs["spatial_relationships-0002"]
    assert [e.phrase for e in s.entities] == ["bird", "hot air balloon"]
    balloon = s.entities[1]
    assert balloon.noun == "balloon" and balloon.attributes == ("hot", "air")
    assert [text(s, w) for w in balloon.word_spans] == ["hot", "air", "balloon"]
    assert [text(s, r) for r in s.relation_spans] == ["on the left side of"]
    assert s.label == "left" and s.label_set == SPATIAL_LABELS
    above = specs["spatial_relationships-0003"]
    assert [text(above, r) for r in above.relation_spans] == ["above"]  # not "in" a tree
    assert above.meta["entities_verbatim"] and above.meta["relation_found"]


def test_motion_two_objects_and_direction_phrases(v1_root):
    specs = by_id(T2VCompBench(data_root=str(v1_root), categories=["motion_binding"]))
    one = specs["motion_binding-0001"]
    assert one.label == "left" and one.label_set == ("left", "right", "up", "down")
    assert [text(one, r) for r in one.relation_spans] == ["leftwards"]
    assert one.entities[0].phrase == "golden retriever"
    two = specs["motion_binding-0002"]
    assert two.label == "left|right" and len(two.label_set) == 16
    assert [e.phrase for e in two.entities] == ["robot", "car"]
    assert [text(two, r) for r in two.relation_spans] == ["from right to left", "left to right"]
    three = specs["motion_binding-0003"]
    assert three.label == "up|down"
    assert [text(three, r) for r in three.relation_spans] == ["upward", "downward"]


def test_numeracy_counts_plurals_and_label(v1_root):
    specs = by_id(T2VCompBench(data_root=str(v1_root), categories=["generative_numeracy"]))
    s = specs["generative_numeracy-0002"]
    assert s.label == "3,1" and len(s.label_set) == 64 and "1,3" in s.label_set
    dogs, ball = s.entities
    assert (dogs.phrase, dogs.noun, dogs.count) == ("dogs", "dog", 3)
    assert (ball.phrase, ball.attributes, ball.count) == ("red ball", ("red",), 1)
    assert [text(s, r) for r in s.relation_spans] == ["three", "a"]
    people = specs["generative_numeracy-0003"]  # "5, 1" (v2 style), irregular plural
    assert people.label == "5,1"
    assert [e.phrase for e in people.entities] == ["people", "child"]
    assert [text(people, r) for r in people.relation_spans] == ["Five", "one"]


def test_attribute_binding_entities_and_swapped_prompt(v1_root):
    specs = by_id(T2VCompBench(data_root=str(v1_root), categories=["consistent_attribute_binding"]))
    s = specs["consistent_attribute_binding-0001"]
    assert [e.phrase for e in s.entities] == ["blue car", "white picket fence"]
    assert s.entities[1].noun == "fence" and s.entities[1].attributes == ("white", "picket")
    assert s.label == "as_prompted" and s.label_set == ("as_prompted", "swapped")
    assert s.relation_spans == ()
    assert s.meta["contrast_prompts"]["swapped"] == \
        "A white car drives past a blue picket fence on a sunny day"
    girl = specs["consistent_attribute_binding-0002"]
    assert girl.entities[0].noun == "girl"
    assert girl.meta["contrast_prompts"]["swapped"] == "Girl in a golden sweater holding a pink trophy"
    # metadata says "a gray refrigerator", the prompt "a white refrigerator": noun only, explained
    odd = specs["consistent_attribute_binding-0003"]
    fridge = odd.entities[1]
    assert fridge.span == (0, 0) and [text(odd, w) for w in fridge.word_spans] == ["refrigerator"]
    assert not odd.meta["entities_verbatim"]
    assert any("gray" in n for n in odd.meta["notes"])


def test_action_dynamic_and_interactions(v1_root):
    specs = by_id(T2VCompBench(data_root=str(v1_root)))
    act = specs["action_binding-0001"]
    assert [e.phrase for e in act.entities] == ["dog", "cat"]
    assert [text(act, r) for r in act.relation_spans] == ["runs through a field", "climbs a tree"]
    assert act.meta["contrast_prompts"]["swapped"] == \
        "A dog climbs a tree while a cat runs through a field"
    # an action naming the other entity: the entity's words stay out of the relation words
    chase = specs["action_binding-0002"]
    assert [text(chase, r) for r in chase.relation_spans] == ["chases after", "drifting"]
    moving = specs["action_binding-0003"]  # "a train moves" vs "a moving train"
    assert [text(moving, r) for r in moving.relation_spans] == ["races alongside", "moving"]

    dyn = specs["dynamic_attribute_binding-0001"]
    assert dyn.label == "state0->state1" and dyn.label_set == ("state0->state1", "state1->state0")
    green, red = dyn.entities
    assert sorted(text(dyn, w) for w in green.word_spans) == ["green", "leaf"]
    assert sorted(text(dyn, w) for w in red.word_spans) == ["bright", "leaf", "red"]
    assert [text(dyn, r) for r in dyn.relation_spans] == ["transitioning", "from", "to"]
    # the .txt line is the prompt; the metadata's differing text is kept in meta
    plant = specs["dynamic_attribute_binding-0003"]
    assert plant.prompt == "The plant is reviving"
    assert plant.meta["metadata_prompt"] == "The plant is reviving."

    inter = specs["object_interactions-0001"]
    assert inter.entities == () and inter.label is None and inter.label_set == ()
    assert any("no metadata" in n for n in inter.meta["notes"])


def test_v2_layouts_and_key(tmp_path):
    nested = write_suite(tmp_path / "a", "v2", nested=True)  # <root>/v2/meta_data
    flat = write_suite(tmp_path / "b", "v2", nested=False)  # <root>/meta_data
    for root in (nested, flat):
        bench = T2VCompBench(data_root=str(root), version="v2")
        specs = bench.prompts()
        assert len(specs) == 21 and bench.version.startswith("t2vcompbench-v2@sha256:")
        assert by_id(bench)["spatial_relationships-0001"].label == "left"
    # either prompt key is read (official "prompt", mirror "caption"); the version is told by
    # the count per category, not by the key
    v1 = write_suite(tmp_path / "c", "v1")
    assert len(T2VCompBench(data_root=str(v1), version="v2").prompts()) == 21  # own suite
    for cat in CATEGORIES:  # 100 per category: the official v1 count
        path = v1 / "meta_data" / f"{cat}.json"
        rows = json.loads(path.read_text())
        path.write_text(json.dumps((rows * 34)[:100]))
        lines = (v1 / "prompts" / V1_PROMPT_FILES[cat]).read_text().splitlines()
        (v1 / "prompts" / V1_PROMPT_FILES[cat]).write_text("\n".join((lines * 34)[:100]))
    with pytest.raises(ValueError, match="is v1 .100 prompts per category.*benchmark.version=v1"):
        T2VCompBench(data_root=str(v1), version="v2")
    assert len(T2VCompBench(data_root=str(v1), version="v1", limit=1).prompts()) == 7
    with pytest.raises(ValueError, match="accepted: v1, v2"):
        T2VCompBench(data_root=str(v1), version="v3")


def test_selection_limit_and_shards(v1_root):
    cats = ["motion_binding", "generative_numeracy"]
    ids = [s.prompt_id for s in T2VCompBench(data_root=str(v1_root), categories=cats, limit=2).prompts()]
    assert ids == ["motion_binding-0001", "motion_binding-0002",
                   "generative_numeracy-0001", "generative_numeracy-0002"]
    shards = [[s.prompt_id for s in T2VCompBench(data_root=str(v1_root), categories=cats, limit=2,
                                                 shard=k, num_shards=2).prompts()] for k in (0, 1)]
    assert shards == [ids[0::2], ids[1::2]]
    with pytest.raises(ValueError, match="unknown categories"):
        T2VCompBench(data_root=str(v1_root), categories=["spatial"]).prompts()


def test_missing_data_root_names_env_var_and_key(monkeypatch, v1_root):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(ValueError, match=f"data_root.*{ENV_VAR}.*meta_data"):
        T2VCompBench()
    monkeypatch.setenv(ENV_VAR, str(v1_root))
    assert len(T2VCompBench(categories=["motion_binding"]).prompts()) == 3


def test_incomplete_or_malformed_data_is_explained(tmp_path, v1_root):
    (v1_root / "meta_data" / "motion_binding.json").unlink()
    with pytest.raises(FileNotFoundError, match="motion_binding.json"):
        T2VCompBench(data_root=str(v1_root))
    with pytest.raises(FileNotFoundError, match="not a folder"):
        T2VCompBench(data_root=str(tmp_path / "nowhere"))
    root = write_suite(tmp_path / "short", "v1")
    (root / "prompts" / V1_PROMPT_FILES["spatial_relationships"]).write_text("only one line\n")
    with pytest.raises(ValueError, match="pair up line by line"):
        T2VCompBench(data_root=str(root)).prompts()


def test_builds_from_its_config(v1_root):
    cfg = yaml.safe_load(CONFIG.read_text())
    assert cfg.pop("name") == "t2vcompbench" and cfg["data_root"] is None
    # registered under its config's name; every config key is a constructor argument
    assert registry.registry("benchmark").entries["t2vcompbench"].target is T2VCompBench
    cfg.update(data_root=str(v1_root), limit=1)
    registry.check_kwargs("benchmark 't2vcompbench'", T2VCompBench, cfg)
    bench = T2VCompBench(**cfg)
    assert len(bench.prompts()) == 7
    assert bench.version.startswith("t2vcompbench-v1@sha256:")  # not the pinned upstream copy


needs_shared = pytest.mark.skipif(not (SHARED / "meta_data").is_dir(),
                                  reason=f"shared T2V-CompBench copy not at {SHARED} "
                                         "(set CVG_TEST_T2VCOMPBENCH)")


@needs_shared
@pytest.mark.parametrize("version,n,tag", [("v1", 700, "116f996"), ("v2", 1400, "Inter_rep_gen-c66b9c6")])
def test_shared_suite_loads_with_spans(version, n, tag):
    bench = T2VCompBench(data_root=str(SHARED), version=version)
    specs = bench.prompts()
    assert len(specs) == n and bench.version == f"t2vcompbench-{version}@{tag}"
    for spec in specs:
        if spec.label is not None:
            assert spec.label in spec.label_set
        for ent in spec.entities:
            if ent.span != (0, 0):
                assert spec.prompt[ent.span[0]:ent.span[1]] == ent.phrase
        for s in spec.relation_spans:
            assert not overlaps(s, all_spans(spec.entities)), spec.prompt_id
    cov = span_coverage(specs)
    # measured on the pinned copies (docs/benchmarks.md); a drop means a parsing regression
    for cat in ("spatial_relationships", "motion_binding", "action_binding", "generative_numeracy"):
        assert cov[cat]["entity_spans"] == 1.0 and cov[cat]["relation_spans"] == 1.0, cat
    assert cov["consistent_attribute_binding"]["entity_spans"] >= 0.97
    assert cov["consistent_attribute_binding"]["entity_words"] >= 0.99
    assert cov["dynamic_attribute_binding"]["entity_words"] >= 0.6
    assert cov["object_interactions"]["entity_spans"] == 0.0
