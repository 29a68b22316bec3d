"""`tiny`: the embedded shapes-world text-to-video generator, a real diffusers pipeline.

``TextToVideoSDPipeline`` composed of:
- ``UNet3DConditionModel`` (about (32, 64) channels, cross-attention at both levels, ~2 M params);
- a small ``CLIPTextModel`` trained jointly with the UNet, over a word-level tokenizer whose
  vocabulary is the shapes-world grammar (``PreTrainedTokenizerFast``, so offsets work); or,
  with ``text_encoder_path``, a pretrained BERT-style encoder and its WordPiece tokenizer
  (generator v2: :mod:`cvg_bench.generators.pretrained_text`);
- ``DDIMScheduler`` with v-prediction, zero-terminal-SNR rescaling and trailing spacing
  (epsilon prediction left noisy backgrounds, notes/measured-facts.md);
- :class:`PixelFoldVAE`, the lossless 2x2 pixel fold in place of a VAE (pixel space).

Weights live in ``cvg_bench/assets/tiny_generator/`` (``save_pretrained``, safetensors),
made by :mod:`cvg_bench.generators.tiny_training`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from diffusers import DDIMScheduler, UNet3DConditionModel
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from cvg_bench.generators.pixel_fold import PixelFoldVAE
from cvg_bench.generators.positional_unet3d import PositionalUNet3DConditionModel
from cvg_bench.generators.unet3d import UNet3DGenerator, folder_fingerprint, import_t2v_pipeline
from cvg_bench.quiet import dtype_kwarg
from cvg_bench.registry import register

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATH = PACKAGE_ROOT / "assets" / "tiny_generator"
TRAIN_COMMAND = "python -m cvg_bench train component=generator  (or: python -m cvg_bench.generators.tiny_training)"

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")

# Words of the shapes world's prompts; training adds every word the grammar produces.
BASE_WORDS = """
a an the and of to on in at with from into onto is are each other its their then while
red green blue yellow purple orange white cyan magenta pink gray grey brown black
circle circles square squares triangle triangles star stars diamond diamonds cross crosses
ring rings heart hearts hexagon hexagons rectangle rectangles ball balls box boxes shape shapes
object objects big small large tiny
one two three four five six seven eight nine ten
left right above below over under top bottom beside next near far behind front
moving moves move up down toward towards away across around along
rotating rotates spinning spins bouncing bounces jumping jumps growing grows shrinking shrinks
turning turns changing changes becoming becomes color colour
colliding collides collide pushing pushes push hitting hits follows following chases chasing
passing passes meets meeting approaches approaching touches touching side
, .
""".split()

DEFAULT_CONFIG: dict[str, Any] = {
    "max_length": 32,
    # > 0: PositionalUNet3DConditionModel, sin/cos of (x, y, frame) at this many octaves added
    # after conv_in (the plain UNet3D has no positional embedding; see its docstring)
    "position_frequencies": 0,
    # a Hugging Face folder of a pretrained BERT-style text encoder (+ tokenizer) used instead
    # of the small CLIP: its tokenizer replaces the word-level one, its hidden size is the
    # UNet's cross_attention_dim, the "text_encoder" keys do not apply (pretrained_text.py).
    # A relative path is taken from the working directory, else from the repository root.
    "text_encoder_path": None,
    "unet": {
        "sample_size": 16,
        "in_channels": 12,
        "out_channels": 12,
        "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D"],
        "up_block_types": ["CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "cross_attention_dim": 64,
        "attention_head_dim": 8,  # UNet3D reads this as the number of channels per head
        "norm_num_groups": 8,
    },
    "text_encoder": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "projection_dim": 64,
    },
    "scheduler": {
        "num_train_timesteps": 1000,
        "beta_schedule": "squaredcos_cap_v2",
        "prediction_type": "v_prediction",
        "rescale_betas_zero_snr": True,
        "timestep_spacing": "trailing",
        "clip_sample": True,  # pixel space: x0 lives in [-1, 1]
        "set_alpha_to_one": True,
    },
}

# The smallest sensible model, for tests: 4 frames of 16x16 (folded to 12x8x8).
TEST_CONFIG: dict[str, Any] = {
    "max_length": 16,
    "unet": {"sample_size": 8, "block_out_channels": [16, 32], "cross_attention_dim": 32},
    "text_encoder": {"hidden_size": 32, "intermediate_size": 64, "projection_dim": 32},
}


def merge_config(base: Mapping[str, Any], override: Mapping[str, Any] | None) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base``; unknown keys are an error."""
    out = copy.deepcopy(dict(base))
    for key, value in (override or {}).items():
        if key not in out:
            raise ValueError(f"unknown tiny generator config key {key!r}; accepted: {sorted(out)}")
        if isinstance(out[key], dict):
            if not isinstance(value, Mapping):
                raise ValueError(f"config key {key!r} takes a mapping, got {value!r}")
            out[key] = {**out[key], **dict(value)}
        else:
            out[key] = value
    return out


