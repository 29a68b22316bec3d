"""Word -> token index lookup from character spans (fast offsets and the slow fallback)."""

from __future__ import annotations

import pytest

from cvg_bench.generators.tiny import build_tokenizer
from cvg_bench.generators.tokens import _spans_fast, _spans_slow, prompt_tokens, spec_for_words, token_indices
from cvg_bench.generators.unet3d import build_random_t2v_pipeline

PROMPT = "a red circle on the left of a blue square"


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def clip_tokenizer():
    return build_random_t2v_pipeline().tokenizer  # char-level BPE: words span several tokens


def test_word_level_tokenizer_maps_entities_and_relation():
    tok = build_tokenizer(max_length=16)
    spec = spec_for_words(PROMPT, [["red", "circle"], ["blue", "square"]], ["left"])
    pt = prompt_tokens(tok, spec)
    assert pt.tokens[:3] == ("[BOS]", "a", "red") and pt.num_text_keys == 16
    assert [[pt.tokens[i] for i in ent] for ent in pt.entity_tokens] == [["red", "circle"], ["blue", "square"]]
    assert [pt.tokens[i] for i in pt.relation_tokens] == ["left"]
    assert pt.key_tokens == (2, 3, 9, 10)
    assert not set(pt.key_tokens) & set(pt.relation_tokens)


def test_multi_token_words_with_bpe(clip_tokenizer):
    spec = spec_for_words(PROMPT, [["red", "circle"]], ["left"])
    pt = prompt_tokens(clip_tokenizer, spec)
    circle = [pt.tokens[i] for i in pt.entity_tokens[0]][1:]
    assert "".join(circle).replace("</w>", "") == "circle"
    assert "".join(pt.tokens[i] for i in pt.relation_tokens).replace("</w>", "") == "left"


def test_slow_fallback_agrees_with_offsets(clip_tokenizer):
    spans = [(2, 5), (6, 12), (20, 24), (35, 41)]
    assert _spans_slow(clip_tokenizer, PROMPT, spans) == _spans_fast(clip_tokenizer, PROMPT, spans)


def test_bad_spans_fail_clearly():
    tok = build_tokenizer(max_length=6)
    with pytest.raises(ValueError, match="not inside the prompt"):
        token_indices(tok, "a red circle", [(4, 40)])
    with pytest.raises(ValueError, match="truncated"):
        token_indices(tok, PROMPT, [(35, 41)])
    with pytest.raises(ValueError, match="not found"):
        spec_for_words(PROMPT, [["purple"]])
