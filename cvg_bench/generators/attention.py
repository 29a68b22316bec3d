"""Cross-attention capture through diffusers attention processors.

Only the selected cross-attention layers get :class:`CrossAttentionCapture`; every other
processor is left as it was (the fused SDPA path). The capture processor computes the
softmax explicitly only for the selected heads (the others still go through SDPA), keeps
the maps in the autograd graph, and reshapes them to ``(heads, tokens, frames, h, w)``.

Early exit: once every selected layer has been captured the processor raises
:class:`_EarlyExit`, which :func:`run_capture` catches, so a guidance pass pays only for the
network up to the deepest selected layer.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

try:  # the attention modules of the newer transformers (Wan, Flux...) are not `Attention`
    from diffusers.models.attention import AttentionModuleMixin
except ImportError:  # older diffusers
    AttentionModuleMixin = Attention

from cvg_bench.generators.base import AttentionMaps, AttentionSelection

# Forward order of the stages of a diffusers UNet (module registration order differs:
# up_blocks is registered before mid_block).
_STAGE_ORDER = {"transformer_in": 0, "down_blocks": 1, "mid_block": 2, "up_blocks": 3}


class _EarlyExit(Exception):
    """Raised by the capture processor after the last selected layer; caught by run_capture."""


def execution_order_key(name: str) -> tuple:
    """Sort key putting attention layer names in forward order (down, mid, up; then indices)."""
    stage = _STAGE_ORDER.get(name.split(".")[0], 1)
    return (stage, tuple(int(n) for n in re.findall(r"\.(\d+)(?=\.|$)", name)), name)


def is_cross_attention(module: torch.nn.Module) -> bool:
    """True for text cross-attention. Temporal ``attn2`` layers (``temp_attentions.*``,
    ``transformer_in``) are self-attention built with ``cross_attention_dim=None``."""
    return isinstance(module, Attention) and bool(getattr(module, "is_cross_attention", False))


def cross_attention_layers(model: torch.nn.Module) -> list[str]:
    """Names of the text cross-attention modules of ``model``, in execution order."""
    names = [name for name, module in model.named_modules() if is_cross_attention(module)]
    return sorted(names, key=execution_order_key)


def resolve_layers(selection: AttentionSelection, available: list[str]) -> list[str]:
    """The selected layer names (in execution order) or a ValueError naming the bad ones."""
    if selection.layers is None:
        return list(available)
    chosen = []
    for item in selection.layers:
        if isinstance(item, int) and not isinstance(item, bool):
            if not -len(available) <= item < len(available):
                raise ValueError(
                    f"cross-attention layer index {item} out of range: this model has "
                    f"{len(available)} cross-attention layers (0..{len(available) - 1})"
                )
            chosen.append(available[item])
        elif isinstance(item, str) and item in available:
            chosen.append(item)
        else:
            raise ValueError(
                f"unknown cross-attention layer {item!r}; accepted: an index or one of {available}"
            )
    return sorted(set(chosen), key=available.index)


@dataclass
class CaptureState:
    """Per-pass bookkeeping shared by the capture processors of one pass."""

    num_frames: int
    latent_hw: tuple[int, int]
    tokens: tuple[int, ...] | None
    early_exit: bool
    pending: set[str]
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    heads: dict[str, tuple[int, ...]] = field(default_factory=dict)
    num_text_keys: int | None = None
    explicit_calls: int = 0
    fused_calls: int = 0
    exited_early: bool = False
    recomputed_calls: int = 0


def _layer_hw(seq_len: int, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """Spatial size of a layer's token grid, from its sequence length and the latent size."""
    H, W = latent_hw
    for k in range(8):
        h, w = math.ceil(H / 2**k), math.ceil(W / 2**k)
        if h * w == seq_len:
            return h, w
    raise ValueError(f"cannot map a sequence of {seq_len} tokens onto a latent of {H}x{W}")


