"""The results store: one JSON record per sample, written atomically, resumable.

Layout under ``results_dir``::

    <benchmark>/<method>__<generator>__<run_hash>/
        manifest.json                 # the run: resolved config, versions, git commit
        samples/<prompt_id>__s<seed>.json   # one SampleRecord per finished sample
        videos/<prompt_id>__s<seed>.mp4

One file per sample (not one appended JSONL) so that SLURM array tasks and a killed run
never share a half-written file: a record exists completely or not at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, TypedDict

SCHEMA_VERSION = 1


class Timings(TypedDict):
    generation_s: float  # whole sampling call, guidance included
    guidance_s: float  # time inside guidance hooks (part of generation_s)
    scoring_s: float


class SampleRecord(TypedDict):
    """One (run config hash, method, generator, benchmark, prompt id, seed) sample."""

    schema_version: int
    run_hash: str
    method: str
    generator: str
    benchmark: str
    benchmark_version: str
    prompt_id: str
    prompt: str
    category: str
    split: str
    seed: int
    video_path: str | None  # relative to the run directory
    scores: dict[str, float]  # raw, "<scorer>/<metric>"
    scores_norm: dict[str, float]  # normalised to [0, 1], higher is better
    faithfulness: float | None  # the faithfulness scorer's primary normalised metric
    quality: float | None  # the quality scorer's primary normalised metric (None if none ran)
    details: dict[str, Any]  # per-scorer per-predicate details
    timings: Timings
    evaluators: dict[str, str]  # scorer name -> evaluator identity/version
    versions: dict[str, str]
    git_commit: str
    created_at: str
    error: str | None


def config_hash(cfg: dict[str, Any], length: int = 10) -> str:
    """Stable hash of the config parts that change what a sample is."""
    blob = json.dumps(cfg, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
    """A file-name-safe form of an id (ids come from benchmark files). An id that had to be
    changed or cut gets a hash of the original, so two ids never share one file."""
    text = str(text)
    out = _SAFE.sub("_", text).strip("._")
    if not out:
        raise ValueError(f"id {text!r} has no file-name-safe characters")
    if out != text or len(out) > 120:
        out = f"{out[:110]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    return out


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


def library_versions() -> dict[str, str]:
    out = {}
    for dist in ("cvg_bench", "torch", "diffusers", "transformers", "numpy", "open_clip_torch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def git_commit(repo: Path | None = None) -> str:
    repo = repo or Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo, capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if sha.returncode != 0:
        return "unknown"
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


class RunStore:
    """The records of one run (one method x generator x benchmark x config hash)."""

    def __init__(self, results_dir: Path | str, benchmark: str, method: str, generator: str,
                 run_hash: str) -> None:
        self.root = Path(results_dir) / safe_name(benchmark) / (
            f"{safe_name(method)}__{safe_name(generator)}__{run_hash}"
        )
        self.run_hash = run_hash

    @property
    def samples_dir(self) -> Path:
        return self.root / "samples"

    @property
    def videos_dir(self) -> Path:
        return self.root / "videos"

    def stem(self, prompt_id: str, seed: int) -> str:
        return f"{safe_name(prompt_id)}__s{int(seed)}"

    def record_path(self, prompt_id: str, seed: int) -> Path:
        return self.samples_dir / f"{self.stem(prompt_id, seed)}.json"

    def video_path(self, prompt_id: str, seed: int) -> Path:
        return self.videos_dir / f"{self.stem(prompt_id, seed)}.mp4"

    def check_writable(self) -> None:
        """Fail before any work if the run directory cannot be written."""
        try:
            self.samples_dir.mkdir(parents=True, exist_ok=True)
            self.videos_dir.mkdir(parents=True, exist_ok=True)
            # A probe of its own: shards of one run check this folder at the same moment.
            fd, probe = tempfile.mkstemp(dir=self.root, prefix=".write_probe.")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise PermissionError(
                f"cannot write results to {self.root} ({exc.strerror or exc}); "
                "set results_dir=<a writable folder>"
            ) from exc

    def is_done(self, prompt_id: str, seed: int) -> bool:
        """A sample is done when its record exists, parses and holds no error (errors retry)."""
        path = self.record_path(prompt_id, seed)
        if not path.exists():
            return False
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):
            return False
        return record.get("error") is None

    def remove_stale_temps(self, min_age_s: float = 600.0) -> int:
        """Delete temp files a killed writer left behind (they are never read).

        Only old ones: a sibling SLURM task may be writing a fresh temp file right now."""
        now = time.time()
        stale = [p for d in (self.samples_dir, self.videos_dir) if d.exists()
                 for p in d.glob(".*") if p.is_file() and now - p.stat().st_mtime > min_age_s]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def write(self, record: SampleRecord) -> Path:
        path = self.record_path(record["prompt_id"], record["seed"])
        atomic_write_json(path, record)
        return path

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.root / "manifest.json", manifest)

    def read_manifest(self) -> dict[str, Any] | None:
        path = self.root / "manifest.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def records(self) -> list[SampleRecord]:
        return list(iter_records(self.root))


def iter_records(root: Path | str) -> Iterator[SampleRecord]:
    """Every sample record under ``root`` (any depth), skipping temp files."""
    for path in sorted(Path(root).rglob("samples/*.json")):
        yield json.loads(path.read_text())