def build_tokenizer(words: Iterable[str] = BASE_WORDS, max_length: int = 32) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer: ``[BOS] words [EOS]`` padded with ``[PAD]``."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in sorted({w.lower() for w in words} - set(SPECIAL_TOKENS)):
        vocab[word] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # splits punctuation off words
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="[BOS]", eos_token="[EOS]", pad_token="[PAD]",
        unk_token="[UNK]", model_max_length=max_length,
    )


def build_tiny_pipeline(
    config: Mapping[str, Any] | None = None,
    words: Iterable[str] = BASE_WORDS,
    seed: int = 0,
) -> Any:
    """A randomly initialised tiny ``TextToVideoSDPipeline`` from ``config`` (no weights)."""
    cfg = merge_config(DEFAULT_CONFIG, config)
    unet_cfg = dict(cfg["unet"])
    if cfg["text_encoder_path"]:
        text_encoder, tokenizer = _pretrained_text(cfg, config or {}, words)
        torch.manual_seed(seed)
        if "cross_attention_dim" not in dict((config or {}).get("unet") or {}):
            unet_cfg["cross_attention_dim"] = text_encoder.config.hidden_size
        text_config = text_encoder.config
    else:
        tokenizer = build_tokenizer(words, cfg["max_length"])
        torch.manual_seed(seed)
        text_config = CLIPTextConfig(
            vocab_size=len(tokenizer), max_position_embeddings=cfg["max_length"],
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, **cfg["text_encoder"],
        )
        text_encoder = CLIPTextModel(text_config)
    if unet_cfg["cross_attention_dim"] != text_config.hidden_size:
        raise ValueError(
            f"unet.cross_attention_dim={unet_cfg['cross_attention_dim']} must equal "
            f"text_encoder.hidden_size={text_config.hidden_size}"
        )
    unet_cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in unet_cfg.items()}
    if cfg["position_frequencies"]:
        unet = PositionalUNet3DConditionModel(position_frequencies=int(cfg["position_frequencies"]), **unet_cfg)
    else:
        unet = UNet3DConditionModel(**unet_cfg)
    vae = PixelFoldVAE(in_channels=3, factor=2, block_out_channels=(1, 1))
    if unet.config.in_channels != vae.latent_channels:
        raise ValueError(f"unet.in_channels={unet.config.in_channels} must be {vae.latent_channels} (3 x 2 x 2 folded pixels)")
    scheduler = DDIMScheduler(**cfg["scheduler"])
    pipeline_cls = import_t2v_pipeline()
    return pipeline_cls(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)


def _pretrained_text(cfg: Mapping[str, Any], override: Mapping[str, Any], words: Iterable[str]) -> tuple[Any, Any]:
    """The pretrained text encoder and tokenizer of ``cfg["text_encoder_path"]``; every word
    the model will read must be spelled without the unknown token."""
    from cvg_bench.generators.pretrained_text import load_pretrained_text_encoder, unknown_words

    if override.get("text_encoder"):
        raise ValueError(f"text_encoder keys {sorted(override['text_encoder'])} do not apply with "
                         f"text_encoder_path={cfg['text_encoder_path']!r} (the pretrained encoder's own config does)")
    folder = resolve_path(cfg["text_encoder_path"])
    encoder, tokenizer = load_pretrained_text_encoder(folder, int(cfg["max_length"]))
    missing = unknown_words(tokenizer, [w for w in words if w not in SPECIAL_TOKENS])
    if missing:
        raise ValueError(f"the tokenizer of {folder} spells these words with {tokenizer.unk_token}: {missing[:20]}")
    return encoder, tokenizer


