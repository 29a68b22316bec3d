"""hf-vlm backbone: a tiny random Qwen2-VL / Qwen2.5-VL reads the aggregator's volume as a video.

Random weights can only check the plumbing: the pixel layout against transformers' own video
processor, the prompt's token sequence, shapes, gradients back to the volume, the frozen VLM
through a classifier training step, the config round trip and the loading errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from cvg_bench import registry
from cvg_bench.backbones.hf_vlm import HFVLM, word_level_tokenizer
from cvg_bench.cvg.classifier import CVGClassifier
from cvg_bench.cvg.features import FeatureSpec
from cvg_bench.cvg.training import FeatureCache, train_classifier

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "backbone" / "hf-vlm.yaml"
SPECIAL = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]
TEXT = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=2, num_key_value_heads=2, bos_token_id=None, eos_token_id=None,
            rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3],
                             "rope_theta": 10000.0})
VISION = {
    "qwen2_vl": dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2,
                     patch_size=4, spatial_merge_size=2, temporal_patch_size=2),
    "qwen2_5_vl": dict(depth=1, hidden_size=32, out_hidden_size=32, intermediate_size=64,
                       num_heads=2, patch_size=4, spatial_merge_size=2, temporal_patch_size=2,
                       window_size=16, fullatt_block_indexes=[0]),
}


def tiny(model_type: str = "qwen2_vl", ids: tuple[int, int, int, int] = (60, 61, 62, 63)) -> dict:
    image, video, start, end = ids
    return {"model_type": model_type, "text_config": TEXT, "vision_config": VISION[model_type],
            "image_token_id": image, "video_token_id": video, "vision_start_token_id": start,
            "vision_end_token_id": end, "bos_token_id": None, "eos_token_id": None}


LABELS = {"spatial_relationships": ["left", "right"]}
FEATS = FeatureSpec(steps=(0, 1), layers=("down", "up"), heads=(0, 1), num_inference_steps=4,
                    map_size=8, max_entities=2)
BACKBONE = {"name": "hf-vlm", "config": tiny(), "image_size": 16}


def test_registered_with_a_config_that_builds():
    assert "hf-vlm" in registry.names("backbone")
    assert registry.describe("backbone")["hf-vlm"].startswith("The paper's choice")
    cfg = yaml.safe_load(CONFIG.read_text())
    assert cfg.pop("name") == "hf-vlm"
    registry.check_kwargs("backbone 'hf-vlm'", HFVLM, cfg)
    with pytest.raises(ValueError, match="give model_id"):
        HFVLM(frames=4, map_size=8, **cfg)  # the shipped config names no model yet


@pytest.mark.parametrize("model_type", ["qwen2_vl", "qwen2_5_vl"])
def test_features_shape_and_gradient_to_the_volume(model_type):
    torch.manual_seed(0)
    bb = HFVLM(frames=3, map_size=8, config=tiny(model_type), image_size=13).freeze()
    assert bb.image_size == 16  # rounded up to patch * merge = 8
    assert bb.out_dim == 32 and bb.in_channels == 3
    # 3 frames -> 2 tubelets (last frame repeated) of 4x4 patches, merged 2x2: 8 video tokens
    assert bb.grid_thw == (2, 4, 4) and bb.num_video_tokens == 8
    ids = bb.input_ids[0].tolist()
    assert ids[:10] == [62, *[61] * 8, 63] and len(ids) == 14  # + "Describe the arrangement ."
    assert bb.mm_token_type_ids[0].tolist() == [0, *[2] * 8, 0, 0, 0, 0, 0]
    volume = torch.rand(2, 3, 3, 8, 8, requires_grad=True)
    feats = bb(volume)
    assert feats.shape == (2, 32) and feats.dtype == torch.float32
    feats.square().sum().backward()
    assert torch.isfinite(volume.grad).all() and volume.grad.abs().sum() > 0
    assert volume.grad[:, -1].abs().sum() > 0  # the padded (repeated) frame passes gradient too
    assert not any(p.requires_grad for p in bb.parameters())
    assert all(p.grad is None for p in bb.parameters())
    assert not bb.train().training  # stays in eval mode
    mean = HFVLM(frames=3, map_size=8, config=tiny(model_type), image_size=16, pool="mean_video")
    mean.load_state_dict(bb.state_dict())
    assert mean(volume).shape == (2, 32)


def test_patches_match_the_qwen_video_processor():
    """Our differentiable patchify reproduces transformers' ``Qwen2VLVideoProcessor``."""
    from transformers import Qwen2VLVideoProcessor

    bb = HFVLM(frames=3, map_size=16, config=tiny(), image_size=16)
    video = torch.rand(1, 3, 3, 16, 16)  # already at image_size: no resampling difference
    ref = Qwen2VLVideoProcessor(patch_size=4, merge_size=2, temporal_patch_size=2)(
        videos=[video[0] * 255], do_resize=False, do_sample_frames=False,
        cap_pixels_per_frame=False, return_tensors="pt")
    assert ref["video_grid_thw"].tolist() == [list(bb.grid_thw)]
    assert torch.allclose(bb.pixel_values_videos(video), ref["pixel_values_videos"], atol=1e-5)


