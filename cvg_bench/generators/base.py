"""The generator interface every guidance method and CVG's training stand on.

Shapes used throughout (documented once here):

- latents ``z_t``: ``(batch, channels, frames, h, w)`` (diffusers' video latent layout).
- captured cross-attention maps, one tensor per layer: ``(heads, tokens, frames, h, w)``
  where ``h, w`` is that layer's spatial resolution. Each map is a softmax over ALL text keys
  of the layer (padding included, exactly as the model attends), so summed over the full key
  set it is 1 at every (head, frame, pixel); a selection of tokens sums to at most 1.
  The maps are differentiable with respect to the latents the pass ran on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import torch

from cvg_bench.types import PromptSpec, Video


@dataclass(frozen=True)
class AttentionSelection:
    """Which cross-attention maps to capture: layers L, heads H and text tokens.

    ``layers``: cross-attention layer names (see ``Generator.attention_layers()``) or indices
    into that list (negative allowed); ``None`` = every cross-attention layer.
    ``heads``: head indices, applied to every selected layer; ``None`` = all heads.
    ``tokens``: indices into the text sequence (e.g. ``PromptTokens.key_tokens``);
    ``None`` = every text key. The softmax always runs over all keys before this selection.
    """

    layers: tuple[str | int, ...] | None = None
    heads: tuple[int, ...] | None = None
    tokens: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        # accept lists (e.g. from omegaconf) but store tuples so selections stay hashable
        for name in ("layers", "heads", "tokens"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, (str, int)):
                    value = (value,)
                object.__setattr__(self, name, tuple(value))


@dataclass
class AttentionMaps:
    """Cross-attention maps captured in one pass of the generator on one latent.

    ``maps[layer]``: ``(heads, tokens, frames, h, w)``, differentiable. ``heads`` and
    ``tokens`` say which head and text-token index each slot holds. ``stats`` counts the
    attention calls that took the explicit (map-computing) path vs the fused SDPA path and
    whether the pass stopped early after the deepest selected layer.
    """

    maps: dict[str, torch.Tensor]
    heads: dict[str, tuple[int, ...]]
    tokens: tuple[int, ...]
    num_text_keys: int
    timestep: int | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        return list(self.maps)

    def __getitem__(self, layer: str) -> torch.Tensor:
        return self.maps[layer]

    def stacked(self, size: tuple[int, int] | None = None) -> torch.Tensor:
        """All layers as one tensor ``(layers, heads, tokens, frames, h, w)``.

        Layers of other resolutions are resized (bilinear) to ``size`` (default: the largest
        layer's); every layer must have the same number of selected heads.
        """
        if not self.maps:
            raise ValueError("no maps were captured")
        tensors = list(self.maps.values())
        if size is None:
            size = max((tuple(m.shape[-2:]) for m in tensors), key=lambda s: s[0] * s[1])
        out = []
        for m in tensors:
            if tuple(m.shape[-2:]) != tuple(size):
                h, k, f = m.shape[:3]
                m = torch.nn.functional.interpolate(
                    m.reshape(h * k * f, 1, *m.shape[-2:]), size=size, mode="bilinear", align_corners=False
                ).reshape(h, k, f, *size)
            out.append(m)
        n_heads = {m.shape[0] for m in out}
        if len(n_heads) != 1:
            raise ValueError(f"layers have different numbers of selected heads {sorted(n_heads)}; select heads")
        return torch.stack(out)


@dataclass(frozen=True)
class PromptTokens:
    """A prompt's text tokens and the token indices of its words.

    Indices point into the text sequence the cross-attention attends to (length
    ``num_text_keys``, specials and padding included). ``entity_tokens[i]`` are the tokens of
    ``spec.entities[i].word_spans``; ``key_tokens`` is K(p), their sorted union;
    ``relation_tokens`` are the tokens of ``spec.relation_spans`` (withheld from K(p)).
    """

    prompt: str
    input_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    entity_tokens: tuple[tuple[int, ...], ...]
    relation_tokens: tuple[int, ...]
    num_text_keys: int

    @property
    def key_tokens(self) -> tuple[int, ...]:
        return tuple(sorted({i for ent in self.entity_tokens for i in ent}))


@dataclass
class InversionResult:
    """The inverted trajectory of one video under one prompt.

    ``timesteps`` are the sampler's timesteps in denoising order (high noise first);
    ``trajectory[t]`` is z_t ``(1, C, F, h, w)`` for every such t, plus ``z0`` the clean
    latent of the video. ``z_T`` is the start of the replay.
    """

    prompt: str
    timesteps: tuple[int, ...]
    trajectory: dict[int, torch.Tensor]
    z0: torch.Tensor
    video: Video
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def z_T(self) -> torch.Tensor:
        return self.trajectory[self.timesteps[0]]

    def latent_at(self, t: int) -> torch.Tensor:
        if int(t) not in self.trajectory:
            raise KeyError(f"timestep {t} is not on this trajectory; its timesteps are {list(self.timesteps)}")
        return self.trajectory[int(t)]


@dataclass
class ReplayResult:
    """Denoising from an inverted z_T back to a video, and how close it came to the input.

    ``trajectory[t]`` is the z_t the sampler saw at step t on the way back; ``mse`` and
    ``psnr`` compare the replayed video with the inverted one (pixels scaled to [0, 1]);
    ``latent_mse`` compares the final latent with the video's clean latent.
    """

    video: Video
    trajectory: dict[int, torch.Tensor]
    mse: float
    psnr: float
    latent_mse: float


@dataclass
class StepContext:
    """What a guidance hook sees at one denoising step.

    ``run_attention(latents, selection=None)`` runs the generator on ``latents`` at this step
    (with gradients) and returns the captured cross-attention maps (:class:`AttentionMaps`);
    methods differentiate through it. ``tokens`` are the prompt's token indices (K(p)).
    """

    step_index: int
    num_steps: int
    timestep: torch.Tensor
    latents: torch.Tensor
    spec: PromptSpec
    run_attention: Callable[..., Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    tokens: PromptTokens | None = None


class StepHook(Protocol):
    def __call__(self, ctx: StepContext) -> torch.Tensor:
        """Return the (possibly updated) latents z_t'."""


@dataclass
class GenerationOutput:
    video: Video  # uint8 (frames, H, W, 3)
    guidance_seconds: float = 0.0  # time spent inside hooks
    info: dict[str, Any] = field(default_factory=dict)


class Generator(ABC):
    """A text-to-video model. ``sample`` must be bit-reproducible from ``seed`` on CPU.

    Backends that expose their internals (every diffusers backend) also implement the
    methods below; the defaults raise so a plumbing-only generator stays valid.
    """

    def version(self) -> str:
        """Model identity recorded with every sample (model id, weights hash...)."""
        return type(self).__name__

    @abstractmethod
    def sample(self, spec: PromptSpec, seed: int, hook: StepHook | None = None) -> GenerationOutput:
        """Generate one video for ``spec.prompt``; call ``hook`` at every denoising step."""

    # --- internals for guidance and CVG training (optional) -------------------------------
    def prompt_tokens(self, spec: PromptSpec) -> PromptTokens:
        """Token indices of the spec's entity words (K(p)) and relation words."""
        raise self._unsupported("prompt_tokens")

    def attention_layers(self) -> list[str]:
        """Names of the cross-attention layers, in execution order (index = position)."""
        raise self._unsupported("attention_layers")

    def timesteps(self) -> list[int]:
        """The sampler's timesteps, in denoising order."""
        raise self._unsupported("timesteps")

    def capture(
        self,
        latents: torch.Tensor,
        timestep: int | torch.Tensor,
        prompt: str | PromptSpec,
        selection: AttentionSelection | None = None,
        early_exit: bool | None = None,
    ) -> AttentionMaps:
        """Run the generator on ``latents`` (batch 1) at ``timestep`` and return the maps."""
        raise self._unsupported("capture")

    def invert(self, video: Video, prompt: str | PromptSpec, num_inference_steps: int | None = None) -> InversionResult:
        """Invert a uint8 ``(F, H, W, 3)`` video into the trajectory {z_t} under ``prompt``."""
        raise self._unsupported("invert")

    def replay(self, inversion: InversionResult, guidance_scale: float = 1.0) -> ReplayResult:
        """Denoise from ``inversion.z_T`` back to a video; report the reconstruction error."""
        raise self._unsupported("replay")

    def _unsupported(self, what: str) -> NotImplementedError:
        return NotImplementedError(f"generator {type(self).__name__} does not implement {what}()")


def as_prompt(prompt: str | PromptSpec) -> str:
    return prompt.prompt if isinstance(prompt, PromptSpec) else str(prompt)


def check_choice(name: str, value: Any, accepted: Sequence[Any]) -> None:
    """Raise a ValueError naming the bad value and the accepted ones."""
    if value not in accepted:
        raise ValueError(f"{name}={value!r} is not supported; accepted: {', '.join(map(repr, accepted))}")