class CrossAttentionCapture:
    """An ``AttnProcessor2_0`` twin that also returns softmax maps of selected heads/tokens."""

    def __init__(self, name: str, state: CaptureState, heads: tuple[int, ...] | None) -> None:
        self.name, self.state, self.heads = name, state, heads

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        if encoder_hidden_states is None:
            raise RuntimeError(f"capture processor on {self.name!r} got no encoder_hidden_states: not cross-attention")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h4, w4 = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h4 * w4).transpose(1, 2)
        batch, seq_len, _ = hidden_states.shape
        n_keys = encoder_hidden_states.shape[1]
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, n_keys, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (x.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        heads = self._heads(attn.heads)
        out = self._attend(attn, query, key, value, attention_mask, heads, seq_len, n_keys)

        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h4, w4)
        if attn.residual_connection:
            out = out + residual
        out = out / attn.rescale_output_factor
        self._maybe_exit()
        return out

    def _heads(self, n_heads: int) -> tuple[int, ...]:
        if self.heads is None:
            return tuple(range(n_heads))
        bad = [h for h in self.heads if not -n_heads <= h < n_heads]
        if bad:
            raise ValueError(f"head indices {bad} out of range for layer {self.name!r} with {n_heads} heads")
        return tuple(sorted({h % n_heads for h in self.heads}))

    def _attend(self, attn, query, key, value, mask, heads, seq_len, n_keys) -> torch.Tensor:
        """Explicit softmax for the selected heads (maps kept), SDPA for the rest."""
        idx = torch.tensor(heads, device=query.device)
        q_sel, k_sel, v_sel = query[:, idx], key[:, idx], value[:, idx]
        scale = attention_scale(attn, query)
        # float32 scores: maps are a training signal, keep them precise under fp16 models
        scores = torch.matmul(q_sel.float(), k_sel.float().transpose(-1, -2)) * scale
        if mask is not None:
            scores = scores + mask[:, idx].float()
        probs = scores.softmax(dim=-1)
        out_sel = torch.matmul(probs.to(v_sel.dtype), v_sel)
        self._store(probs, heads, seq_len, n_keys)

        rest = [h for h in range(attn.heads) if h not in heads]
        if not rest:
            return out_sel
        ridx = torch.tensor(rest, device=query.device)
        rmask = mask[:, ridx] if mask is not None else None
        out_rest = F.scaled_dot_product_attention(
            query[:, ridx], key[:, ridx], value[:, ridx], attn_mask=rmask, scale=scale
        )
        order = torch.argsort(torch.tensor(list(heads) + rest, device=query.device))
        return torch.cat([out_sel, out_rest], dim=1)[:, order]

    def _token_index(self, n_keys: int) -> list[int] | None:
        """The selected text-key indices (checked against ``n_keys``); ``None`` = all."""
        tokens = self.state.tokens
        if tokens is None:
            return None
        bad = [t for t in tokens if not 0 <= t < n_keys]
        if bad:
            raise ValueError(f"token indices {bad} out of range: the text sequence has {n_keys} keys")
        return list(tokens)

    def _store(self, probs: torch.Tensor, heads: tuple[int, ...], seq_len: int, n_keys: int) -> None:
        idx = self._token_index(n_keys)
        if idx is not None:
            probs = probs[..., idx]
        self._record(self._to_maps(probs, seq_len), heads, n_keys)

    def _to_maps(self, probs: torch.Tensor, seq_len: int) -> torch.Tensor:
        """``(B*F, heads, h*w, tokens)`` -> ``(B, heads, tokens, F, h, w)``."""
        st = self.state
        h, w = _layer_hw(seq_len, st.latent_hw)
        bf, n_heads, _, n_tok = probs.shape
        frames = st.num_frames
        # the UNet folds frames into the batch (batch-major): (B*F, heads, h*w, K)
        return probs.reshape(bf // frames, frames, n_heads, h, w, n_tok).permute(0, 2, 5, 1, 3, 4)

    def _record(self, maps: torch.Tensor, heads: tuple[int, ...], n_keys: int) -> None:
        st = self.state
        if self.name in st.maps:
            # A second call of one layer in one pass is activation checkpointing's recompute
            # (during backward): the maps the loss was built on stay; nothing is re-recorded.
            st.recomputed_calls += 1
            return
        st.maps[self.name] = maps
        st.heads[self.name] = heads
        st.num_text_keys = n_keys
        st.explicit_calls += 1
        st.pending.discard(self.name)

    def _maybe_exit(self) -> None:
        # never during a checkpoint's recompute (the pass already exited; raising would break backward)
        if self.state.early_exit and not self.state.pending and not self.state.exited_early:
            self.state.exited_early = True
            raise _EarlyExit


@contextlib.contextmanager
def activation_checkpointing(modules: list[torch.nn.Module], enabled: bool = True) -> Iterator[None]:
    """Run each of ``modules`` under non-reentrant activation checkpointing for the block.

    Inside a guidance pass only each module's inputs are kept for backward; its activations are
    recomputed then (about one more forward of the checkpointed part), so the pass's memory no
    longer grows with depth x tokens. The capture processors record a layer once per pass and
    never exit early during the recompute. The modules' own ``forward`` is restored on exit.
    """
    if not enabled:
        yield
        return
    from torch.utils.checkpoint import checkpoint

    def wrap(module: torch.nn.Module) -> Callable[..., Any]:
        fn = module.forward
        attention = [m for m in module.modules() if hasattr(m, "processor")]

        def forward(*args: Any, **kwargs: Any) -> Any:
            if not torch.is_grad_enabled():
                return fn(*args, **kwargs)
            # The recompute runs during backward, after the capture processors were taken off:
            # it must run with the processors of the forward, or it computes something else.
            processors = [m.processor for m in attention]

            def run(*a: Any, **k: Any) -> Any:
                current = [m.processor for m in attention]
                for m, p in zip(attention, processors):
                    m.processor = p
                try:
                    return fn(*a, **k)
                finally:
                    for m, p in zip(attention, current):
                        m.processor = p

            return checkpoint(run, *args, use_reentrant=False, **kwargs)

        return forward

    wrapped = []
    try:
        for module in modules:
            if "forward" in vars(module):
                raise RuntimeError(f"{type(module).__name__} already has an instance forward; not wrapping it twice")
            module.forward = wrap(module)
            wrapped.append(module)
        yield
    finally:
        for module in wrapped:
            del module.forward


def attention_scale(attn: torch.nn.Module, query: torch.Tensor) -> float:
    """The softmax scale of an attention module (``attn.scale``, else 1/sqrt(head_dim))."""
    scale = getattr(attn, "scale", None)
    return float(scale) if scale is not None else query.shape[-1] ** -0.5


ProcessorFactory = Callable[[str, CaptureState, "tuple[int, ...] | None"], Any]


@contextlib.contextmanager
def capturing(
    model: torch.nn.Module,
    layers: list[str],
    heads: tuple[int, ...] | None,
    state: CaptureState,
    processor_factory: ProcessorFactory | None = None,
) -> Iterator[CaptureState]:
    """Install capture processors on ``layers`` of ``model`` for the duration of the block.

    ``set_attn_processor`` needs every processor, so the others are passed back unchanged;
    a forward pre-hook on every other attention module counts the fused calls.
    ``processor_factory(name, state, heads)`` builds a layer's capture processor (default
    :class:`CrossAttentionCapture`, for UNet ``Attention`` layers).
    """
    factory = processor_factory or CrossAttentionCapture
    original = model.attn_processors
    new = dict(original)
    for name in layers:
        key = f"{name}.processor"
        if key not in new:
            raise KeyError(f"{key!r} is not an attention processor of {type(model).__name__}")
        new[key] = factory(name, state, heads)
    selected = set(layers)

    def count_fused(module: torch.nn.Module, args: Any) -> None:
        state.fused_calls += 1

    handles = [
        module.register_forward_pre_hook(count_fused)
        for name, module in model.named_modules()
        if isinstance(module, (Attention, AttentionModuleMixin)) and name not in selected
    ]
    model.set_attn_processor(new)
    try:
        yield state
    finally:
        model.set_attn_processor(original)
        for handle in handles:
            handle.remove()


def run_capture(
    model: torch.nn.Module,
    forward: Callable[[], Any],
    selection: AttentionSelection,
    num_frames: int,
    latent_hw: tuple[int, int],
    early_exit: bool,
    timestep: int | None = None,
    available: list[str] | None = None,
    processor_factory: ProcessorFactory | None = None,
) -> list[AttentionMaps]:
    """Run ``forward()`` with capture on; return one :class:`AttentionMaps` per batch item.

    ``available``: the model's capturable layers in execution order (default: its UNet-style
    cross-attention layers); ``processor_factory``: see :func:`capturing`. For transformer
    backends ``num_frames``/``latent_hw`` are the patchified token grid.
    """
    if available is None:
        available = cross_attention_layers(model)
    layers = resolve_layers(selection, available)
    state = CaptureState(
        num_frames=num_frames,
        latent_hw=latent_hw,
        tokens=selection.tokens,
        early_exit=early_exit,
        pending=set(layers),
    )
    with capturing(model, layers, selection.heads, state, processor_factory):
        try:
            forward()
        except _EarlyExit:
            pass
    missing = [n for n in layers if n not in state.maps]
    if missing:
        raise RuntimeError(f"cross-attention layers {missing} were not called during the forward pass")
    stats = {
        "explicit_layers": state.explicit_calls,
        "fused_layers": state.fused_calls,
        "early_exit": state.exited_early,
    }
    batch = next(iter(state.maps.values())).shape[0]
    n_keys = int(state.num_text_keys or 0)
    tokens = tuple(selection.tokens) if selection.tokens is not None else tuple(range(n_keys))
    return [
        AttentionMaps(
            maps={n: state.maps[n][b] for n in layers},
            heads={n: state.heads[n] for n in layers},
            tokens=tokens,
            num_text_keys=n_keys,
            timestep=timestep,
            stats=dict(stats),
        )
        for b in range(batch)
    ]
