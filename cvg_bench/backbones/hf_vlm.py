"""The paper's backbone: a frozen transformers vision-language model reading phi as a video.

CVG step (d): "phi is fed into a frozen VLM with a trainable classification head". The
aggregator's volume ``(batch, frames, 3, s, s)`` is read as a short RGB video in [0, 1]:
upsampled to ``image_size``, normalised with the model's own pixel mean/std, cut into the
VLM's spatio-temporal patches *in torch* (so guidance gradients reach the volume), and put
in front of a fixed text prompt. The final hidden state of the last token is the feature.

Supported family: Qwen2-VL and Qwen2.5-VL (native video input: ``pixel_values_videos`` +
``video_grid_thw``, tubelets of ``temporal_patch_size`` frames, M-RoPE over time/height/width).
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.nn.functional as F

from cvg_bench.backbones.base import Backbone
from cvg_bench.registry import register

FAMILIES = ("qwen2_vl", "qwen2_5_vl")
# Qwen2-VL / Qwen2.5-VL processors' default pixel statistics (OpenAI CLIP's), used when the
# model comes from a ``config`` (no processor files) or the processor does not say.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
POOLS = ("last", "mean_video")
DTYPES = ("float32", "bfloat16", "float16")


def word_level_tokenizer(words: list[str], special: list[str] = ()) -> Any:
    """A small offline word-level tokenizer (``PreTrainedTokenizerFast``): ``<unk>`` = 0, then
    ``words``, then ``special`` tokens (split out before the words). For random models."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0}
    for w in [*words, *special]:
        vocab.setdefault(w, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    if special:
        tok.add_special_tokens({"additional_special_tokens": list(special)})
    return tok


def prompt_words(prompt: str) -> list[str]:
    """The words of ``prompt`` as the Whitespace pre-tokenizer splits them, first-seen order."""
    return list(dict.fromkeys(re.findall(r"\w+|[^\w\s]+", prompt)))


def load_vlm(model_id: str | None, config: dict[str, Any] | None, dtype: torch.dtype
             ) -> tuple[Any, Any, Any]:
    """``(model, tokenizer-or-processor, video processor or None)`` from a hub id / local folder,
    or a random model from ``config`` (``{"model_type": "qwen2_vl", "text_config": ...}``)."""
    import transformers

    auto = transformers.AutoModelForImageTextToText
    if config:
        cfg = dict(config)
        model_type = cfg.pop("model_type", None)
        if model_type not in FAMILIES:
            raise ValueError(f"hf-vlm: config.model_type {model_type!r} is not supported; use one "
                             f"of {', '.join(FAMILIES)}")
        model = auto.from_config(transformers.AutoConfig.for_model(model_type, **cfg))
        return model.to(dtype), None, None
    if not model_id:
        raise ValueError("hf-vlm: give model_id (hub id or local folder, e.g. "
                         "Qwen/Qwen2-VL-2B-Instruct) or config (a random model)")
    try:
        model = auto.from_pretrained(model_id, dtype=dtype)
    except OSError as exc:
        raise FileNotFoundError(
            f"cannot load the VLM {model_id!r} ({exc.__class__.__name__}); download it on a "
            "machine with access (huggingface-cli download <id> --local-dir DIR) and set "
            "backbone.model_id=DIR") from exc
    try:
        processor = transformers.AutoProcessor.from_pretrained(model_id)
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(
            f"the VLM {model_id!r} loaded but its processor/tokenizer did not "
            f"({exc.__class__.__name__}: {exc}); download the whole repository (tokenizer and "
            "preprocessor files too) and set backbone.model_id=DIR") from exc
    video_processor = (getattr(processor, "video_processor", None)
                       or getattr(processor, "image_processor", None))
    return model, processor, video_processor


@register("backbone", "hf-vlm")
class HFVLM(Backbone):
    """The paper's choice: a frozen transformers VLM (Qwen2-VL/2.5-VL) reading phi as a video."""

    def __init__(self, frames: int, map_size: int, model_id: str | None = None,
                 config: dict[str, Any] | None = None,
                 prompt: str = "Describe the arrangement.", image_size: int = 112,
                 pool: str = "last", dtype: str = "float32", device: str | None = None) -> None:
        super().__init__(frames, map_size)
        if pool not in POOLS:
            raise ValueError(f"hf-vlm: pool {pool!r} is not one of {', '.join(POOLS)}")
        if dtype not in DTYPES:
            raise ValueError(f"hf-vlm: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        self.model_id, self.hf_config, self.prompt = model_id, config, prompt
        self.pool, self.dtype_name, self.device_name = pool, dtype, device
        full, processor, video_processor = load_vlm(model_id, config, getattr(torch, dtype))
        mcfg = full.config
        if mcfg.model_type not in FAMILIES:
            raise ValueError(f"hf-vlm: {model_id!r} is a {mcfg.model_type!r} model; supported "
                             f"families: {', '.join(FAMILIES)}")
        # The base model (vision tower + language model), without the LM head: we read hidden
        # states, not next-token logits.
        self.vlm = full.model
        if device:
            self.vlm.to(device)
        vcfg, tcfg = mcfg.vision_config, mcfg.text_config
        self.patch, self.merge = int(vcfg.patch_size), int(vcfg.spatial_merge_size)
        self.tubelet = int(vcfg.temporal_patch_size)
        factor = self.patch * self.merge  # each frame side must be a multiple of this
        self.requested_image_size = image_size
        self.image_size = max(factor, math.ceil(image_size / factor) * factor)
        self.in_channels = int(getattr(vcfg, "in_channels", 3))
        self.out_dim = int(tcfg.hidden_size)
        mean = getattr(video_processor, "image_mean", None) or CLIP_MEAN
        std = getattr(video_processor, "image_std", None) or CLIP_STD
        # Non-persistent buffers: derived again on load, so not part of the classifier file.
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 1, -1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 1, -1, 1, 1), False)

        grid_t = math.ceil(frames / self.tubelet)
        grid_hw = self.image_size // self.patch
        self.grid_thw = (grid_t, grid_hw, grid_hw)
        self.num_video_tokens = grid_t * grid_hw * grid_hw // self.merge ** 2
        ids = self._prompt_ids(processor, mcfg, config)
        video = [i == mcfg.video_token_id for i in ids]
        self.register_buffer("input_ids", torch.tensor(ids)[None], persistent=False)
        # M-RoPE needs to know which tokens are video (2) and which text (0).
        self.register_buffer("mm_token_type_ids", 2 * torch.tensor(video, dtype=torch.int)[None],
                             persistent=False)

    # --- the fixed prompt ---------------------------------------------------------------------
    def _prompt_ids(self, processor: Any, mcfg: Any, config: dict[str, Any] | None) -> list[int]:
        """Token ids of ``[chat prefix] <vision_start> <video>*N <vision_end> prompt [suffix]``,
        tokenised once (every input has the same frames and size, so the same sequence)."""
        video_id = mcfg.video_token_id
        n = self.num_video_tokens
        if processor is None:  # a random model: a word-level tokenizer over the prompt's words
            tok = word_level_tokenizer(prompt_words(self.prompt))
            vocab = mcfg.text_config.vocab_size
            specials = {mcfg.video_token_id, mcfg.image_token_id, mcfg.vision_start_token_id,
                        mcfg.vision_end_token_id}
            if len(tok) > vocab or specials & set(range(len(tok))):
                raise ValueError(f"hf-vlm: the random model's vocab_size={vocab} leaves no room "
                                 f"for the prompt's {len(tok)} word ids below its special ids "
                                 f"{sorted(specials)}; raise text_config.vocab_size")
            text = tok(self.prompt, add_special_tokens=False)["input_ids"]
            return [mcfg.vision_start_token_id, *[video_id] * n, mcfg.vision_end_token_id, *text]
        tok = getattr(processor, "tokenizer", processor)
        if getattr(processor, "chat_template", None) or getattr(tok, "chat_template", None):
            owner = processor if getattr(processor, "chat_template", None) else tok
            messages = [{"role": "user", "content": [{"type": "video"},
                                                     {"type": "text", "text": self.prompt}]}]
            text = owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = tok(text, add_special_tokens=False)["input_ids"]
            if ids.count(video_id) != 1:
                raise ValueError(f"hf-vlm: the chat template of {self.model_id!r} rendered "
                                 f"{ids.count(video_id)} video tokens (id {video_id}), expected 1")
            k = ids.index(video_id)
            return [*ids[:k], *[video_id] * n, *ids[k + 1:]]
        text = tok(self.prompt, add_special_tokens=False)["input_ids"]
        return [mcfg.vision_start_token_id, *[video_id] * n, mcfg.vision_end_token_id, *text]

    def config(self):
        return {"model_id": self.model_id, "config": self.hf_config, "prompt": self.prompt,
                "image_size": self.requested_image_size, "pool": self.pool,
                "dtype": self.dtype_name, "device": self.device_name}

    # --- pixels -------------------------------------------------------------------------------
    def pixel_values_videos(self, volume: torch.Tensor) -> torch.Tensor:
        """``(b, F, C, s, s)`` read as RGB in [0, 1] -> the processor's flat patches
        ``(b * t * h * w, C * tubelet * patch * patch)``, differentiably.

        Same layout as ``Qwen2VLVideoProcessor.patchify`` (checked by the tests): resize,
        normalise, pad the frames to a multiple of the tubelet by repeating the last one."""
        b, f, c = volume.shape[:3]
        size, p, m, tp = self.image_size, self.patch, self.merge, self.tubelet
        x = F.interpolate(volume.flatten(0, 1), size=(size, size), mode="bilinear",
                          align_corners=False).reshape(b, f, c, size, size)
        x = (x - self.pixel_mean.to(x)) / self.pixel_std.to(x)
        if pad := -f % tp:
            x = torch.cat([x, x[:, -1:].expand(-1, pad, -1, -1, -1)], dim=1)
        gt, gh, gw = self.grid_thw
        x = x.reshape(b, gt, tp, c, gh // m, m, p, gw // m, m, p)
        x = x.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
        return x.reshape(b * gt * gh * gw, c * tp * p * p)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        b = volume.shape[0]
        param = next(self.vlm.parameters())
        pixels = self.pixel_values_videos(volume.to(param.device, torch.float32)).to(param.dtype)
        ids = self.input_ids.to(param.device).expand(b, -1)
        out = self.vlm(input_ids=ids, pixel_values_videos=pixels,
                       video_grid_thw=torch.tensor([self.grid_thw] * b, device=param.device),
                       mm_token_type_ids=self.mm_token_type_ids.to(param.device).expand(b, -1),
                       use_cache=False)
        hidden = out.last_hidden_state  # (b, L, D)
        if self.pool == "last":
            # The language model is causal: only the last token has attended to every video
            # token *and* the question, and it is where the VLM's own answer would be read.
            feats = hidden[:, -1]
        else:
            # Ablation: video tokens come before the prompt, so this ignores the question.
            video = (self.mm_token_type_ids[0] == 2).to(hidden.device)
            feats = hidden[:, video].mean(1)
        return feats.to(volume.device, volume.dtype)
