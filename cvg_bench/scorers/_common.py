"""Plumbing shared by the model-backed scorers (private: not a plugin).

- where a model lives: a hub id, a local folder, or a folder under ``$CVG_BENCH_MODELS``;
- the error ``check_ready`` raises when weights are missing (names the model, what to download
  and the config key / environment variable that points at a local copy);
- the evaluator identity recorded with every score (model id + revision or a local fingerprint);
- frame sampling, spec helpers and NaN results ("this scorer does not score this category").
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from cvg_bench.scorers.base import ScoreResult
from cvg_bench.types import PromptSpec

log = logging.getLogger("cvg_bench.scorers")

#: Environment variable: a folder holding local model copies; a relative ``model_id`` (or an
#: open_clip checkpoint path) is looked up under it, e.g. ``$CVG_BENCH_MODELS/google/owlv2-...``.
MODELS_ENV = "CVG_BENCH_MODELS"

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


class ScorerNotReady(RuntimeError):
    """A scorer cannot run (weights missing, unloadable model); raised by ``check_ready``."""


def resolve_model_path(model_id: str) -> str:
    """``model_id`` itself when it is an existing path, else ``$CVG_BENCH_MODELS/<model_id>``
    when that exists, else ``model_id`` unchanged (a hub id)."""
    path = Path(model_id).expanduser()
    if path.exists():
        return str(path)
    root = os.environ.get(MODELS_ENV)
    if root and not path.is_absolute():
        candidate = Path(root).expanduser() / model_id
        if candidate.exists():
            return str(candidate)
    return model_id


def looks_local(model_id: str) -> bool:
    """A path rather than a hub id ("org/name"): absolute, ~, ./ or ../ prefixed."""
    return model_id.startswith(("/", "~", "./", "../")) or model_id.startswith(os.sep)


def require_local_folder(resolved: str) -> None:
    """A model path that :func:`looks_local` must be an existing folder (a hub id passes);
    raises FileNotFoundError, which the loaders turn into :func:`not_ready`."""
    if looks_local(resolved) and not os.path.isdir(resolved):
        raise FileNotFoundError(f"no folder {resolved}")


def not_ready(scorer: str, key: str, model_id: str, exc: BaseException | None,
              download: str) -> ScorerNotReady:
    """The error of a scorer whose model cannot be loaded, with the three ways to fix it."""
    cause = f" ({type(exc).__name__}: {str(exc).splitlines()[0][:300]})" if exc else ""
    return ScorerNotReady(
        f"scorer {scorer!r} cannot load its model {model_id!r}{cause}. "
        f"Download it where there is internet access ({download}) and point at the local copy "
        f"with the config key `scorer.{scorer}.{key}=/path/to/copy`, or put it under "
        f"${MODELS_ENV}/{model_id} (environment variable {MODELS_ENV}=<folder of models>). "
        "Nothing was generated yet."
    )


def missing_weights(scorer: str, key: str, model_id: str) -> ScorerNotReady | None:
    """The :func:`not_ready` error when ``model_id`` has no local copy, without loading it or
    touching the network (None when it has one): a local folder that exists, a folder under
    ``$CVG_BENCH_MODELS``, or a hub id already in the Hugging Face cache (its config.json)."""
    resolved = resolve_model_path(model_id)
    if os.path.isdir(resolved):
        return None
    cause: BaseException
    if looks_local(resolved) or os.path.isabs(resolved):
        cause = FileNotFoundError(f"no folder {resolved}")
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(resolved, "config.json")
        except Exception:  # noqa: BLE001 - not a repo id: loading will explain
            return None
        if isinstance(cached, str):
            return None
        root = os.environ.get(MODELS_ENV)
        where = f"${MODELS_ENV}={root} has no {model_id}" if root else f"${MODELS_ENV} is unset"
        cause = FileNotFoundError(f"not in the Hugging Face cache and {where}")
    return not_ready(scorer, key, model_id, cause, hf_download_hint(model_id))


def hf_download_hint(model_id: str) -> str:
    return f"`huggingface-cli download {model_id} --local-dir <DIR>`"


def folder_fingerprint(folder: str | Path) -> str:
    """Cheap identity of a local model folder: sha256 over config/processor JSON bytes and the
    names and sizes of weight files (weights are not read: they can be tens of GB)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(folder).as_posix()
        if p.suffix == ".json" and p.stat().st_size < 4_000_000:
            digest.update(rel.encode() + b"\0" + p.read_bytes() + b"\0")
        elif p.suffix in _WEIGHT_SUFFIXES:
            digest.update(f"{rel}:{p.stat().st_size}\0".encode())
    return digest.hexdigest()[:12]