def save_tiny_pipeline(pipe: Any, folder: str | Path) -> None:
    """``save_pretrained`` (safetensors); a text encoder whose weights are float16 values (a
    pretrained one: pretrained_text.py) is stored as float16, losslessly, at half the size.
    :func:`load_tiny_pipeline` loads every part as float32."""
    from cvg_bench.generators.pretrained_text import save_text_encoder

    folder = Path(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    if getattr(pipe.text_encoder.config, "use_attention_mask", False):  # a pretrained encoder
        save_text_encoder(pipe.text_encoder, folder / "text_encoder")


def load_tiny_pipeline(path: str | Path) -> Any:
    """Load a saved tiny pipeline folder; the error names the path and the training command."""
    path = Path(path)
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(
            f"tiny generator weights not found: {path} has no model_index.json. "
            f"Train them with: {TRAIN_COMMAND}; or point `generator.path` at a saved pipeline folder."
        )
    pipeline_cls = import_t2v_pipeline()
    # the VAE (and a positional UNet) are ours: load them explicitly rather than relying on
    # diffusers' custom-class resolution
    vae = PixelFoldVAE.from_pretrained(path / "vae")
    extra = {}
    unet_class = json.loads((path / "unet" / "config.json").read_text()).get("_class_name")
    if unet_class == PositionalUNet3DConditionModel.__name__:
        extra["unet"] = PositionalUNet3DConditionModel.from_pretrained(path / "unet")
    return pipeline_cls.from_pretrained(path, vae=vae, **dtype_kwarg(torch.float32), **extra)


def resolve_path(path: str | Path | None) -> Path:
    """``None`` -> the shipped assets folder; a relative path is taken from the working dir,
    else from the repository root (so configs work from any directory)."""
    if path is None:
        return DEFAULT_PATH
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return PACKAGE_ROOT.parent / p


@register("generator", "tiny")
class TinyGenerator(UNet3DGenerator):
    """Embedded shapes-world T2V model (diffusers UNet3D + small CLIP text encoder, pixel space)."""

    def __init__(
        self,
        path: str | None = None,
        num_frames: int = 8,
        height: int = 32,
        width: int = 32,
        num_inference_steps: int = 25,
        guidance_scale: float = 1.5,
        negative_prompt: str = "",
        eta: float = 0.0,
        device: str = "cpu",
        attention_early_exit: bool = True,
        inversion_fixed_point_iters: int = 0,
        pipeline: Any = None,
    ) -> None:
        if pipeline is None:
            folder = resolve_path(path)
            pipeline = load_tiny_pipeline(folder)
            name = f"tiny:{folder_fingerprint(folder)}"
        else:
            name = getattr(pipeline, "_cvg_name", "tiny:in-memory")
        super().__init__(
            pipeline, num_frames=num_frames, height=height, width=width,
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
            negative_prompt=negative_prompt, eta=eta, device=device,
            attention_early_exit=attention_early_exit, model_name=name,
            inversion_fixed_point_iters=inversion_fixed_point_iters,
        )

    @classmethod
    def random(
        cls,
        config: Mapping[str, Any] | None = None,
        seed: int = 0,
        words: Iterable[str] = BASE_WORDS,
        **kwargs: Any,
    ) -> "TinyGenerator":
        """A randomly initialised generator (no weights), e.g. ``TinyGenerator.random(TEST_CONFIG,
        num_frames=4, height=16, width=16, num_inference_steps=4)`` in tests."""
        pipe = build_tiny_pipeline(config, words=words, seed=seed)
        pipe._cvg_name = f"tiny:random-seed{seed}"
        return cls(pipeline=pipe, **kwargs)
