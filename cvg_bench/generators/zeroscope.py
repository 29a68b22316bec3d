"""`zeroscope`: ZeroScope v2 (a ModelScope fine-tune; UNet3D), through TextToVideoSDPipeline."""

from __future__ import annotations

from cvg_bench.generators.unet3d import PretrainedUNet3DGenerator
from cvg_bench.registry import register


@register("generator", "zeroscope")
class ZeroScopeGenerator(PretrainedUNet3DGenerator):
    """ZeroScope v2 576w (diffusers TextToVideoSDPipeline; cross-attention = spatial attn2)."""

    backend = "zeroscope"
    default_model = "cerspense/zeroscope_v2_576w"

    def __init__(self, model: str | None = None, num_frames: int = 24, height: int = 320, width: int = 576,
                 num_inference_steps: int = 40, guidance_scale: float = 9.0, device: str = "cuda", **kwargs) -> None:
        super().__init__(model=model, num_frames=num_frames, height=height, width=width,
                         num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, device=device, **kwargs)