def file_fingerprint(path: str | Path, chunk: int = 1 << 20) -> str:
    """Identity of a (possibly large) checkpoint file: size + sha256 of its first and last MiB."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        digest.update(fh.read(chunk))
        if size > chunk:
            fh.seek(max(chunk, size - chunk))
            digest.update(fh.read(chunk))
    return digest.hexdigest()[:12]


def hf_identity(model_id: str, resolved: str, model: Any = None) -> str:
    """``<model_id>@<revision>``: the hub commit when transformers knows it, else
    ``local-<fingerprint>`` for a local folder."""
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    if commit:
        return f"{model_id}@{commit[:12]}"
    if Path(resolved).is_dir():
        m = re.search(r"snapshots/([0-9a-f]{40})", Path(resolved).resolve().as_posix())
        if m:
            return f"{model_id}@{m.group(1)[:12]}"
        return f"{model_id}@local-{folder_fingerprint(resolved)}"
    return f"{model_id}@unknown-revision"


def torch_device(device: str) -> str:
    """``"auto"``: cuda when available, else cpu."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def sample_indices(num_frames: int, num: int) -> np.ndarray:
    """T2V-CompBench's frame sampling: every frame when there are at most ``num``, else
    ``num`` indices evenly spaced from the first to the last (``np.linspace(..., dtype=int)``)."""
    if num_frames < 1:
        raise ValueError("video has no frames")
    if num_frames <= num:
        return np.arange(num_frames)
    return np.linspace(0, num_frames - 1, num, dtype=int)


def check_video(video: np.ndarray) -> np.ndarray:
    if not isinstance(video, np.ndarray) or video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video must be uint8 (frames, H, W, 3), got {getattr(video, 'shape', video)}")
    if video.dtype != np.uint8:
        raise ValueError(f"video must be uint8, got {video.dtype}")
    return video


def nan_result(metrics: Iterable[str], reason: str, **details: Any) -> ScoreResult:
    """Every metric NaN (leaderboards treat NaN as missing), the reason in ``details``."""
    nan = {m: math.nan for m in metrics}
    return ScoreResult(raw=dict(nan), normalised=dict(nan), details={"skipped": reason, **details})


def metadata(spec: PromptSpec) -> dict[str, Any]:
    """The benchmark's own per-prompt metadata (T2V-CompBench's JSON record), if any."""
    md = (spec.meta or {}).get("metadata")
    return md if isinstance(md, dict) else {}


def clean(text: Any) -> str:
    return str(text or "").strip().strip("?.!,;:").strip()


def label_parts(label: str | None) -> list[str]:
    """A composite label split per entity: "left|right" (T2V-CompBench), "left/up" (shapes
    world) and "2,3" (T2V-CompBench numeracy) all work."""
    if not label:
        return []
    return [p.strip() for p in re.split(r"[|/,]", label) if p.strip()]


def entity_queries(spec: PromptSpec, meta_keys: tuple[str, ...] = ()) -> list[str]:
    """Text queries for the spec's objects: the benchmark metadata's object strings when present
    (the exact strings T2V-CompBench's scripts query), else the entities' phrases."""
    md = metadata(spec)
    from_meta = [clean(md.get(k)) for k in meta_keys if clean(md.get(k))]
    if from_meta:
        return from_meta
    return [clean(e.phrase) or e.noun for e in spec.entities]
