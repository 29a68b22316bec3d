"""The shared backend of every UNet3D text-to-video model (tiny, ModelScope, ZeroScope).

It wraps a diffusers ``TextToVideoSDPipeline`` (its text encoder, tokenizer, UNet, VAE and
scheduler) and re-runs the pipeline's denoising loop with a hook before every step, since
the pipeline's own ``callback`` can only observe the latents, not replace them.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor

from cvg_bench.generators.attention import activation_checkpointing, cross_attention_layers, run_capture
from cvg_bench.generators.base import (
    AttentionMaps,
    AttentionSelection,
    GenerationOutput,
    Generator,
    InversionResult,
    PromptTokens,
    ReplayResult,
    StepContext,
    StepHook,
    as_prompt,
)
from cvg_bench.generators.tokens import prompt_tokens
from cvg_bench.quiet import dtype_kwarg, quiet_dependencies
from cvg_bench.types import PromptSpec, Video

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ValueError(f"torch_dtype={name!r} is not supported; accepted: {', '.join(DTYPES)}")
    return DTYPES[name]


def import_t2v_pipeline() -> type:
    """``TextToVideoSDPipeline`` (deprecated in diffusers, still importable from there)."""
    import warnings

    quiet_dependencies()  # its deprecation notice: see cvg_bench/quiet.py
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from diffusers.pipelines.deprecated.text_to_video_synthesis import TextToVideoSDPipeline
        except ImportError:  # older diffusers kept it in the main namespace
            from diffusers import TextToVideoSDPipeline
    return TextToVideoSDPipeline


def video_to_tensor(video: Video) -> torch.Tensor:
    """uint8 ``(F, H, W, 3)`` -> float ``(F, 3, H, W)`` in [-1, 1]."""
    video = np.asarray(video)
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"expected a uint8 video of shape (frames, H, W, 3), got {video.dtype} {video.shape}")
    return torch.from_numpy(video).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def tensor_to_video(x: torch.Tensor) -> Video:
    """float ``(F, 3, H, W)`` in [-1, 1] -> uint8 ``(F, H, W, 3)``."""
    x = ((x.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255)
    return x.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def folder_fingerprint(path: Path, content_limit: int = 64 << 20) -> str:
    """A short hash of a weights folder: file contents when small, names and sizes otherwise."""
    files = sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256()
    total = sum(p.stat().st_size for p in files)
    for p in files:
        h.update(str(p.relative_to(path)).encode())
        h.update(p.read_bytes() if total <= content_limit else str(p.stat().st_size).encode())
    return h.hexdigest()[:12]


class UNet3DGenerator(Generator):
    """A ``TextToVideoSDPipeline`` with a per-step hook, attention capture and DDIM inversion.

    Transformer backends (``wan``, ``cogvideox``) subclass it for the shared loop, hook and
    replay: they set ``denoiser_attr`` and override the model-specific methods.
    """

    denoiser_attr = "unet"  # the pipeline attribute holding the denoising network

    def __init__(
        self,
        pipeline: Any,
        num_frames: int = 16,
        height: int = 256,
        width: int = 256,
        num_inference_steps: int = 25,
        guidance_scale: float = 9.0,
        negative_prompt: str = "",
        eta: float = 0.0,
        device: str = "cpu",
        attention_early_exit: bool = True,
        decode_chunk: int = 8,
        inversion_fixed_point_iters: int = 0,
        model_name: str = "unet3d",
        guidance_checkpointing: bool = False,
    ) -> None:
        if num_frames < 1 or num_inference_steps < 1:
            raise ValueError(f"num_frames={num_frames} and num_inference_steps={num_inference_steps} must be >= 1")
        scale = self._size_multiple(pipeline)
        if height % scale or width % scale:
            raise ValueError(f"height={height}, width={width} must be multiples of the VAE scale factor {scale}")
        self.pipe = pipeline.to(device)
        for module in (self.denoiser, self.pipe.text_encoder, self.pipe.vae):
            module.requires_grad_(False)  # frozen: gradients flow to z_t only
            module.eval()
        self.pipe.set_progress_bar_config(disable=True)
        self.num_frames, self.height, self.width = num_frames, height, width
        self.num_inference_steps, self.guidance_scale = num_inference_steps, guidance_scale
        self.negative_prompt, self.eta = negative_prompt, eta
        self.device = torch.device(device)
        self.attention_early_exit = attention_early_exit
        self.decode_chunk = decode_chunk
        self.inversion_fixed_point_iters = inversion_fixed_point_iters
        self.model_name = model_name
        self.guidance_checkpointing = bool(guidance_checkpointing)
        self._embeds: OrderedDict[str, torch.Tensor] = OrderedDict()

    # --- identity -------------------------------------------------------------------------
    @staticmethod
    def _size_multiple(pipeline: Any) -> int:
        """Height and width must be multiples of this (the VAE's spatial factor here)."""
        return pipeline.vae_scale_factor

    @property
    def denoiser(self) -> torch.nn.Module:
        return getattr(self.pipe, self.denoiser_attr)

    @property
    def unet(self) -> torch.nn.Module:
        return self.denoiser

    @property
    def dtype(self) -> torch.dtype:
        return self.denoiser.dtype

    @property
    def latent_dtype(self) -> torch.dtype:
        """The dtype z_t is kept in between steps (the model's, as the pipeline does)."""
        return self.dtype

    def version(self) -> str:
        return self.model_name

    # --- text -------------------------------------------------------------------------------
    def encode_prompt(self, prompt: str | PromptSpec) -> torch.Tensor:
        """Text-encoder states ``(1, keys, dim)`` of a prompt (cached; no gradient)."""
        text = as_prompt(prompt)
        if text not in self._embeds:
            with torch.no_grad():
                embeds = self._encode_text(text)
            self._embeds[text] = embeds.to(self.dtype)
            if len(self._embeds) > 256:
                self._embeds.popitem(last=False)
        self._embeds.move_to_end(text)
        return self._embeds[text]

    def _encode_text(self, text: str) -> torch.Tensor:
        return self.pipe.encode_prompt(text, self.device, 1, False)[0]

    def prompt_tokens(self, spec: PromptSpec) -> PromptTokens:
        return prompt_tokens(self.pipe.tokenizer, spec)

    # --- latents <-> video -----------------------------------------------------------------
    def latent_shape(self, batch: int = 1) -> tuple[int, ...]:
        s = self.pipe.vae_scale_factor
        return (batch, self.pipe.unet.config.in_channels, self.num_frames, self.height // s, self.width // s)

    def initial_latents(self, seed: int) -> torch.Tensor:
        """Seeded z_T, drawn on the CPU so a seed means the same noise on every device."""
        gen = torch.Generator("cpu").manual_seed(int(seed))
        z = randn_tensor(self.latent_shape(), generator=gen, device=torch.device("cpu"), dtype=torch.float32)
        sigma = getattr(self.pipe.scheduler, "init_noise_sigma", 1.0)  # flow-matching schedulers: 1
        return (z * sigma).to(self.device, self.latent_dtype)

    @torch.no_grad()
    def encode_video(self, video: Video) -> torch.Tensor:
        """uint8 ``(F, H, W, 3)`` -> clean latent z_0 ``(1, C, F, h, w)`` (VAE mean, scaled)."""
        x = video_to_tensor(video).to(self.device, self.dtype)
        vae = self.pipe.vae
        parts = [vae.encode(x[i : i + self.decode_chunk]).latent_dist.mode() for i in range(0, len(x), self.decode_chunk)]
        z = torch.cat(parts) * vae.config.scaling_factor
        return z.permute(1, 0, 2, 3).unsqueeze(0)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> Video:
        """Latent ``(1, C, F, h, w)`` -> uint8 video ``(F, H, W, 3)`` (decoded in frame chunks)."""
        vae = self.pipe.vae
        z = latents[0].permute(1, 0, 2, 3) / vae.config.scaling_factor
        frames = [vae.decode(z[i : i + self.decode_chunk].to(vae.dtype)).sample for i in range(0, len(z), self.decode_chunk)]
        return tensor_to_video(torch.cat(frames))

    # --- denoising ------------------------------------------------------------------------
    def timesteps(self, num_inference_steps: int | None = None) -> list[int]:
        self.pipe.scheduler.set_timesteps(num_inference_steps or self.num_inference_steps, device=self.device)
        return [int(t) for t in self.pipe.scheduler.timesteps]

    def predict(self, latents: torch.Tensor, t: int | torch.Tensor, cond: torch.Tensor,
                uncond: torch.Tensor | None = None, guidance_scale: float = 1.0) -> torch.Tensor:
        """The denoiser's output at ``t``, with classifier-free guidance when
        ``guidance_scale > 1`` (the unconditional and text branches in one batch)."""
        use_cfg = uncond is not None and guidance_scale > 1.0
        model_in = torch.cat([latents, latents]) if use_cfg else latents
        embeds = torch.cat([uncond, cond]) if use_cfg else cond
        embeds = embeds.expand(model_in.shape[0], -1, -1) if embeds.shape[0] == 1 else embeds
        out = self.denoiser_output(model_in, t, embeds)
        if use_cfg:
            out_uncond, out_text = out.chunk(2)
            out = out_uncond + guidance_scale * (out_text - out_uncond)
        return out

    def denoiser_output(self, model_in: torch.Tensor, t: int | torch.Tensor,
                        embeds: torch.Tensor) -> torch.Tensor:
        """One batched call of the network (no guidance): the UNet's noise/v prediction."""
        model_in = self.pipe.scheduler.scale_model_input(model_in, t)
        return self.pipe.unet(model_in, t, encoder_hidden_states=embeds, return_dict=False)[0]

    def _denoise(
        self,
        latents: torch.Tensor,
        scheduler: Any,
        cond: torch.Tensor,
        uncond: torch.Tensor | None,
        guidance_scale: float,
        spec: PromptSpec | None = None,
        hook: StepHook | None = None,
        record: dict[int, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, float]:
        """The pipeline's loop, with ``hook`` replacing z_t before each step's prediction."""
        timesteps = list(scheduler.timesteps)
        tokens = self.prompt_tokens(spec) if hook is not None and spec is not None else None
        hook_s = 0.0
        for i, t in enumerate(timesteps):
            if hook is not None:
                ctx = StepContext(
                    step_index=i, num_steps=len(timesteps), timestep=t, latents=latents, spec=spec,
                    run_attention=self._runner(t, cond), tokens=tokens,
                    extra={"generator": self, "guidance_scale": guidance_scale},
                )
                t0 = time.perf_counter()
                latents = hook(ctx).detach().to(self.latent_dtype)
                hook_s += time.perf_counter() - t0
            if record is not None:
                record[int(t)] = latents.detach().clone()
            with torch.no_grad():
                out = self.predict(latents, t, cond, uncond, guidance_scale)
                extra = {"eta": self.eta} if isinstance(scheduler, DDIMScheduler) else {}
                latents = scheduler.step(out, t, latents, **extra).prev_sample
        return latents, hook_s

    def sample(self, spec: PromptSpec, seed: int, hook: StepHook | None = None) -> GenerationOutput:
        t0 = time.perf_counter()
        cond = self.encode_prompt(spec.prompt)
        uncond = self.encode_prompt(self.negative_prompt) if self.guidance_scale > 1.0 else None
        self.timesteps()
        latents = self.initial_latents(seed)
        latents, hook_s = self._denoise(latents, self.pipe.scheduler, cond, uncond, self.guidance_scale, spec, hook)
        video = self.decode(latents)
        info = {"seconds": time.perf_counter() - t0, "num_inference_steps": self.num_inference_steps,
                "guidance_scale": self.guidance_scale}
        return GenerationOutput(video=video, guidance_seconds=hook_s, info=info)

    # --- attention ------------------------------------------------------------------------
    def attention_layers(self) -> list[str]:
        return cross_attention_layers(self.pipe.unet)

    def _runner(self, t: int | torch.Tensor, cond: torch.Tensor):
        """``run_attention`` of one step: the model sees the sampler's exact timestep ``t``."""

        def run_attention(latents: torch.Tensor, selection: AttentionSelection | None = None) -> AttentionMaps:
            return self._capture(latents, t, cond, selection or AttentionSelection(), self.attention_early_exit)

        return run_attention

    def capture(
        self,
        latents: torch.Tensor,
        timestep: int | torch.Tensor,
        prompt: str | PromptSpec,
        selection: AttentionSelection | None = None,
        early_exit: bool | None = None,
    ) -> AttentionMaps:
        early = self.attention_early_exit if early_exit is None else early_exit
        return self._capture(latents, int(timestep), self.encode_prompt(prompt), selection or AttentionSelection(), early)

    def checkpoint_units(self) -> list[torch.nn.Module]:
        """The modules a guidance pass checkpoints when ``guidance_checkpointing`` is on: every
        resnet, temporal conv and (spatial or temporal) transformer of the UNet's blocks."""
        unet, units = self.denoiser, []
        for block in [*unet.down_blocks, unet.mid_block, *unet.up_blocks]:
            for group in ("resnets", "temp_convs", "attentions", "temp_attentions"):
                units.extend(getattr(block, group, None) or [])
        return units

    def _capture_kwargs(self, latents: torch.Tensor) -> dict[str, Any]:
        """How ``run_capture`` maps this model's attention: layers, processors, token grid."""
        return {"num_frames": latents.shape[2], "latent_hw": tuple(latents.shape[-2:])}

    def _capture(self, latents: torch.Tensor, t: int | torch.Tensor, cond: torch.Tensor,
                 selection: AttentionSelection, early_exit: bool) -> AttentionMaps:
        if latents.ndim != 5 or latents.shape[0] != 1:
            raise ValueError(f"capture takes one latent (1, C, F, h, w), got shape {tuple(latents.shape)}")
        latents = latents.to(self.device)
        t_in = torch.as_tensor(t, device=self.device)

        def forward() -> None:
            self.predict(latents.to(self.dtype), t_in, cond)

        with torch.enable_grad(), activation_checkpointing(self.checkpoint_units(), self.guidance_checkpointing):
            (maps,) = run_capture(
                self.denoiser, forward, selection, early_exit=early_exit, timestep=int(t),
                **self._capture_kwargs(latents),
            )
        self.last_capture_stats = maps.stats
        return maps

    # --- inversion --------------------------------------------------------------------------
    def _ddim(self, num_inference_steps: int | None) -> DDIMScheduler:
        """A private DDIM scheduler on the model's noise schedule (inversion needs its alphas)."""
        config = dict(self.pipe.scheduler.config)
        if not hasattr(self.pipe.scheduler, "alphas_cumprod"):
            raise NotImplementedError(f"DDIM inversion needs a DDPM-family scheduler, got {type(self.pipe.scheduler).__name__}")
        sched = DDIMScheduler.from_config(config)
        sched.set_timesteps(num_inference_steps or self.num_inference_steps, device=self.device)
        return sched

    @staticmethod
    def _to_eps(out: torch.Tensor, z: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str) -> torch.Tensor:
        a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        if prediction_type == "epsilon":
            return out
        if prediction_type == "v_prediction":
            return a * out + s * z
        if prediction_type == "sample":
            return (z - a * out) / s
        raise ValueError(f"prediction_type={prediction_type!r}; accepted: epsilon, v_prediction, sample")

    @torch.no_grad()
    def invert(self, video: Video, prompt: str | PromptSpec, num_inference_steps: int | None = None,
               fixed_point_iters: int | None = None) -> InversionResult:
        """DDIM inversion: z_0 -> z_T along the sampler's timesteps (no CFG, as is standard).

        Each step predicts the noise at the *next* (noisier) timestep from the current latent
        (the usual approximation of the implicit DDIM step) and moves along the DDIM line;
        ``fixed_point_iters`` > 0 refines it by re-predicting at the new latent (each costs one
        more forward per step, and brings replay closer to exact).
        """
        sched = self._ddim(num_inference_steps)
        timesteps = [int(t) for t in sched.timesteps]
        cond = self.encode_prompt(prompt)
        z0 = self.encode_video(video)
        ac = sched.alphas_cumprod.to(self.device, torch.float32)
        a_cur = torch.as_tensor(sched.final_alpha_cumprod, dtype=torch.float32, device=self.device)
        z = z0.float()
        trajectory: dict[int, torch.Tensor] = {}
        kind = sched.config.prediction_type
        iters = self.inversion_fixed_point_iters if fixed_point_iters is None else fixed_point_iters
        for t in reversed(timesteps):
            a_next, t_in = ac[t], torch.tensor(t, device=self.device)

            def eps_at(zq: torch.Tensor) -> torch.Tensor:
                return self._to_eps(self.predict(zq.to(self.dtype), t_in, cond).float(), zq, a_next, kind)

            def step(eps: torch.Tensor) -> torch.Tensor:
                x0 = (z - (1 - a_cur).sqrt() * eps) / a_cur.sqrt()
                return a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps

            z_next = step(eps_at(z))
            for _ in range(iters):  # solve the implicit DDIM step: eps taken at z_next itself
                z_next = step(eps_at(z_next))
            z = z_next
            trajectory[t] = z.to(self.dtype)
            a_cur = a_next
        ordered = {t: trajectory[t] for t in timesteps}
        return InversionResult(
            prompt=as_prompt(prompt), timesteps=tuple(timesteps), trajectory=ordered, z0=z0,
            video=np.asarray(video), info={"num_inference_steps": len(timesteps), "method": "ddim"},
        )

    def _inversion_sampler(self, num_inference_steps: int) -> Any:
        """The deterministic sampler that ``replay`` runs (the mirror of ``invert``)."""
        return self._ddim(num_inference_steps)

    def replay(self, inversion: InversionResult, guidance_scale: float = 1.0) -> ReplayResult:
        sched = self._inversion_sampler(len(inversion.timesteps))
        if [int(t) for t in sched.timesteps] != list(inversion.timesteps):
            raise ValueError("the inversion's timesteps do not match this generator's inversion schedule")
        cond = self.encode_prompt(inversion.prompt)
        uncond = self.encode_prompt(self.negative_prompt) if guidance_scale > 1.0 else None
        record: dict[int, torch.Tensor] = {}
        z, _ = self._denoise(inversion.z_T.clone().to(self.latent_dtype), sched, cond, uncond, guidance_scale,
                             record=record)
        video = self.decode(z)
        if video.shape != inversion.video.shape:
            raise ValueError(f"the replayed video has shape {video.shape}, the inverted one {inversion.video.shape}: "
                             "this frame count does not survive the VAE round trip")
        mse = float(np.mean((video.astype(np.float64) / 255 - inversion.video.astype(np.float64) / 255) ** 2))
        return ReplayResult(
            video=video, trajectory=record, mse=mse, psnr=10 * math.log10(1.0 / max(mse, 1e-12)),
            latent_mse=float(torch.mean((z.float() - inversion.z0.float()) ** 2)),
        )


# --- pretrained UNet3D models (ModelScope, ZeroScope) ----------------------------------------
class WeightsNotFoundError(FileNotFoundError):
    """A generator's weights are neither at the given path nor in the local model cache."""


def load_t2v_pipeline(
    model: str,
    torch_dtype: str = "float16",
    variant: str | None = None,
    revision: str | None = None,
    local_files_only: bool = False,
    backend: str = "zeroscope",
    pipeline_cls: type | None = None,
    local_key: str = "model",
) -> Any:
    """``TextToVideoSDPipeline.from_pretrained`` (or ``pipeline_cls``) of a hub id or local
    folder, with an error that names the model and the config key (``local_key``) to point at
    a local copy."""
    pipeline_cls = pipeline_cls or import_t2v_pipeline()
    kwargs: dict[str, Any] = {**dtype_kwarg(parse_dtype(torch_dtype)), "local_files_only": local_files_only}
    if variant:
        kwargs["variant"] = variant
    if revision:
        kwargs["revision"] = revision
    looks_local = model.startswith((".", "/", "~")) or Path(model).expanduser().exists()
    if looks_local and not (Path(model).expanduser() / "model_index.json").is_file():
        raise WeightsNotFoundError(
            f"{backend} weights not found: {model!r} is not a saved pipeline folder (no model_index.json). "
            f"Set `{local_key}` in configs/generator/{backend}.yaml (or generator.{local_key}=...) to a local copy."
        )
    try:
        return pipeline_cls.from_pretrained(str(Path(model).expanduser()) if looks_local else model, **kwargs)
    except (OSError, ValueError) as exc:
        raise WeightsNotFoundError(
            f"{backend} weights for model {model!r} could not be loaded "
            f"(local_files_only={local_files_only}): {type(exc).__name__}: {exc}\n"
            f"Download them where there is internet (`huggingface-cli download {model}`) or point "
            f"`{local_key}` in configs/generator/{backend}.yaml (generator.{local_key}=/path/to/folder) at a local copy."
        ) from exc


def tiny_clip_tokenizer(model_max_length: int = 77) -> Any:
    """A CLIP tokenizer over a character-level BPE vocabulary with a few whole words, so words
    span 1..n tokens; built in memory (no download)."""
    import string

    from transformers import CLIPTokenizer

    letters = list(string.ascii_lowercase)
    vocab = {tok: i for i, tok in enumerate(letters + [c + "</w>" for c in letters])}
    merges = [("r", "e"), ("re", "d</w>"), ("o", "n</w>"), ("t", "o</w>")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def build_random_t2v_pipeline(seed: int = 0, scheduler_config: dict[str, Any] | None = None) -> Any:
    """A tiny random ModelScope-shaped pipeline (UNet3D + CLIP text model + AutoencoderKL),
    for tests: no weights, every component built from a config."""
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    vocab = tokenizer.get_vocab()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, projection_dim=32,
    ))
    unet = UNet3DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8,
        sample_size=16,
    )
    # ModelScope's scheduler settings (scaled-linear betas, epsilon prediction)
    sched_cfg = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "clip_sample": False,
                 "set_alpha_to_one": False, "steps_offset": 1, "prediction_type": "epsilon"}
    scheduler = DDIMScheduler(**{**sched_cfg, **(scheduler_config or {})})
    return import_t2v_pipeline()(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)


class PretrainedUNet3DGenerator(UNet3DGenerator):
    """A hub/local ``TextToVideoSDPipeline`` checkpoint (subclasses set the defaults)."""

    backend = "unet3d"
    default_model = ""

    def __init__(
        self,
        model: str | None = None,
        torch_dtype: str = "float16",
        variant: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        pipeline: Any = None,
        **kwargs: Any,
    ) -> None:
        model = model or self.default_model
        if pipeline is None:
            pipeline = load_t2v_pipeline(model, torch_dtype, variant, revision, local_files_only, self.backend)
        kwargs.setdefault("model_name", f"{self.backend}:{model}" + (f"@{revision}" if revision else ""))
        super().__init__(pipeline, **kwargs)

    @classmethod
    def random(cls, seed: int = 0, **kwargs: Any) -> "PretrainedUNet3DGenerator":
        """A tiny random stand-in of this backend (tests): 16x16 video, 4-channel latents at 8x8."""
        defaults = {"num_frames": 4, "height": 16, "width": 16, "num_inference_steps": 4, "device": "cpu"}
        pipe = build_random_t2v_pipeline(seed)
        return cls(model=f"random-seed{seed}", pipeline=pipe, torch_dtype="float32", **{**defaults, **kwargs})
