"""`cogvideox`: CogVideoX text-to-video (diffusers ``CogVideoXPipeline``), v-prediction DDIM.

Network: ``CogVideoXTransformer3DModel``: every block runs ONE joint attention ``attn1`` over
the sequence [text tokens; video tokens] (no separate cross-attention), ``AutoencoderKLCogVideoX``
(8x spatial, 4x temporal), T5 text encoder padded to 226 tokens.

The cross-attention map of a block is the video-query x text-key block of that joint softmax:
``softmax([q_v k_text^T, q_v k_video^T] / sqrt(d))[:, :text]``, normalised over ALL keys, so over
the text keys it sums to the share of attention that goes to the text (< 1), and the full row
(text + video) sums to 1. :class:`CogVideoXJointAttentionCapture` computes it in chunks of
video queries (``attention_chunk_size``) under activation checkpointing, so neither the forward
nor the backward holds more than one chunk's scores per selected head; the layer's output still
comes from the fused SDPA over all heads (exactly the original processor's computation).

Inversion: DDIM on the pipeline's own schedule (``CogVideoXDDIMScheduler``: v-prediction,
zero terminal SNR, SNR shift), through the shared DDIM inversion of
:class:`~cvg_bench.generators.unet3d.UNet3DGenerator`.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from cvg_bench.generators.attention import attention_scale
from cvg_bench.generators.flow_matching import TokenGridCapture, TransformerT2VGenerator, tiny_t5_tokenizer
from cvg_bench.registry import register


class CogVideoXJointAttentionCapture(TokenGridCapture):
    """A ``CogVideoXAttnProcessor2_0`` twin that also returns the text block of the joint softmax
    for the selected heads and text tokens, ``(B, heads, tokens, frames', h', w')``."""

    def __init__(self, name: str, state: Any, heads: tuple[int, ...] | None, chunk_size: int = 1024) -> None:
        super().__init__(name, state, heads)
        if chunk_size < 1:
            raise ValueError(f"attention_chunk_size={chunk_size} must be >= 1")
        self.chunk_size = chunk_size

    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Any = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if attention_mask is not None:
            raise NotImplementedError(f"{self.name!r}: CogVideoX's joint attention takes no mask")
        text_len = encoder_hidden_states.size(1)
        hidden_states = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        batch, seq_len, _ = hidden_states.shape

        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (x.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if image_rotary_emb is not None:  # CogVideoX-5b: 3D RoPE on the video tokens only
            from diffusers.models.embeddings import apply_rotary_emb

            query[:, :, text_len:] = apply_rotary_emb(query[:, :, text_len:], image_rotary_emb)
            if not attn.is_cross_attention:
                key[:, :, text_len:] = apply_rotary_emb(key[:, :, text_len:], image_rotary_emb)

        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        self._capture_text_block(attn, query, key, text_len)

        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        out = attn.to_out[1](attn.to_out[0](out))
        encoder_out, out = out.split([text_len, seq_len - text_len], dim=1)
        self._maybe_exit()
        return out, encoder_out

    def _capture_text_block(self, attn: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, text_len: int) -> None:
        heads = self._heads(attn.heads)
        tokens = self._token_index(text_len)
        idx = torch.tensor(heads, device=query.device)
        q_video, k_all = query[:, idx, text_len:], key[:, idx]
        block = partial(_text_block, scale=attention_scale(attn, query), text_len=text_len, tokens=tokens)
        grad = torch.is_grad_enabled() and (q_video.requires_grad or k_all.requires_grad)
        parts = []
        for start in range(0, q_video.shape[2], self.chunk_size):
            chunk = q_video[:, :, start : start + self.chunk_size]
            # checkpointed: the backward recomputes the chunk's scores instead of storing them
            parts.append(checkpoint(block, chunk, k_all, use_reentrant=False) if grad else block(chunk, k_all))
        probs = torch.cat(parts, dim=2)  # (B, heads, video tokens, selected text tokens)
        self._record(self._to_maps(probs, probs.shape[2]), heads, text_len)


def _text_block(q: torch.Tensor, k: torch.Tensor, scale: float, text_len: int,
                tokens: list[int] | None) -> torch.Tensor:
    """Softmax over all (text + video) keys in float32, then the text columns (selected tokens)."""
    probs = (torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale).softmax(dim=-1)[..., :text_len]
    return probs if tokens is None else probs[..., tokens]


@register("generator", "cogvideox")
class CogVideoXGenerator(TransformerT2VGenerator):
    """CogVideoX T2V (diffusers CogVideoXPipeline; maps = video x text block of the joint attention)."""

    backend = "cogvideox"
    default_model = "THUDM/CogVideoX-2b"

    def __init__(
        self,
        model: str | None = None,
        path: str | None = None,
        torch_dtype: str = "float16",
        vae_dtype: str | None = None,
        variant: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        device: str = "cuda",
        num_frames: int = 49,
        height: int = 480,
        width: int = 720,
        num_inference_steps: int = 50,
        guidance_scale: float = 6.0,
        negative_prompt: str = "",
        max_sequence_length: int | None = None,
        attention_chunk_size: int = 1024,
        attention_early_exit: bool = True,
        inversion_fixed_point_iters: int = 0,
        guidance_checkpointing: bool = False,
        pipeline: Any = None,
    ) -> None:
        model = model or self.default_model
        if pipeline is None:
            pipeline = self._load(model, path, torch_dtype, variant, revision, local_files_only)
        if type(pipeline.scheduler).__name__ == "CogVideoXDPMScheduler":
            # CogVideoX-5B's default: a two-step-state solver the hooked loop does not drive; DDIM on
            # the same noise schedule (the 2B's sampler) replaces it
            from diffusers import CogVideoXDDIMScheduler

            pipeline.scheduler = CogVideoXDDIMScheduler.from_config(pipeline.scheduler.config)
        cfg = pipeline.transformer.config
        if getattr(cfg, "ofs_embed_dim", None):
            raise NotImplementedError("cogvideox supports the text-to-video checkpoints (no ofs embedding)")
        text_len = cfg.max_text_seq_length
        if max_sequence_length is None:
            max_sequence_length = text_len
        elif max_sequence_length != text_len and not cfg.use_rotary_positional_embeddings:
            raise ValueError(f"max_sequence_length={max_sequence_length}: this CogVideoX has positional embeddings "
                             f"for exactly {text_len} text tokens")
        if attention_chunk_size < 1:
            raise ValueError(f"attention_chunk_size={attention_chunk_size} must be >= 1")
        self.attention_chunk_size = attention_chunk_size
        super().__init__(
            pipeline, model=model, path=path, revision=revision, vae_dtype=vae_dtype,
            max_sequence_length=max_sequence_length, num_frames=num_frames, height=height, width=width,
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
            negative_prompt=negative_prompt, device=device, attention_early_exit=attention_early_exit,
            inversion_fixed_point_iters=inversion_fixed_point_iters,
            guidance_checkpointing=guidance_checkpointing,
        )
        p_t = cfg.patch_size_t
        if p_t is not None and self.latent_frames() % p_t:
            raise ValueError(f"num_frames={num_frames} gives {self.latent_frames()} latent frames; this CogVideoX "
                             f"(1.5) needs a multiple of patch_size_t={p_t}")

    @classmethod
    def pipeline_class(cls) -> type:
        from diffusers import CogVideoXPipeline

        return CogVideoXPipeline

    @staticmethod
    def _size_multiple(pipeline: Any) -> int:
        return pipeline.vae_scale_factor_spatial * pipeline.transformer.config.patch_size

    @property
    def capture_processor(self) -> Any:
        return partial(CogVideoXJointAttentionCapture, chunk_size=self.attention_chunk_size)

    # --- network ----------------------------------------------------------------------------
    def denoiser_output(self, model_in: torch.Tensor, t: int | torch.Tensor,
                        embeds: torch.Tensor) -> torch.Tensor:
        """The transformer's (v-)prediction for a latent ``(B, C, F, h, w)`` (same layout,
        float32, as CogVideoXPipeline hands it to the scheduler)."""
        timestep = torch.as_tensor(t, device=self.device).reshape(-1).expand(model_in.shape[0])
        hidden = model_in.permute(0, 2, 1, 3, 4)  # the transformer takes (B, F, C, h, w)
        hidden = self.pipe.scheduler.scale_model_input(hidden, timestep)
        out = self.denoiser(hidden_states=hidden.to(self.dtype), encoder_hidden_states=embeds,
                            timestep=timestep, image_rotary_emb=self._rotary(model_in),
                            return_dict=False)[0]
        return out.float().permute(0, 2, 1, 3, 4)

    def _rotary(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not self.denoiser.config.use_rotary_positional_embeddings:
            return None
        s = self.pipe.vae_scale_factor_spatial
        f, h, w = latents.shape[-3:]
        return self.pipe._prepare_rotary_positional_embeddings(h * s, w * s, f, self.device)

    def attention_layers(self) -> list[str]:
        return [f"transformer_blocks.{i}.attn1" for i in range(len(self.denoiser.transformer_blocks))]

    def checkpoint_units(self) -> list[torch.nn.Module]:
        """A guidance pass with ``guidance_checkpointing`` checkpoints every transformer block."""
        return list(self.denoiser.transformer_blocks)

    def token_grid(self, latents: torch.Tensor) -> tuple[int, int, int]:
        cfg = self.denoiser.config
        f, h, w = latents.shape[-3:]
        return f // (cfg.patch_size_t or 1), h // cfg.patch_size, w // cfg.patch_size

    # --- VAE ------------------------------------------------------------------------------------
    def _normalise(self, mean: torch.Tensor) -> torch.Tensor:
        return mean * self.pipe.vae_scaling_factor_image

    def _denormalise(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.pipe.vae_scaling_factor_image

    # --- inversion (DDIM, shared with UNet3D) -----------------------------------------------------
    def _ddim(self, num_inference_steps: int | None) -> Any:
        """A private ``CogVideoXDDIMScheduler`` on the model's schedule (SNR shift included)."""
        from diffusers import CogVideoXDDIMScheduler

        if not hasattr(self.pipe.scheduler, "alphas_cumprod"):
            raise NotImplementedError("DDIM inversion needs a DDPM-family scheduler, "
                                      f"got {type(self.pipe.scheduler).__name__}")
        sched = CogVideoXDDIMScheduler.from_config(self.pipe.scheduler.config)
        sched.set_timesteps(num_inference_steps or self.num_inference_steps, device=self.device)
        return sched

    # --- tests ------------------------------------------------------------------------------------
    @classmethod
    def random(cls, seed: int = 0, num_layers: int = 2, rotary: bool = False, **kwargs: Any) -> "CogVideoXGenerator":
        """A tiny random CogVideoX (2 blocks, 2 heads of 16, T5 of width 32, a small CogVideoX VAE):
        9 frames of 32x48 px -> latent (4, 3, 4, 6) -> 3x2x3 video tokens, 16 text keys."""
        defaults = {"num_frames": 9, "height": 32, "width": 48, "num_inference_steps": 4, "device": "cpu",
                    "guidance_scale": 6.0, "attention_chunk_size": 5}
        pipe = build_random_cogvideox_pipeline(seed, num_layers, rotary)
        return cls(model=f"random-seed{seed}", pipeline=pipe, torch_dtype="float32", **{**defaults, **kwargs})


# THUDM/CogVideoX-2b/scheduler/scheduler_config.json
COGVIDEOX_SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                       "clip_sample": False, "set_alpha_to_one": True, "steps_offset": 0,
                       "prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
                       "snr_shift_scale": 3.0, "timestep_spacing": "trailing", "num_train_timesteps": 1000}


def build_random_cogvideox_pipeline(seed: int = 0, num_layers: int = 2, rotary: bool = False) -> Any:
    """A tiny random ``CogVideoXPipeline`` (tests): every component from a config, no download.
    ``rotary``: 3D RoPE (CogVideoX-5b style) instead of sincos positional embeddings (2b)."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    tokenizer = tiny_t5_tokenizer()
    torch.manual_seed(seed)
    text_encoder = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ))
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
        layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4,
    )
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=8,
        text_embed_dim=32, num_layers=num_layers, sample_width=6, sample_height=4, sample_frames=9, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=16, use_rotary_positional_embeddings=rotary,
    )
    scheduler = CogVideoXDDIMScheduler(**COGVIDEOX_SCHEDULER)
    return CogVideoXPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                             scheduler=scheduler)
