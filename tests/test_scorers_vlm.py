"""vlm scorer. A tiny random LLaVA can only check the PLUMBING (the real loading path, the chat
prompt, the frames reaching the model, a reply decoded); the judging itself is checked with a
stubbed ``generate`` returning fixed answers: question texts, answer parsing and T2V-CompBench's
score normalisation per category."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from cvg_bench import registry
from cvg_bench.scorers import vlm
from cvg_bench.scorers._common import MODELS_ENV, ScorerNotReady
from cvg_bench.shapes.grammar import parse
from cvg_bench.types import Entity, PromptSpec

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "scorer"


def test_config_file_is_a_scorer_package_and_builds():
    assert (CONFIGS / "vlm.yaml").read_text().splitlines()[0] == "# @package scorer.vlm"
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / "vlm.yaml"))
    assert cfg.pop("name") == vlm.VLMScorer.registered_name
    registry.check_kwargs("scorer 'vlm'", vlm.VLMScorer, cfg)
    scorer = vlm.VLMScorer(**cfg)
    assert scorer.model is None and scorer.num_frames == 6 and scorer.max_new_tokens == 512


# ---- parsing and normalisation ------------------------------------------------------------------
def test_option_parsing_and_table():
    assert vlm.parse_options('Sure. {"option": "A1,B2", "explanation": "ok"}') == ("A", "B")
    assert vlm.parse_options('{"option": "B2, A1"}') == ("A", "B")
    assert vlm.parse_options('"option": "C1,D2", "explanation": "no braces"') == ("C", "D")
    assert vlm.parse_options('{"option": "A1"}') is None
    assert vlm.parse_options("no json at all") is None
    table = {("A", "A"): 5, ("A", "B"): 4.5, ("B", "A"): 4.5, ("B", "B"): 4, ("A", "C"): 3.5,
             ("D", "A"): 3, ("B", "C"): 2.8, ("B", "D"): 2.5, ("C", "C"): 2, ("D", "C"): 1.5,
             ("D", "D"): 1}
    for letters, value in table.items():
        assert vlm.option_score(letters) == value


def test_score_parsing_respects_the_scale():
    assert vlm.parse_score('{"score": 4, "explanation": "fine"}', 0, 5) == 4.0
    assert vlm.parse_score('The answer: "score": 3, "explanation": "x"', 1, 5) == 3.0  # the script's regex form
    assert vlm.parse_score('{"score": "2"}', 1, 5) == 2.0
    assert vlm.parse_score('{"score": 7}', 1, 5) is None
    assert vlm.parse_score('{"score": 0}', 1, 5) is None
    assert vlm.parse_score("I think it is good", 0, 5) is None


def test_dynamic_formula():
    # first frame: state 0 = 5, state 1 = 1; last frame: state 0 = 1, state 1 = 5
    assert vlm.dynamic_score(5, 1, 1, 5, True) == pytest.approx(0.5 * 1 * 0.8 + 0.5 * 0.8 * 1)
    assert vlm.dynamic_score(5, 1, 1, 5, False) == 0.0
    assert vlm.dynamic_score(1, 5, 5, 1, True) == pytest.approx(0.0)  # reversed change
    assert vlm.dynamic_score(3, 2, 4, 3, True) == pytest.approx(0.5 * 0.6 * 0.6 + 0.5 * 0.2 * 0.6)


def test_frame_grid_layout():
    frames = [np.full((2, 3, 3), k, dtype=np.uint8) for k in range(6)]
    grid = vlm.frame_grid(frames)
    assert grid.shape == (6, 6, 3)
    for k in range(6):
        r, c = divmod(k, 2)
        assert (grid[2 * r:2 * r + 2, 3 * c:3 * c + 3] == k).all()
    assert (vlm.frame_grid(frames[:5])[4:6, 3:6] == 0).all()  # padded cell


# ---- the scorer with a stubbed judge ------------------------------------------------------------
class StubProcessor:
    def apply_chat_template(self, messages, add_generation_prompt=True):
        parts = []
        for m in messages:
            text = " ".join("<image>" if c["type"] == "image" else c["text"] for c in m["content"])
            parts.append(f"{m['role']}: {text}")
        return "\n".join(parts) + ("\nassistant:" if add_generation_prompt else "")


def stub_scorer(answers: list[str], **kwargs) -> tuple[vlm.VLMScorer, list]:
    scorer = vlm.VLMScorer(model_id="unused", **kwargs)
    scorer.model, scorer.processor = object(), StubProcessor()
    queue, calls = list(answers), []

    def generate(prompt, images):
        calls.append((prompt, [np.asarray(im) for im in images]))
        return queue.pop(0)

    scorer.generate = generate
    return scorer, calls


def _video(frames: int = 16, h: int = 8, w: int = 10) -> np.ndarray:
    return np.stack([np.full((h, w, 3), 10 * k, dtype=np.uint8) for k in range(frames)])


def test_consistent_attribute_binding():
    scorer, calls = stub_scorer(["A red circle and a blue square.",
                                 '{"option": "A1,C2", "explanation": "the square is green"}'])
    result = scorer.score(_video(), parse("a red circle and a blue square"))
    assert result.raw == {"score": 3.5} and result.normalised == {"score": pytest.approx(0.625)}
    assert len(calls) == 2
    first, second = calls[0][0], calls[1][0]
    assert first.count("<image>") == 1 and "as a grid" in first
    assert "A1: 'red circle' is shown clearly" in second and "D2: 'blue square' is not shown" in second
    assert "A red circle and a blue square." in second  # the description is in the history
    grid = calls[0][1][0]
    assert grid.shape == (24, 20, 3)  # 6 frames of 8 x 10, 3 rows x 2 columns
    # frames 0, 3, 6, 9, 12, 15 of 16 (value 10 k), row by row
    assert [int(grid[8 * (i // 2), 10 * (i % 2), 0]) for i in range(6)] == [0, 30, 60, 90, 120, 150]


def test_action_and_interaction_rubrics():
    scorer, calls = stub_scorer(["desc", '{"score": 4, "explanation": "one action"}'])
    result = scorer.score(_video(), parse("a red circle growing and a blue square shrinking"))
    assert result.raw["score"] == 4.0 and result.normalised["score"] == pytest.approx(0.8)
    judge = calls[1][0]
    assert "5: a red circle and a blue square both appear, and a red circle growing, and " \
           "a blue square shrinking." in judge
    scorer, calls = stub_scorer(["desc", '{"score": 2, "explanation": "missing"}'])
    result = scorer.score(_video(), parse("a red circle hitting a blue square"))
    assert result.raw["score"] == 2.0 and result.normalised["score"] == pytest.approx(0.25)
    assert "shows the text 'a red circle hitting a blue square', from 1 to 5" in calls[1][0]


def test_action_phrases_from_metadata():
    spec = PromptSpec(prompt_id="action_binding-0001", prompt="a dog runs and a cat sleeps",
                      category="action_binding", entities=(Entity("dog", "dog"), Entity("cat", "cat")),
                      meta={"metadata": {"phrase_0": ["a dog?", "a dog runs?"],
                                         "phrase_1": ["a cat?", "a cat sleeps?"]}})
    assert vlm.action_phrases(spec) == ("a dog", "a dog runs", "a cat", "a cat sleeps")


def _dynamic_answers(hits: int, n: int = 14) -> list[str]:
    answers = ["first", '{"score": 5}', '{"score": 1}', "last", '{"score": 1}', '{"score": 5}']
    for k in range(n):
        answers += ["mid", '{"score": 2}' if k < hits else '{"score": 0}']
    return answers


def test_dynamic_attribute_binding_with_intermediate_check():
    spec = PromptSpec(prompt_id="dynamic_attribute_binding-0001", prompt="A leaf turns from green to red",
                      category="dynamic_attribute_binding",
                      meta={"metadata": {"state 0": "A green leaf", "state 1": "A red leaf"}})
    video = _video(16)
    scorer, calls = stub_scorer(_dynamic_answers(hits=12))  # 12 > 0.8 x 14
    result = scorer.score(video, spec)
    assert result.raw["score"] == pytest.approx(0.8) and result.details["flag"] is True
    assert len(calls) == 3 + 3 + 2 * 14
    assert (calls[0][1][0] == video[0]).all() and (calls[3][1][0] == video[15]).all()
    assert (calls[6][1][0] == video[1]).all()
    assert "'A green leaf'" in calls[1][0] and "'A red leaf'" in calls[2][0]
    assert "match the text 'A green leaf' or the text 'A red leaf'" in calls[7][0]
    scorer, _ = stub_scorer(_dynamic_answers(hits=11))  # 11 < 11.2: no gradual change
    assert scorer.score(video, spec).raw["score"] == 0.0
    scorer, calls = stub_scorer(_dynamic_answers(0, n=0), dynamic_intermediate=False)
    assert scorer.score(video, spec).raw["score"] == pytest.approx(0.8) and len(calls) == 6
    # the shapes world's states come from the label
    assert vlm.dynamic_states(parse("a circle changing from yellow to green")) == (
        "a yellow circle", "a green circle")


def test_bad_replies_and_other_categories_are_nan():
    scorer, _ = stub_scorer(["desc", "I cannot tell."])
    result = scorer.score(_video(), parse("a red circle hitting a blue square"))
    assert math.isnan(result.raw["score"]) and math.isnan(result.normalised["score"])
    assert "bad reply" in result.details["skipped"] and result.details["answers"][1] == "I cannot tell."
    scorer, calls = stub_scorer([])
    result = scorer.score(_video(), parse("a red circle above a blue square"))
    assert math.isnan(result.raw["score"]) and "detector" in result.details["skipped"] and not calls


# ---- a tiny random LLaVA through the real loading path ------------------------------------------
def _tiny_llava(folder: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor, PreTrainedTokenizerFast)

    words = ["<unk>", "<pad>", "<s>", "</s>", "<image>", "user:", "assistant:", "{", "}", "score",
             "option", "A1,B2", "1", "2", "3", "4", "5"] + [f"w{i}" for i in range(43)]
    vocab = {w: i for i, w in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                  bos_token="<s>", eos_token="</s>")
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    chat = ("{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}"
            "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}\n"
            "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tok, patch_size=16, vision_feature_select_strategy="default", chat_template=chat,
        num_additional_image_tokens=1)
    small = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2)
    cfg = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", **small, image_size=32, patch_size=16),
        text_config=dict(model_type="llama", **small, vocab_size=len(vocab), num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=2, eos_token_id=3, pad_token_id=1),
        image_token_index=vocab["<image>"], vision_feature_layer=-1, image_seq_length=4)
    torch.manual_seed(0)
    LlavaForConditionalGeneration(cfg).save_pretrained(folder)
    processor.save_pretrained(folder)


def test_tiny_llava_plumbing(tmp_path, monkeypatch):
    _tiny_llava(tmp_path / "tiny-llava")
    monkeypatch.setenv(MODELS_ENV, str(tmp_path))
    scorer = vlm.VLMScorer(model_id="tiny-llava", num_frames=2, extract_frames=4, max_new_tokens=3,
                           device="cpu")
    scorer.check_ready()
    assert scorer.version().startswith("vlm-v1:tiny-llava@local-")
    seen, prompts = [], []
    real_model_generate, real_generate = scorer.model.generate, scorer.generate

    def spy_model_generate(**kw):
        seen.append({k: tuple(v.shape) for k, v in kw.items() if hasattr(v, "shape")})
        return real_model_generate(**kw)

    def spy_generate(prompt, images):
        prompts.append(prompt)
        return real_generate(prompt, images)

    scorer.model.generate, scorer.generate = spy_model_generate, spy_generate
    video = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    result = scorer.score(video, parse("a red circle and a blue square"))
    assert len(seen) == 2 and all(s["pixel_values"] == (1, 3, 32, 32) for s in seen)
    assert seen[1]["input_ids"][1] > seen[0]["input_ids"][1]  # the second turn carries the first
    assert prompts[0].count("<image>") == 1 and "'red circle' is shown clearly" in prompts[1]
    answers = result.details["answers"]
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    # a random model's reply is no valid JSON: NaN "bad reply" (or, by chance, a valid score)
    assert math.isnan(result.raw["score"]) or 0.0 <= result.normalised["score"] <= 1.0


def test_missing_model_fails_before_generation(tmp_path):
    with pytest.raises(ScorerNotReady) as err:
        vlm.VLMScorer(model_id=str(tmp_path / "absent")).check_ready()
    msg = str(err.value)
    assert "scorer.vlm.model_id=" in msg and "huggingface-cli download" in msg and MODELS_ENV in msg


def test_templates_file_replaces_the_wording(tmp_path):
    (tmp_path / "t.yaml").write_text(
        "interaction_judge: 'Official wording for {prompt}. Score 1-5 in JSON.'\n")
    scorer, calls = stub_scorer(["desc", '{"score": 5}'], templates=str(tmp_path / "t.yaml"))
    result = scorer.score(_video(), parse("a red circle hitting a blue square"))
    assert calls[1][0].endswith("Official wording for a red circle hitting a blue square. Score 1-5 in JSON.\nassistant:")
    assert result.normalised["score"] == 1.0
    assert scorer.version() != vlm.VLMScorer(model_id="unused").version()  # the texts are identity
    (tmp_path / "bad.yaml").write_text("interaction_judge: 'uses {o1}'\n")
    with pytest.raises(ValueError, match="o1"):
        vlm.VLMScorer(templates=str(tmp_path / "bad.yaml"))
    (tmp_path / "bad2.yaml").write_text("spatial_judge: 'x'\n")
    with pytest.raises(ValueError, match="unknown template"):
        vlm.VLMScorer(templates=str(tmp_path / "bad2.yaml"))
    # every built-in template fills with exactly its declared placeholders
    for name, text in vlm.TEMPLATES.items():
        text.format(**{f: "X" for f in vlm.TEMPLATE_FIELDS[name]})
