"""Scorer ``clip``: open_clip frame-text similarity (a faithfulness proxy) and frame-to-frame
similarity (temporal consistency).

- ``clip_score`` (raw): the mean over frames of cos(image embedding of the frame, text embedding
  of the prompt), i.e. CLIPSIM. Normalised: ``clamp((s - norm_lo) / (norm_hi - norm_lo), 0, 1)``
  with ``norm_lo = 0.15`` (about what ViT-B-32 gives an unrelated image-text pair) and
  ``norm_hi = 0.35`` (a strongly matching pair; published T2V models score 0.29-0.32 CLIPSIM with
  ViT-B-32). The constants are a readable scale for one CLIP model, not a calibration: compare
  raw values of the same ``model``/``pretrained`` only. Primary metric.
- ``temporal_consistency`` (raw): the mean cosine between consecutive frames' image embeddings;
  normalised ``clamp(x, 0, 1)``. NaN for a 1-frame video.

Weights: ``pretrained`` is an open_clip tag (``openai``, ``laion2b_s34b_b79k``...: open_clip
downloads it from the Hugging Face hub), or a local checkpoint file (absolute, or relative to
``$CVG_BENCH_MODELS``), or ``null`` for a RANDOM model (tests only: ``version()`` then says
"random" and ``check_ready`` warns loudly). ``model: hf-hub:<org>/<repo>`` also works (weights
come with the model). A local copy of OpenAI's weights needs ``model: ViT-B-32-quickgelu``
(the tag ``openai`` sets QuickGELU itself; a file path cannot say it).
"""

from __future__ import annotations

import difflib
import math
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cvg_bench.registry import register
from cvg_bench.scorers._common import (
    MODELS_ENV,
    ScorerNotReady,
    check_video,
    file_fingerprint,
    log,
    not_ready,
    resolve_model_path,
    sample_indices,
    torch_device,
)
from cvg_bench.scorers.base import Scorer, ScoreResult
from cvg_bench.types import PromptSpec, Video

METRICS = ("clip_score", "temporal_consistency")


def normalise_clip_score(s: float, lo: float, hi: float) -> float:
    """``clamp((s - lo) / (hi - lo), 0, 1)``."""
    return float(min(1.0, max(0.0, (s - lo) / (hi - lo))))


