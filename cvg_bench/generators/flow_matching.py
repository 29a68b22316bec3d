"""Shared pieces of the diffusion-transformer backends (``wan``, ``cogvideox``).

- :class:`FlowSchedule`, :class:`EulerFlowSampler`, :func:`euler_invert`: the Euler sampler
  of a flow-matching model on its scheduler's own sigmas, and its inversion (reverse Euler).
- :class:`TokenGridCapture`: capture-processor base whose maps come from a patchified token
  sequence ``(frames', h', w')`` rather than the UNet's frames-in-batch layout.
- :class:`TransformerT2VGenerator`: the generator base of both backends: loading from a hub id
  or local folder, text encoding at a fixed text length, a temporally compressed latent
  ``(1, C, F', h, w)``, 3D-VAE encode/decode, token-grid capture. Sampling, the per-step hook
  and replay come from :class:`~cvg_bench.generators.unet3d.UNet3DGenerator`.
- :func:`tiny_t5_tokenizer`: an offline T5/UMT5-style (Unigram) tokenizer for random test models.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch

from cvg_bench.generators.attention import CrossAttentionCapture
from cvg_bench.generators.base import InversionResult, as_prompt
from cvg_bench.generators.unet3d import (
    UNet3DGenerator,
    WeightsNotFoundError,
    load_t2v_pipeline,
    parse_dtype,
    tensor_to_video,
    video_to_tensor,
)
from cvg_bench.quiet import quiet_dependencies
from cvg_bench.types import PromptSpec, Video


# --- flow matching: Euler sampling and inversion ------------------------------------------------
@dataclass
class FlowSchedule:
    """A flow-matching sampler's grid: ``timesteps[i]`` (model input, denoising order) sits at
    noise level ``sigmas[i]``; ``sigmas`` has one more entry, the final 0 (clean)."""

    timesteps: torch.Tensor
    sigmas: list[float]

    def __post_init__(self) -> None:
        if len(self.sigmas) != len(self.timesteps) + 1:
            raise ValueError(f"{len(self.timesteps)} timesteps need {len(self.timesteps) + 1} sigmas, "
                             f"got {len(self.sigmas)}")


def flow_schedule(scheduler: Any, num_inference_steps: int, device: torch.device | str = "cpu") -> FlowSchedule:
    """The (timesteps, sigmas) a flow-matching scheduler (FlowMatchEuler, UniPC/DPM with flow
    sigmas) samples with for ``num_inference_steps`` (shift and all, as the scheduler sets them)."""
    scheduler.set_timesteps(num_inference_steps, device=device)
    timesteps = scheduler.timesteps.clone()
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is None or len(sigmas) != len(timesteps) + 1:
        n_train = scheduler.config.num_train_timesteps
        sigmas = torch.cat([timesteps.double().cpu() / n_train, torch.zeros(1, dtype=torch.float64)])
    return FlowSchedule(timesteps, [float(s) for s in sigmas])


class EulerFlowSampler:
    """Forward Euler on a :class:`FlowSchedule`: ``x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v(x_i, t_i)``.

    Scheduler-shaped (``timesteps``, ``step(...).prev_sample``) so the generator's denoising
    loop runs it; the step is found from the timestep's value, so it is stateless.
    """

    order = 1

    def __init__(self, schedule: FlowSchedule) -> None:
        self.schedule = schedule
        self.timesteps = schedule.timesteps
        self._index = {float(t): i for i, t in enumerate(schedule.timesteps)}

    def step(self, model_output: torch.Tensor, timestep: torch.Tensor | float, sample: torch.Tensor,
             **_: Any) -> SimpleNamespace:
        i = self._index[float(timestep)]
        dt = self.schedule.sigmas[i + 1] - self.schedule.sigmas[i]
        prev = (sample.float() + dt * model_output.float()).to(sample.dtype)
        return SimpleNamespace(prev_sample=prev)


def euler_invert(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    z0: torch.Tensor,
    schedule: FlowSchedule,
    fixed_point_iters: int = 0,
) -> list[torch.Tensor]:
    """Reverse Euler from the clean latent ``z0`` (sigma 0) to sigma_0 (float32).

    Step i goes from sigma_{i+1} up to sigma_i: ``x_i = x_{i+1} + (sigma_i - sigma_{i+1}) v``,
    with ``v = velocity(x, t_i)`` taken at the current latent and at the timestep t_i that the
    forward step from x_i uses (the flow analogue of DDIM inversion's "next timestep"
    prediction). ``fixed_point_iters`` > 0 re-evaluates ``v`` at the new latent, converging to
    the exact inverse of :class:`EulerFlowSampler`. Returns x_i for every i, denoising order.
    """
    sig = schedule.sigmas
    z = z0.float()
    out: list[torch.Tensor] = [z] * len(schedule.timesteps)
    for i in reversed(range(len(schedule.timesteps))):
        t, dt = schedule.timesteps[i], sig[i] - sig[i + 1]
        z_next = z + dt * velocity(z, t).float()
        for _ in range(fixed_point_iters):
            z_next = z + dt * velocity(z_next, t).float()
        z = z_next
        out[i] = z
    return out


# --- capture on a patchified token sequence -----------------------------------------------------
class TokenGridCapture(CrossAttentionCapture):
    """Capture base for transformers: video tokens are ``(frames', h', w')`` row-major, so the
    state's ``num_frames``/``latent_hw`` are that grid (frames' x h' x w' = video tokens)."""

    def _to_maps(self, probs: torch.Tensor, seq_len: int) -> torch.Tensor:
        """``(B, heads, video tokens, tokens)`` -> ``(B, heads, tokens, frames', h', w')``."""
        f, (h, w) = self.state.num_frames, self.state.latent_hw
        if f * h * w != seq_len:
            raise ValueError(f"layer {self.name!r}: {seq_len} video tokens do not fill the grid {f}x{h}x{w}")
        b, n_heads, _, n_tok = probs.shape
        return probs.reshape(b, n_heads, f, h, w, n_tok).permute(0, 1, 5, 2, 3, 4)


# --- the shared generator base -------------------------------------------------------------------
def load_pipeline(pipeline_cls: type, backend: str, model: str, path: str | None, torch_dtype: str,
                  variant: str | None, revision: str | None, local_files_only: bool) -> Any:
    """``pipeline_cls.from_pretrained(path or model)``; a miss raises :class:`WeightsNotFoundError`
    naming the model id and the config key (``path``) that points at a local copy."""
    quiet_dependencies()
    try:
        return load_t2v_pipeline(path or model, torch_dtype, variant, revision, local_files_only, backend,
                                 pipeline_cls=pipeline_cls, local_key="path")
    except WeightsNotFoundError as exc:
        if path:  # the message names the folder; say which model it should hold
            raise WeightsNotFoundError(f"{exc}\n(expected a saved {pipeline_cls.__name__} of model {model!r})") from exc
        raise


class TransformerT2VGenerator(UNet3DGenerator):
    """Base of the DiT text-to-video backends (subclasses: ``wan``, ``cogvideox``).

    ``num_frames`` counts pixel frames; the latent has ``(num_frames - 1) // t + 1`` frames for
    the VAE's temporal factor t, and captured maps have the patchified token grid's frames.
    """

    denoiser_attr = "transformer"
    backend = "transformer"
    default_model = ""
    capture_processor: Callable[..., Any] | None = None  # (name, state, heads) -> processor

    def __init__(
        self,
        pipeline: Any,
        model: str,
        path: str | None,
        revision: str | None,
        vae_dtype: str | None,
        max_sequence_length: int,
        **kwargs: Any,
    ) -> None:
        if vae_dtype:
            pipeline.vae.to(parse_dtype(vae_dtype))
        if max_sequence_length < 1:
            raise ValueError(f"max_sequence_length={max_sequence_length} must be >= 1")
        temporal, num_frames = pipeline.vae_scale_factor_temporal, kwargs["num_frames"]
        if num_frames < 1 or (num_frames - 1) % temporal:
            raise ValueError(f"num_frames={num_frames} must be 1 + a multiple of the VAE's temporal factor {temporal}")
        self.max_sequence_length = max_sequence_length
        # prompt_tokens pads to the tokenizer's length: make it the text length the model attends to
        pipeline.tokenizer.model_max_length = max_sequence_length
        source = path or model
        kwargs.setdefault("model_name", f"{self.backend}:{source}" + (f"@{revision}" if revision else ""))
        super().__init__(pipeline, **kwargs)

    @classmethod
    def pipeline_class(cls) -> type:
        """The diffusers pipeline class (imported on use: diffusers pipelines are slow to import)."""
        raise NotImplementedError

    @classmethod
    def _load(cls, model: str | None, path: str | None, torch_dtype: str, variant: str | None,
              revision: str | None, local_files_only: bool) -> Any:
        return load_pipeline(cls.pipeline_class(), cls.backend, model or cls.default_model, path, torch_dtype,
                             variant, revision, local_files_only)

    # --- text ----------------------------------------------------------------------------------
    def _encode_text(self, text: str) -> torch.Tensor:
        embeds, _ = self.pipe.encode_prompt(text, do_classifier_free_guidance=False,
                                            max_sequence_length=self.max_sequence_length, device=self.device)
        return embeds

    # --- latents ---------------------------------------------------------------------------------
    def latent_frames(self, num_frames: int | None = None) -> int:
        return ((num_frames or self.num_frames) - 1) // self.pipe.vae_scale_factor_temporal + 1

    def latent_shape(self, batch: int = 1) -> tuple[int, ...]:
        s = self.pipe.vae_scale_factor_spatial
        return (batch, self.denoiser.config.in_channels, self.latent_frames(), self.height // s, self.width // s)

    def token_grid(self, latents: torch.Tensor) -> tuple[int, int, int]:
        """(frames', h', w') of the patchified video tokens of a latent ``(B, C, F, h, w)``."""
        raise NotImplementedError

    def _normalise(self, mean: torch.Tensor) -> torch.Tensor:
        """VAE posterior mean -> the model's latent (scaling/shift)."""
        raise NotImplementedError

    def _denormalise(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def encode_video(self, video: Video) -> torch.Tensor:
        """uint8 ``(F, H, W, 3)`` -> clean latent ``(1, C, F', h, w)`` (3D VAE mean, normalised)."""
        vae = self.pipe.vae
        x = video_to_tensor(video).permute(1, 0, 2, 3).unsqueeze(0).to(self.device, vae.dtype)
        return self._normalise(vae.encode(x).latent_dist.mode().float()).to(self.latent_dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> Video:
        vae = self.pipe.vae
        frames = vae.decode(self._denormalise(latents.float()).to(vae.dtype)).sample  # (1, 3, F, H, W)
        return tensor_to_video(frames[0].permute(1, 0, 2, 3))

    # --- attention -----------------------------------------------------------------------------
    def _capture_kwargs(self, latents: torch.Tensor) -> dict[str, Any]:
        if self.capture_processor is None:
            raise NotImplementedError(f"{type(self).__name__} sets no capture_processor")
        f, h, w = self.token_grid(latents)
        return {"num_frames": f, "latent_hw": (h, w), "available": self.attention_layers(),
                "processor_factory": self.capture_processor}


# --- offline tokenizer for random test models -----------------------------------------------------
TINY_WORDS = ("a", "an", "the", "red", "green", "blue", "circle", "square", "triangle", "on", "left",
              "right", "of", "to", "above", "below", "and", "moves", "ball", "cat", "dog")


def tiny_t5_tokenizer(words: tuple[str, ...] = TINY_WORDS) -> Any:
    """A small Unigram (SentencePiece-style) T5 tokenizer built in memory: pad=0, </s>=1,
    unk=2; whole-word pieces for ``words`` and single letters for everything else, so a word
    spans one or several tokens. Fast (offsets mapping), no download."""
    import string

    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(f"\u2581{w}", -1.0) for w in words]
    vocab += [(c, -4.0) for c in string.ascii_lowercase + string.digits]
    vocab += [(f"\u2581{c}", -3.0) for c in string.ascii_lowercase if c not in words]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def check_unique_int_timesteps(timesteps: torch.Tensor) -> list[int]:
    """``int(t)`` keys of a trajectory; two steps inside one integer would collide."""
    keys = [int(t) for t in timesteps]
    if len(set(keys)) != len(keys):
        raise ValueError(f"the sampler's timesteps {timesteps.tolist()} collide as integers; use fewer steps")
    return keys


def inversion_result(prompt: str | PromptSpec, timesteps: list[int], latents: list[torch.Tensor],
                     z0: torch.Tensor, video: Video, info: dict[str, Any], dtype: torch.dtype) -> InversionResult:
    return InversionResult(
        prompt=as_prompt(prompt), timesteps=tuple(timesteps),
        trajectory={t: z.to(dtype) for t, z in zip(timesteps, latents)}, z0=z0, video=np.asarray(video), info=info,
    )
