"""A transformers vision tower as CVG's frozen backbone: frame-wise, pooled over time."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cvg_bench.backbones.base import Backbone
from cvg_bench.registry import register


def load_hf_model(model_id: str | None, config: dict[str, Any] | None, auto_class: str) -> Any:
    """``from_pretrained(model_id)`` (a hub id or local folder), or a random model built from
    ``config`` (``{"model_type": ..., **kwargs}``) for tests and timing."""
    import transformers

    cls = getattr(transformers, auto_class)
    if config:
        cfg = dict(config)
        model_type = cfg.pop("model_type")
        return cls.from_config(transformers.AutoConfig.for_model(model_type, **cfg))
    if not model_id:
        raise ValueError("give model_id (hub id or local folder) or config (a random model)")
    try:
        return cls.from_pretrained(model_id)
    except OSError as exc:
        raise FileNotFoundError(
            f"cannot load {model_id!r} ({exc.__class__.__name__}); download it on a machine with "
            "access (huggingface-cli download <id> --local-dir DIR) and set "
            "backbone.model_id=DIR") from exc


@register("backbone", "hf-vision")
class HFVisionTower(Backbone):
    """A frozen transformers vision tower (CLIP, SigLIP, ViT...) on frames, mean over time."""

    def __init__(self, frames: int, map_size: int, model_id: str | None = None,
                 config: dict[str, Any] | None = None) -> None:
        super().__init__(frames, map_size)
        self.model_id, self.hf_config = model_id, config
        model = load_hf_model(model_id, config, "AutoModel")
        # CLIP/SigLIP full models: keep only the vision tower.
        self.tower = getattr(model, "vision_model", model)
        vcfg = getattr(self.tower, "config", None)
        self.image_size = int(getattr(vcfg, "image_size", 224))
        self.in_channels = int(getattr(vcfg, "num_channels", 3))
        self.out_dim = int(vcfg.hidden_size)

    def config(self):
        return {"model_id": self.model_id, "config": self.hf_config}

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        b, f = volume.shape[:2]
        frames = F.interpolate(volume.flatten(0, 1), size=(self.image_size,) * 2,
                               mode="bilinear", align_corners=False)
        out = self.tower(pixel_values=frames)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = out.last_hidden_state[:, 0]
        return pooled.reshape(b, f, -1).mean(1)
