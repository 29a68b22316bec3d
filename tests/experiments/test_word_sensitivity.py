"""Word sensitivity: paired losses under p+ and p- (same video, noise, t), its table and errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments import word_sensitivity as ws
from cvg_bench.generators.tiny import TEST_CONFIG, build_tiny_pipeline

pytestmark = pytest.mark.usefixtures("torch_one_thread")

KW = dict(n=3, frames=4, size=16, t_bins=((900, 1000), (0, 300)))


@pytest.fixture(scope="module")
def pipe():
    from cvg_bench.generators.tiny_training import ShapesData, load_config

    cfg = load_config(None, ["data.num_frames=4", "data.height=16", "data.width=16"])
    p = build_tiny_pipeline(TEST_CONFIG, words=sorted(ShapesData(cfg.data, 0).vocabulary()), seed=0)
    p.unet.eval()
    p.text_encoder.eval()
    return p


def test_rows_pair_each_video_with_its_counterfactual(pipe):
    rows = ws.sensitivity_rows(pipe, probes=("label_swap", "colour_swap"), **KW)
    assert len(rows) == (len(ws.PROBES["label_swap"][0]) + 1) * 3 * 2
    assert (rows["prompt"] != rows["counterfactual"]).all()
    assert np.allclose(rows["gap"], rows["loss_minus"] - rows["loss_plus"])
    assert rows["t"].between(0, 999).all() and (rows["gap"].abs() > 0).any()  # a random model reads words too
    table = ws.summarise(rows)
    assert set(table["t_bin"]) == {"900-1000", "0-300"} and (table["videos"] == 3).all()
    assert "| label_swap | spatial_relationships |" in ws.to_markdown(table)


def test_identical_prompts_give_exactly_zero_gap(pipe, monkeypatch):
    """The pairing is exact (same noise and t): a counterfactual equal to p+ changes nothing."""
    monkeypatch.setitem(ws.PROBES, "same", (("spatial_relationships",), lambda spec, rng: spec))
    rows = ws.sensitivity_rows(pipe, probes=("same",), **KW)
    assert (rows["gap"] == 0).all() and (rows["loss_plus"] > 0).all()


def test_unknown_probe_or_category_is_named(pipe):
    with pytest.raises(ValueError, match="'nope'.*colour_swap"):
        ws.sensitivity_rows(pipe, probes=("nope",), **KW)
    with pytest.raises(ValueError, match="'spatial'.*spatial_relationships"):
        ws.sensitivity_rows(pipe, categories=("spatial",), **KW)
    rows = ws.sensitivity_rows(pipe, categories=("motion_binding",), **KW)
    assert set(zip(rows["probe"], rows["category"])) == {("label_swap", "motion_binding")}
    assert ws.sensitivity_rows(pipe, probes=("colour_swap",), categories=("motion_binding",), **KW).empty


def test_ideal_gap_is_zero_for_the_same_prompt_and_positive_for_mirrored_layouts():
    from cvg_bench.shapes.grammar import parse

    left = parse("a red circle on the left of a blue square")
    right = parse("a red circle on the right of a blue square")
    assert ws.ideal_gap(left, left, renders=20, frames=4, size=16) < ws.ideal_gap(left, right, renders=20, frames=4, size=16)
    same_seed = ws.ideal_gap(left, left, renders=20, seed=1, frames=4, size=16)
    assert same_seed > 0  # two independent sets of renders of one prompt differ a little
    rows = pd.DataFrame({"probe": ["p", "p"], "category": ["spatial_relationships"] * 2,
                         "prompt": [left.prompt] * 2, "counterfactual": [right.prompt] * 2})
    ideal = ws.ideal_gaps(rows, renders=10, frames=4, size=16)
    assert ideal["ideal_gap_t999"].iloc[0] > 0


def test_text_separation_is_zero_for_equal_prompts_and_grows_with_the_swapped_word(pipe):
    plus = ["a red circle on the left of a blue square"]
    sep = ws.text_separation(pipe, plus, ["a red circle on the right of a blue square"])
    assert sep["word"].iloc[0] > 0 and sep["after"].iloc[0] > 0  # causal: "a blue square" hears it
    # a swap of unequal length ("on the left of" -> "above") aligns the second entity's tokens
    longer = ws.text_separation(pipe, plus, ["a red circle above a blue square"])
    assert np.isfinite(longer[["word", "after"]].to_numpy()).all()
    first = ws.text_separation(pipe, plus, ["a red circle on the left of a blue circle"])
    assert first["word"].iloc[0] > 0 and first["after"].iloc[0] > 0  # after = [EOS] only
    # "right" given "left"'s token embedding: the encoder cannot tell the two prompts apart
    emb = pipe.text_encoder.get_input_embeddings().weight
    right = pipe.tokenizer("right").input_ids[1]
    saved = emb.data[right].clone()
    try:
        emb.data[right] = emb.data[pipe.tokenizer("left").input_ids[1]]
        same = ws.text_separation(pipe, plus, ["a red circle on the right of a blue square"])
        assert same["word"].iloc[0] == pytest.approx(0, abs=1e-6)  # identical embeddings: lost
        assert same["after"].iloc[0] == pytest.approx(0, abs=1e-6)
    finally:
        emb.data[right] = saved
    with pytest.raises(ValueError, match="tokenise the same"):
        ws.text_separation(pipe, plus, plus)
    rows = ws.sensitivity_rows(pipe, probes=("label_swap",), categories=("spatial_relationships",), **KW)
    text = ws.text_separations(pipe, rows)
    assert list(text.columns) == ["probe", "category", "text_sep_word", "text_sep_after"]
    assert "text sep." in ws.to_markdown(ws.summarise(rows), text=text)
