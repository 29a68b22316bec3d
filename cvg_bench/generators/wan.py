"""`wan`: Wan 2.1 text-to-video (diffusers ``WanPipeline``), flow matching.

Network: ``WanTransformer3DModel`` (patchified video tokens; each block = self-attention
``attn1`` with 3D RoPE, text cross-attention ``attn2``, FFN), ``AutoencoderKLWan`` (8x spatial,
4x temporal), UMT5 text encoder padded to 512 tokens (padding embeddings zeroed by the pipeline,
still attended to). Sampler: the pipeline's scheduler (UniPC with flow sigmas for the hub model).

Cross-attention maps come from :class:`WanCrossAttentionCapture` on ``blocks.{i}.attn2``:
``softmax(QK^T / sqrt(d))`` after Wan's RMS q/k norms (no RoPE: ``attn2`` is called without it),
over the text keys only (image-conditioning keys of I2V checkpoints go through their own SDPA,
excluded from the maps). Inversion: reverse Euler along the sampler's sigmas; replay: forward
Euler (:mod:`cvg_bench.generators.flow_matching`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cvg_bench.generators.base import InversionResult
from cvg_bench.generators.flow_matching import (
    EulerFlowSampler,
    TokenGridCapture,
    TransformerT2VGenerator,
    check_unique_int_timesteps,
    euler_invert,
    flow_schedule,
    inversion_result,
    tiny_t5_tokenizer,
)
from cvg_bench.registry import register
from cvg_bench.types import PromptSpec, Video

WAN_TEXT_LENGTH = 512  # WanAttnProcessor's hard-coded text length (image keys come first in I2V)


def import_wan() -> Any:
    """The diffusers module that defines Wan (a clear error on diffusers without Wan)."""
    try:
        from diffusers.models.transformers import transformer_wan
    except ImportError as exc:  # pragma: no cover - depends on the installed diffusers
        raise ImportError(f"the wan generator needs diffusers >= 0.33 (WanPipeline): {exc}") from exc
    return transformer_wan


class WanCrossAttentionCapture(TokenGridCapture):
    """A ``WanAttnProcessor`` twin for ``attn2`` that also returns the text cross-attention maps.

    Selected heads: explicit float32 softmax over the text keys (kept in the autograd graph);
    other heads: SDPA. Output = the original processor's up to float rounding.
    """

    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: Any = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if encoder_hidden_states is None:
            raise RuntimeError(f"capture processor on {self.name!r} got no encoder_hidden_states: not cross-attention")
        if rotary_emb is not None or attention_mask is not None:
            raise NotImplementedError(f"{self.name!r}: Wan's text cross-attention takes no RoPE and no mask")
        wan = import_wan()
        image_states = None
        if attn.add_k_proj is not None:  # I2V checkpoints: [image keys; 512 text keys]
            n_image = encoder_hidden_states.shape[1] - WAN_TEXT_LENGTH
            image_states = encoder_hidden_states[:, :n_image]
            encoder_hidden_states = encoder_hidden_states[:, n_image:]

        query, key, value = wan._get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        query, key = attn.norm_q(query), attn.norm_k(key)  # RMS norm across heads, before the split
        # (B, S, H*D) -> (B, H, S, D)
        query, key, value = (x.unflatten(2, (attn.heads, -1)).transpose(1, 2) for x in (query, key, value))
        seq_len, n_keys = query.shape[2], key.shape[2]

        heads = self._heads(attn.heads)
        out = self._attend(attn, query, key, value, None, heads, seq_len, n_keys)
        out = out.transpose(1, 2).flatten(2, 3).type_as(query)

        if image_states is not None:
            key_img, value_img = wan._get_added_kv_projections(attn, image_states)
            key_img = attn.norm_added_k(key_img)
            key_img, value_img = (x.unflatten(2, (attn.heads, -1)).transpose(1, 2) for x in (key_img, value_img))
            out_img = F.scaled_dot_product_attention(query, key_img, value_img)
            out = out + out_img.transpose(1, 2).flatten(2, 3).type_as(query)

        out = attn.to_out[1](attn.to_out[0](out))
        self._maybe_exit()
        return out


@register("generator", "wan")
class WanGenerator(TransformerT2VGenerator):
    """Wan 2.1 T2V (diffusers WanPipeline; cross-attention = attn2 of every transformer block)."""

    backend = "wan"
    default_model = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
    capture_processor = WanCrossAttentionCapture

    def __init__(
        self,
        model: str | None = None,
        path: str | None = None,
        torch_dtype: str = "bfloat16",
        vae_dtype: str | None = "float32",
        variant: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        device: str = "cuda",
        num_frames: int = 81,
        height: int = 480,
        width: int = 832,
        num_inference_steps: int = 50,
        guidance_scale: float = 5.0,
        negative_prompt: str = "",
        max_sequence_length: int = WAN_TEXT_LENGTH,
        attention_early_exit: bool = True,
        inversion_fixed_point_iters: int = 0,
        guidance_checkpointing: bool = False,
        pipeline: Any = None,
    ) -> None:
        model = model or self.default_model
        if pipeline is None:
            pipeline = self._load(model, path, torch_dtype, variant, revision, local_files_only)
        if getattr(pipeline, "transformer_2", None) is not None or pipeline.config.get("expand_timesteps", False):
            raise NotImplementedError("wan supports single-transformer Wan 2.1-style pipelines "
                                      "(no transformer_2 / expand_timesteps of Wan 2.2)")
        super().__init__(
            pipeline, model=model, path=path, revision=revision, vae_dtype=vae_dtype,
            max_sequence_length=max_sequence_length, num_frames=num_frames, height=height, width=width,
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
            negative_prompt=negative_prompt, device=device, attention_early_exit=attention_early_exit,
            inversion_fixed_point_iters=inversion_fixed_point_iters,
            guidance_checkpointing=guidance_checkpointing,
        )

    @classmethod
    def pipeline_class(cls) -> type:
        from diffusers import WanPipeline

        return WanPipeline

    @staticmethod
    def _size_multiple(pipeline: Any) -> int:
        _, p_h, p_w = pipeline.transformer.config.patch_size
        return pipeline.vae_scale_factor_spatial * max(p_h, p_w)

    @property
    def latent_dtype(self) -> torch.dtype:
        return torch.float32  # flow-matching latents are integrated in float32

    # --- network ----------------------------------------------------------------------------
    def denoiser_output(self, model_in: torch.Tensor, t: int | torch.Tensor,
                        embeds: torch.Tensor) -> torch.Tensor:
        """The velocity v(z_t, t), float32."""
        timestep = torch.as_tensor(t, device=self.device).reshape(-1).expand(model_in.shape[0])
        return self.denoiser(hidden_states=model_in.to(self.dtype), timestep=timestep,
                             encoder_hidden_states=embeds, return_dict=False)[0].float()

    def attention_layers(self) -> list[str]:
        return [f"blocks.{i}.attn2" for i in range(len(self.denoiser.blocks))]

    def checkpoint_units(self) -> list[torch.nn.Module]:
        """A guidance pass with ``guidance_checkpointing`` checkpoints every transformer block."""
        return list(self.denoiser.blocks)

    def token_grid(self, latents: torch.Tensor) -> tuple[int, int, int]:
        p_t, p_h, p_w = self.denoiser.config.patch_size
        f, h, w = latents.shape[-3:]
        return f // p_t, h // p_h, w // p_w

    # --- VAE ------------------------------------------------------------------------------------
    def _latent_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.pipe.vae.config
        shape = (1, cfg.z_dim, 1, 1, 1)
        mean = torch.tensor(cfg.latents_mean, dtype=torch.float32, device=self.device).view(shape)
        std = torch.tensor(cfg.latents_std, dtype=torch.float32, device=self.device).view(shape)
        return mean, std

    def _normalise(self, mean: torch.Tensor) -> torch.Tensor:
        mu, std = self._latent_stats()
        return (mean - mu) / std

    def _denormalise(self, z: torch.Tensor) -> torch.Tensor:
        mu, std = self._latent_stats()
        return z * std + mu  # = WanPipeline's latents / (1 / std) + mean

    # --- inversion --------------------------------------------------------------------------------
    def _inversion_sampler(self, num_inference_steps: int) -> EulerFlowSampler:
        return EulerFlowSampler(flow_schedule(self.pipe.scheduler, num_inference_steps, self.device))

    @torch.no_grad()
    def invert(self, video: Video, prompt: str | PromptSpec, num_inference_steps: int | None = None,
               fixed_point_iters: int | None = None) -> InversionResult:
        """Reverse-Euler inversion along the sampler's sigmas (no CFG); replay runs forward Euler.

        ``fixed_point_iters`` > 0 re-evaluates each step's velocity at its new latent (one more
        forward each), approaching the exact inverse of the Euler replay.
        """
        n = num_inference_steps or self.num_inference_steps
        schedule = flow_schedule(self.pipe.scheduler, n, self.device)
        keys = check_unique_int_timesteps(schedule.timesteps)
        cond = self.encode_prompt(prompt)
        z0 = self.encode_video(video)
        iters = self.inversion_fixed_point_iters if fixed_point_iters is None else fixed_point_iters
        latents = euler_invert(lambda z, t: self.predict(z, t, cond), z0, schedule, iters)
        info = {"num_inference_steps": n, "method": "euler", "sigmas": schedule.sigmas, "fixed_point_iters": iters}
        return inversion_result(prompt, keys, latents, z0, video, info, self.latent_dtype)

    # --- tests ------------------------------------------------------------------------------------
    @classmethod
    def random(cls, seed: int = 0, num_layers: int = 2, **kwargs: Any) -> "WanGenerator":
        """A tiny random Wan (2 blocks, 2 heads of 12, UMT5 of width 32, a small Wan VAE): 5 frames
        of 32x48 px -> latent (16, 2, 4, 6) -> 2x2x3 video tokens, 16 text keys."""
        defaults = {"num_frames": 5, "height": 32, "width": 48, "num_inference_steps": 4, "device": "cpu",
                    "max_sequence_length": 16, "guidance_scale": 5.0}
        pipe = build_random_wan_pipeline(seed, num_layers)
        return cls(model=f"random-seed{seed}", pipeline=pipe, torch_dtype="float32", vae_dtype=None,
                   **{**defaults, **kwargs})


# The hub model's scheduler (Wan-AI/Wan2.1-T2V-1.3B-Diffusers/scheduler/scheduler_config.json)
WAN_SCHEDULER = {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0,
                 "num_train_timesteps": 1000, "solver_order": 2, "final_sigmas_type": "zero"}


def build_random_wan_pipeline(seed: int = 0, num_layers: int = 2) -> Any:
    """A tiny random ``WanPipeline`` (tests): every component from a config, no download."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = tiny_t5_tokenizer()
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ))
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=32, ffn_dim=32, num_layers=num_layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    )
    scheduler = UniPCMultistepScheduler(**WAN_SCHEDULER)
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                       scheduler=scheduler)