def _cache(root: Path, n: int) -> FeatureCache:
    g = torch.Generator().manual_seed(1)
    maps = [torch.rand(2, 2, 2, 2, 4, 8, 8, generator=g) for _ in range(2 * n)]
    rows = [{"category": "spatial_relationships", "label": ["left", "right"][i % 2],
             "label_set": ["left", "right"], "prompt": "", "source": "synthetic"} for i in range(n)]
    cache = FeatureCache(root)
    cache.write_shard(0, maps[:n], maps[n:], rows)
    return cache


def test_classifier_trains_around_the_frozen_vlm_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = CVGClassifier(FEATS, LABELS, BACKBONE, num_layer_heads=2, frames=4)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    agg_before = model.aggregator.proj.weight.clone()
    head_before = model.heads["spatial_relationships"].weight.clone()
    train_classifier(model, _cache(tmp_path / "train", 8), None, epochs=1, batch_size=4, lr=1e-2)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, frozen[key]), f"VLM parameter {key} changed"
    assert not model.backbone.training
    assert not torch.equal(model.aggregator.proj.weight, agg_before)
    assert not torch.equal(model.heads["spatial_relationships"].weight, head_before)

    # guidance: d(-log s[y]) / d(maps) through the frozen VLM
    x = torch.rand(1, 2, 2, 2, 4, 8, 8, requires_grad=True)
    step = torch.tensor([0])
    loss = -model.log_probs(x, step, "spatial_relationships")[0, 0]
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.backbone.parameters())

    model.save(tmp_path / "clf")
    again = CVGClassifier.load(tmp_path / "clf")
    assert again.config()["backbone"] == model.config()["backbone"]
    assert again.config()["backbone"]["image_size"] == 16
    with torch.no_grad():
        assert torch.allclose(again.log_probs(x, step, "spatial_relationships"),
                              model.log_probs(x, step, "spatial_relationships"), atol=1e-6)


CHAT = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {% for c in m['content'] %}"
        "{% if c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
        "{% else %}{{ c['text'] }}{% endif %}{% endfor %} <|im_end|> {% endfor %}"
        "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")


def test_local_folder_with_processor_and_chat_template(tmp_path):
    """The real loading path: from_pretrained on a folder holding a model and a processor."""
    from transformers import (AutoModelForImageTextToText, AutoConfig, Qwen2VLImageProcessor,
                              Qwen2VLProcessor, Qwen2VLVideoProcessor)

    words = ["user", "assistant", "Describe", "the", "arrangement", "."]
    tok = word_level_tokenizer(words, ["<|im_start|>", "<|im_end|>", *SPECIAL])
    ids = tuple(tok.convert_tokens_to_ids(SPECIAL))
    cfg = dict(tiny(ids=ids))
    model_type = cfg.pop("model_type")
    model = AutoModelForImageTextToText.from_config(AutoConfig.for_model(model_type, **cfg))
    folder = tmp_path / "tiny-qwen2-vl"
    model.save_pretrained(folder)
    with pytest.raises(FileNotFoundError, match="processor/tokenizer did not"):
        HFVLM(frames=4, map_size=8, model_id=str(folder))  # weights only
    mean, std = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(image_mean=mean, image_std=std),
                     tokenizer=tok, chat_template=CHAT,
                     video_processor=Qwen2VLVideoProcessor(image_mean=mean, image_std=std)
                     ).save_pretrained(folder)

    bb = HFVLM(frames=4, map_size=8, model_id=str(folder), image_size=16, dtype="bfloat16").freeze()
    got = tok.convert_ids_to_tokens(bb.input_ids[0].tolist())
    assert got == ["<|im_start|>", "user", "<|vision_start|>", *["<|video_pad|>"] * 8,
                   "<|vision_end|>", "Describe", "the", "arrangement", ".", "<|im_end|>",
                   "<|im_start|>", "assistant"]
    assert bb.pixel_mean.flatten().tolist() == mean and bb.pixel_std.flatten().tolist() == std
    assert next(bb.vlm.parameters()).dtype == torch.bfloat16
    for key, value in model.model.state_dict().items():
        assert torch.equal(bb.vlm.state_dict()[key], value.to(torch.bfloat16)), key
    volume = torch.rand(2, 4, 3, 8, 8, requires_grad=True)
    feats = bb(volume)
    assert feats.shape == (2, 32) and feats.dtype == torch.float32  # the head's dtype
    feats.sum().backward()
    assert torch.isfinite(volume.grad).all() and volume.grad.abs().sum() > 0


def test_missing_model_names_the_id_and_the_config_key():
    with pytest.raises(FileNotFoundError, match=r"'/nonexistent/qwen2-vl'.*backbone\.model_id=DIR"):
        CVGClassifier(FEATS, LABELS, {"name": "hf-vlm", "model_id": "/nonexistent/qwen2-vl"},
                      num_layer_heads=2, frames=4)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="model_type 'llava' is not supported"):
        HFVLM(frames=4, map_size=8, config={"model_type": "llava"})
    with pytest.raises(ValueError, match="pool 'max'"):
        HFVLM(frames=4, map_size=8, config=tiny(), pool="max")
    with pytest.raises(ValueError, match="raise text_config.vocab_size"):
        HFVLM(frames=4, map_size=8, config={**tiny(ids=(0, 1, 2, 3))})
