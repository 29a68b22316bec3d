"""Real-size denoisers with random weights, from their published configs (cost measurement).

What a guidance step costs depends on the denoiser's architecture and the latent's size, not
on its weights, so the cost benchmark (``python -m cvg_bench bench generator=wan
generator.size=real``) builds each published denoiser from its config with random weights,
where no checkpoint can be downloaded. Around it sit stand-ins that cost next to nothing and
have the shapes the denoiser needs:

- text: a one-layer encoder of the real one's family and output width (UMT5/T5 4096-d,
  OpenCLIP-H text 1024-d) over a small offline tokenizer, padded to the real text length
  (Wan 512, CogVideoX 226, ZeroScope 77 keys), so the cross-attention sees real-size keys;
- VAE: a small VAE of the real one's class with the real latent channels and 8x spatial /
  4x temporal factors, so latent shapes are the real ones (the bench never decodes).

The configs (``transformer/config.json`` or ``unet/config.json`` of each hub repository):
Wan-AI/Wan2.1-T2V-1.3B-Diffusers, THUDM/CogVideoX-2b, cerspense/zeroscope_v2_576w.
"""

from __future__ import annotations

from typing import Any

import torch

from cvg_bench.generators.unet3d import parse_dtype

# Wan-AI/Wan2.1-T2V-1.3B-Diffusers/transformer/config.json (dim 1536 = 12 heads x 128)
WAN_2_1_T2V_1_3B = {
    "patch_size": (1, 2, 2), "num_attention_heads": 12, "attention_head_dim": 128, "in_channels": 16,
    "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 8960, "num_layers": 30,
    "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "image_dim": None,
    "added_kv_proj_dim": None, "rope_max_seq_len": 1024,
}

# THUDM/CogVideoX-2b/transformer/config.json (dim 1920 = 30 heads x 64, sincos positions)
COGVIDEOX_2B = {
    "num_attention_heads": 30, "attention_head_dim": 64, "in_channels": 16, "out_channels": 16,
    "flip_sin_to_cos": True, "freq_shift": 0, "time_embed_dim": 512, "text_embed_dim": 4096,
    "num_layers": 30, "dropout": 0.0, "attention_bias": True, "sample_width": 90, "sample_height": 60,
    "sample_frames": 49, "patch_size": 2, "temporal_compression_ratio": 4, "max_text_seq_length": 226,
    "activation_fn": "gelu-approximate", "timestep_activation_fn": "silu", "norm_elementwise_affine": True,
    "norm_eps": 1e-5, "spatial_interpolation_scale": 1.875, "temporal_interpolation_scale": 1.0,
    "use_rotary_positional_embeddings": False, "use_learned_positional_embeddings": False,
}

# cerspense/zeroscope_v2_576w/unet/config.json (ModelScope's UNet3D, 1.4 B parameters)
ZEROSCOPE_V2_576W = {
    "sample_size": 32, "in_channels": 4, "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    "up_block_types": ("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
    "block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2, "downsample_padding": 1,
    "mid_block_scale_factor": 1, "act_fn": "silu", "norm_num_groups": 32, "norm_eps": 1e-5,
    "cross_attention_dim": 1024, "attention_head_dim": 64,
}

PUBLISHED = {"wan": "Wan2.1-T2V-1.3B", "cogvideox": "CogVideoX-2B", "zeroscope": "ZeroScope v2 576w"}
# The model's usual video (pixel frames, height, width) and text length: the generator configs'
# defaults (configs/generator/<name>.yaml) are these too.
REAL_VIDEO = {"wan": (81, 480, 832, 512), "cogvideox": (49, 480, 720, 226), "zeroscope": (24, 320, 576, 77)}


