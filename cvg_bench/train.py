"""`train`: one entry for every trainable component, chosen with component=<name>."""

from __future__ import annotations

import difflib
import importlib
from typing import Any

# component -> "module:function" taking the component's config node.
TRAINERS: dict[str, str] = {
    "generator": "cvg_bench.generators.tiny_training:train_tiny_generator",
    "classifier": "cvg_bench.cvg.pipeline:train_cvg_classifier",
    "video_encoder": "cvg_bench.backbones.pretrain_video_encoder:pretrain_video_encoder",
}


def train_component(component: str, cfg: Any) -> Any:
    if component not in TRAINERS:
        close = difflib.get_close_matches(component, list(TRAINERS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown component {component!r}.{hint} "
                         f"Trainable components: {', '.join(TRAINERS)}")
    module, func = TRAINERS[component].split(":")
    return getattr(importlib.import_module(module), func)(cfg)