@register("scorer", "clip")
class ClipScorer(Scorer):
    """open_clip frame-prompt similarity (CLIPSIM) and consecutive-frame similarity."""

    role: ClassVar[str] = "faithfulness"
    primary: ClassVar[str] = "clip_score"
    higher_is_better: ClassVar[dict[str, bool]] = {m: True for m in METRICS}

    def __init__(
        self,
        model: str = "ViT-B-32",
        pretrained: str | None = "openai",
        device: str = "auto",
        batch_size: int = 16,
        num_frames: int | None = None,
        norm_lo: float = 0.15,
        norm_hi: float = 0.35,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if num_frames is not None and num_frames < 1:
            raise ValueError(f"num_frames={num_frames} must be >= 1 (or null: every frame)")
        if not norm_hi > norm_lo:
            raise ValueError(f"norm_hi={norm_hi} must be > norm_lo={norm_lo}")
        self.model_name, self.pretrained = model, (pretrained or None)
        self.device, self.batch_size, self.num_frames = device, batch_size, num_frames
        self.norm_lo, self.norm_hi = norm_lo, norm_hi
        self.model: Any = None
        self.preprocess: Any = None
        self.tokenizer: Any = None
        self._weights_id: str | None = None

    # ---- loading ----
    @property
    def is_random(self) -> bool:
        return self.pretrained is None and not self.model_name.startswith("hf-hub:")

    def _weights(self) -> tuple[str | None, str]:
        """(what to pass as ``pretrained``, weights identity)."""
        import open_clip

        if self.model_name.startswith("hf-hub:"):
            return None, "hub"
        if self.pretrained is None:
            return None, "random"
        tags = open_clip.list_pretrained_tags_by_model(self.model_name)
        if self.pretrained in tags:
            return self.pretrained, self.pretrained
        path = Path(resolve_model_path(self.pretrained)).expanduser()
        if path.is_file():
            return str(path), f"file-{file_fingerprint(path)}"
        raise not_ready(
            "clip", "pretrained", self.pretrained, None,
            f"`pretrained` is neither an open_clip tag of {self.model_name} "
            f"({', '.join(tags) or 'none'}) nor an existing checkpoint file (absolute, or "
            f"relative to ${MODELS_ENV}); get a checkpoint, e.g. `huggingface-cli download "
            f"<open_clip hf_hub repo> open_clip_pytorch_model.bin --local-dir <DIR>`")

    def load(self) -> None:
        if self.model is not None:
            return
        import open_clip

        known = open_clip.list_models()
        if not self.model_name.startswith("hf-hub:") and self.model_name not in known:
            close = difflib.get_close_matches(self.model_name, known, n=3)
            raise ScorerNotReady(f"scorer 'clip': unknown open_clip model {self.model_name!r}"
                                 + (f"; did you mean {', '.join(close)}?" if close else ""))
        pretrained, weights_id = self._weights()
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.model_name, pretrained=pretrained, device=torch_device(self.device))
            tokenizer = open_clip.get_tokenizer(self.model_name)
        except Exception as exc:  # noqa: BLE001 - a failed download or a bad checkpoint
            hub = None
            if pretrained and not Path(pretrained).is_file():
                hub = (open_clip.get_pretrained_cfg(self.model_name, pretrained) or {}).get("hf_hub")
            hint = (f"`huggingface-cli download {hub.rstrip('/')} --local-dir <DIR>`, then set "
                    "pretrained to the checkpoint file in <DIR>" if hub else
                    "an open_clip checkpoint file matching the model")
            raise not_ready("clip", "pretrained", str(self.pretrained or self.model_name), exc,
                            hint) from exc
        self.model, self.preprocess, self.tokenizer = model.eval(), preprocess, tokenizer
        self._weights_id = weights_id

    def check_ready(self) -> None:
        self.load()
        if self.is_random:
            msg = (f"scorer 'clip' runs a RANDOM {self.model_name} (pretrained=null): its scores "
                   "mean nothing. This is for tests only; set scorer.clip.pretrained=<tag or "
                   "checkpoint file> for real scores.")
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            log.warning(msg)

    def version(self) -> str:
        import open_clip

        if self.is_random:
            weights = "random"
        elif self._weights_id is not None:
            weights = self._weights_id
        else:
            weights = f"{self.pretrained}(not-loaded)"
        return f"open_clip-{open_clip.__version__}:{self.model_name}/{weights}"

    # ---- scoring ----
    def embed_frames(self, frames: np.ndarray):
        import torch
        from PIL import Image

        out = []
        with torch.no_grad():
            for i in range(0, len(frames), self.batch_size):
                batch = torch.stack([self.preprocess(Image.fromarray(np.ascontiguousarray(f)))
                                     for f in frames[i:i + self.batch_size]])
                emb = self.model.encode_image(batch.to(next(self.model.parameters()).device))
                out.append(torch.nn.functional.normalize(emb.float(), dim=-1).cpu())
        return torch.cat(out)

    def embed_text(self, text: str):
        import torch

        with torch.no_grad():
            tokens = self.tokenizer([text]).to(next(self.model.parameters()).device)
            emb = self.model.encode_text(tokens)
        return torch.nn.functional.normalize(emb.float(), dim=-1).cpu()[0]

    def score(self, video: Video, spec: PromptSpec) -> ScoreResult:
        check_video(video)
        self.load()
        idx = (np.arange(len(video)) if self.num_frames is None
               else sample_indices(len(video), self.num_frames))
        img = self.embed_frames(video[idx])
        txt = self.embed_text(spec.prompt)
        per_frame = (img @ txt).numpy().astype(float)
        clip_score = float(per_frame.mean())
        if len(img) >= 2:
            temporal = float((img[1:] * img[:-1]).sum(-1).mean())
            temporal_norm = float(min(1.0, max(0.0, temporal)))
        else:
            temporal = temporal_norm = math.nan
        raw = {"clip_score": clip_score, "temporal_consistency": temporal}
        norm = {"clip_score": normalise_clip_score(clip_score, self.norm_lo, self.norm_hi),
                "temporal_consistency": temporal_norm}
        return ScoreResult(raw=raw, normalised=norm,
                           details={"frame_scores": [round(float(s), 5) for s in per_frame]})