def real_size_generator(name: str, seed: int = 0, device: str = "cuda", dtype: str = "bfloat16",
                        num_frames: int | None = None, height: int | None = None, width: int | None = None,
                        **kwargs: Any) -> Any:
    """The ``name`` generator (wan | cogvideox | zeroscope) with its published denoiser, random
    weights, the stand-in text encoder and VAE, at the model's usual video size unless given."""
    if name not in PUBLISHED:
        raise ValueError(f"generator.size=real: no published config for generator {name!r}; "
                         f"accepted: {', '.join(PUBLISHED)}")
    frames, h, w, text_len = REAL_VIDEO[name]
    video = {"num_frames": num_frames or frames, "height": height or h, "width": width or w}
    builders = {"wan": _wan, "cogvideox": _cogvideox, "zeroscope": _zeroscope}
    torch.manual_seed(seed)
    pipe = builders[name](text_len, torch.device(device))
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            cast_like_from_pretrained(component, parse_dtype(dtype))
    cls = _generator_class(name)
    extra = {"max_sequence_length": text_len} if name in ("wan", "cogvideox") else {}
    if name == "wan":
        extra["vae_dtype"] = None
    return cls(model=f"random-{PUBLISHED[name]}-seed{seed}", pipeline=pipe, torch_dtype=dtype, device=device,
               **{**video, **extra, **kwargs})


def cast_like_from_pretrained(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``model`` in ``dtype`` except the parameters diffusers keeps in float32 when it loads the
    model with ``torch_dtype`` (``_keep_in_fp32_modules``: Wan's norms, time embedder, RoPE...)."""
    keep = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, param in model.named_parameters():
        parts = name.split(".")
        param.data = param.data.to(torch.float32 if any(k in parts for k in keep) else dtype)
    return model


def _generator_class(name: str) -> type:
    from cvg_bench import registry

    return registry.get("generator", name)


def _wan(text_len: int, device: torch.device) -> Any:
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from cvg_bench.generators.flow_matching import tiny_t5_tokenizer
    from cvg_bench.generators.wan import WAN_SCHEDULER

    tokenizer = tiny_t5_tokenizer()
    text_encoder = UMT5EncoderModel(_t5_config(UMT5Config, len(tokenizer), WAN_2_1_T2V_1_3B["text_dim"]))
    vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    with device:  # initialise the weights where they run (seconds, not minutes)
        transformer = WanTransformer3DModel(**WAN_2_1_T2V_1_3B)
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                       scheduler=UniPCMultistepScheduler(**WAN_SCHEDULER))


def _cogvideox(text_len: int, device: torch.device) -> Any:
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    from cvg_bench.generators.cogvideox import COGVIDEOX_SCHEDULER
    from cvg_bench.generators.flow_matching import tiny_t5_tokenizer

    tokenizer = tiny_t5_tokenizer()
    text_encoder = T5EncoderModel(_t5_config(T5Config, len(tokenizer), COGVIDEOX_2B["text_embed_dim"]))
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=16,
        layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4,
    )
    with device:
        transformer = CogVideoXTransformer3DModel(**COGVIDEOX_2B)
    return CogVideoXPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                             scheduler=CogVideoXDDIMScheduler(**COGVIDEOX_SCHEDULER))


def _zeroscope(text_len: int, device: torch.device) -> Any:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from cvg_bench.generators.unet3d import import_t2v_pipeline, tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer(text_len)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=ZEROSCOPE_V2_576W["cross_attention_dim"], intermediate_size=64,
        num_hidden_layers=1, num_attention_heads=1, max_position_embeddings=text_len,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, projection_dim=32,
    ))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        norm_num_groups=8, sample_size=64,
    )
    with device:
        unet = UNet3DConditionModel(**ZEROSCOPE_V2_576W)
    # ModelScope's noise schedule (the sampler does not change what one denoiser call costs)
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")
    return import_t2v_pipeline()(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                 scheduler=scheduler)


def _t5_config(config_cls: type, vocab: int, width: int) -> Any:
    """One layer of the real width: the denoiser sees keys of the real shape; the encoder costs ~0."""
    return config_cls(vocab_size=vocab, d_model=width, d_kv=8, d_ff=16, num_layers=1, num_heads=1,
                      relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
