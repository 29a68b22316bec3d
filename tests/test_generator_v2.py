"""Generator v2's parts (issue 33): the tiny pipeline around a frozen pretrained BERT-style text
encoder (a small random BERT here: no download), its word-piece tokens, saving it as float16,
training with it frozen (checkpoints without it, exact resume), and vocabulary pruning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cvg_bench.generators import tiny_training as tt
from cvg_bench.generators.pretrained_text import (
    encode_texts, is_float16_exact, load_pretrained_text_encoder, prune_vocabulary, random_bert_folder)
from cvg_bench.generators.tiny import TEST_CONFIG, TinyGenerator, build_tiny_pipeline, save_tiny_pipeline
from cvg_bench.generators.tokens import spec_for_words

pytestmark = pytest.mark.usefixtures("torch_one_thread")

KW = dict(num_frames=4, height=16, width=16, num_inference_steps=2)
WORDS = ["a", "red", "green", "blue", "circle", "square", "above", "below", "left", "of", "the", "on", "moving"]


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """A small random BERT folder (hidden 32) spelling "circle" and "square" letter by letter."""
    return random_bert_folder(tmp_path_factory.mktemp("bert") / "enc", WORDS)


def _model_cfg(bert, **extra):
    return {"max_length": 16, "text_encoder_path": str(bert),
            "unet": {"sample_size": 8, "block_out_channels": [16, 32]}, **extra}


def test_pipeline_uses_the_pretrained_encoder_and_its_word_pieces(bert):
    pipe = build_tiny_pipeline(_model_cfg(bert), words=WORDS)
    assert type(pipe.text_encoder).__name__ == "BertModel"
    assert pipe.unet.config.cross_attention_dim == 32 == pipe.text_encoder.config.hidden_size
    assert is_float16_exact(pipe.text_encoder) and pipe.text_encoder.dtype == torch.float32
    gen = TinyGenerator(pipeline=pipe, **KW)
    spec = spec_for_words("a red circle above a blue square", [["red", "circle"], ["blue", "square"]], ["above"])
    tok = gen.prompt_tokens(spec)
    assert tok.num_text_keys == 16 and tok.tokens[0] == "[CLS]"
    # "circle" is 6 pieces: the entity holds "red" and all of them, nothing else
    assert [tok.tokens[i] for i in tok.entity_tokens[0]] == ["red", "c", "##i", "##r", "##c", "##l", "##e"]
    assert [tok.tokens[i] for i in tok.relation_tokens] == ["above"]
    assert gen.sample(spec, 0).video.shape == (4, 16, 16, 3)
    # the mask keeps padding out of the prompt's states: the pipeline's encoding = training's
    states = gen.encode_prompt(spec.prompt)
    with torch.no_grad():
        train_states = encode_texts(pipe.text_encoder, pipe.tokenizer, [spec.prompt], torch.device("cpu"))
    assert torch.equal(states, train_states)


def test_save_and_load_round_trip_stores_the_encoder_in_float16(bert, tmp_path):
    pipe = build_tiny_pipeline(_model_cfg(bert), words=WORDS)
    save_tiny_pipeline(pipe, tmp_path / "p")
    saved = load_file(tmp_path / "p" / "text_encoder" / "model.safetensors")
    assert {v.dtype for v in saved.values()} == {torch.float16}
    gen = TinyGenerator(pipeline=pipe, **KW)
    loaded = TinyGenerator(path=str(tmp_path / "p"), **KW)
    assert loaded.pipe.text_encoder.dtype == torch.float32 and loaded.pipe.text_encoder.config.use_attention_mask
    spec = spec_for_words("a green square below a red circle", [["green", "square"], ["red", "circle"]], ["below"])
    assert np.array_equal(loaded.sample(spec, 3).video, gen.sample(spec, 3).video)
    assert loaded.prompt_tokens(spec) == gen.prompt_tokens(spec)


def test_config_errors(bert):
    with pytest.raises(ValueError, match="do not apply"):
        build_tiny_pipeline(_model_cfg(bert, text_encoder={"hidden_size": 8}), words=WORDS)
    with pytest.raises(ValueError, match="cross_attention_dim"):
        build_tiny_pipeline(_model_cfg(bert, unet={"cross_attention_dim": 64}), words=WORDS)
    with pytest.raises(ValueError, match="zebra"):  # a word the encoder cannot spell
        build_tiny_pipeline(_model_cfg(bert), words=[*WORDS, "zebra"])
    with pytest.raises(FileNotFoundError, match="prepare.py"):
        load_pretrained_text_encoder(bert.parent / "nowhere", 16)


def test_default_tiny_pipeline_is_unchanged():
    """No text_encoder_path: the small CLIP, its word-level tokenizer, the same weights."""
    a = build_tiny_pipeline(TEST_CONFIG, seed=3)
    b = build_tiny_pipeline({**TEST_CONFIG, "text_encoder_path": None}, seed=3)
    assert type(a.text_encoder).__name__ == "CLIPTextModel"
    assert not hasattr(a.text_encoder.config, "use_attention_mask")
    sa, sb = a.unet.state_dict(), b.unet.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


class Squares:
    colours = ("red", "green", "blue")

    def batch(self, step, batch_size):
        rng = np.random.default_rng([0, step])
        prompts, videos = [], []
        for _ in range(batch_size):
            c, x = int(rng.integers(3)), int(rng.integers(0, 12))
            v = np.zeros((4, 16, 16, 3), np.uint8)
            v[:, 4:8, x : x + 4, c] = 255
            prompts.append(f"a {self.colours[c]} square")
            videos.append(v)
        return prompts, np.stack(videos)

    def vocabulary(self):
        return {"a", "square", *self.colours}


def _cfg(tmp_path, bert, name, steps, *extra):
    return tt.load_config(None, [
        f"checkpoint_dir={tmp_path / name / 'ck'}", f"export_dir={tmp_path / name / 'export'}",
        f"steps={steps}", "eval_batches=1", "eval_every=0", "batch_size=3", "data.num_frames=4",
        "data.height=16", "data.width=16", "log_every=1", "preview_every=0", "warmup_steps=1", "lr=3e-3",
        "num_threads=1", "freeze_text_encoder=true", "model.max_length=8", f"model.text_encoder_path={bert}",
        "model.unet.sample_size=8", "model.unet.block_out_channels=[16,32]", "checkpoint_every=100", *extra])


def test_training_with_a_frozen_encoder_resumes_exactly_and_exports(bert, tmp_path):
    before = load_pretrained_text_encoder(bert, 8)[0].state_dict()
    tt.train_tiny_generator(_cfg(tmp_path, bert, "once", 4), data=Squares())
    tt.train_tiny_generator(_cfg(tmp_path, bert, "twice", 2), data=Squares())
    out = tt.train_tiny_generator(_cfg(tmp_path, bert, "twice", 4), data=Squares())
    a = load_file(tmp_path / "once" / "ck" / "step_0000004" / "model.safetensors")
    b = load_file(tmp_path / "twice" / "ck" / "step_0000004" / "model.safetensors")
    assert a.keys() == b.keys() and all(k.startswith("unet.") for k in a)  # no encoder copy
    assert all(torch.equal(a[k], b[k]) for k in a)
    ema = load_file(tmp_path / "twice" / "ck" / "step_0000004" / "ema.safetensors")
    assert len(ema) == sum(1 for k in a)  # the EMA holds the UNet only
    gen = TinyGenerator(path=str(out), **KW)
    after = gen.pipe.text_encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # frozen: unchanged
    assert json.loads((out / "TRAINING.json").read_text())["config"]["freeze_text_encoder"] is True
    assert gen.sample(spec_for_words("a red square", [["red", "square"]]), 0).video.shape == (4, 16, 16, 3)


def test_a_frozen_run_refuses_a_checkpoint_with_a_trained_encoder(bert, tmp_path):
    tt.train_tiny_generator(_cfg(tmp_path, bert, "joint", 1, "freeze_text_encoder=false"), data=Squares())
    with pytest.raises(ValueError, match="freeze_text_encoder"):
        tt.train_tiny_generator(_cfg(tmp_path, bert, "joint", 2), data=Squares())


def test_pruned_vocabulary_keeps_the_tokens_and_states(bert, tmp_path):
    texts = ["a red circle above a blue square", "a green square moving left", ""]
    summary = prune_vocabulary(bert, tmp_path / "pruned", ["a", "red", "green", "blue", "circle", "square",
                                                           "above", "moving", "left"], check_texts=texts)
    assert summary["max_abs_diff"] == 0.0 and summary["vocab_kept"] < summary["vocab_source"]
    enc, tok = load_pretrained_text_encoder(tmp_path / "pruned", 16)
    assert enc.config.vocab_size == summary["vocab_kept"]
    assert tok.convert_ids_to_tokens(tok("a red circle").input_ids) == ["[CLS]", "a", "red", "c", "##i", "##r",
                                                                        "##c", "##l", "##e", "[SEP]"]
    with pytest.raises(ValueError, match="unknown"):
        prune_vocabulary(bert, tmp_path / "bad", ["zebra"])

