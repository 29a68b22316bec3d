"""`modelscope`: ModelScope text-to-video 1.7B (UNet3D), through TextToVideoSDPipeline."""

from __future__ import annotations

from cvg_bench.generators.unet3d import PretrainedUNet3DGenerator
from cvg_bench.registry import register


@register("generator", "modelscope")
class ModelScopeGenerator(PretrainedUNet3DGenerator):
    """ModelScope T2V 1.7B (diffusers TextToVideoSDPipeline; cross-attention = spatial attn2)."""

    backend = "modelscope"
    default_model = "ali-vilab/text-to-video-ms-1.7b"

    def __init__(self, model: str | None = None, num_frames: int = 16, height: int = 256, width: int = 256,
                 num_inference_steps: int = 25, guidance_scale: float = 9.0, device: str = "cuda", **kwargs) -> None:
        super().__init__(model=model, num_frames=num_frames, height=height, width=width,
                         num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, device=device, **kwargs)
