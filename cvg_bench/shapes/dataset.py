"""Rendered shapes-world datasets on disk (the tiny generator's and the classifier's data).

Layout of ``out_dir``::

    dataset.json         what was asked for (n, split, categories, seed, render config)
    shard-00000.npz      videos: uint8 (n_shard, frames, size, size, 3) under key "videos"
    shard-00000.jsonl    one line per video: index, seed, spec (PromptSpec.to_dict())
    ...

Sample ``i`` depends only on (seed, i): its category is ``categories[i % len(categories)]``,
its prompt comes from :func:`~cvg_bench.shapes.grammar.sample_spec` with an rng seeded by
(seed, i) and its video from :func:`~cvg_bench.shapes.render.render` with a seed derived the
same way. So a killed build resumes where it stopped (complete shards are kept) and gives
the same files as an uninterrupted one.

    python -m cvg_bench.shapes.dataset --out data/shapes-seen --n 20000 --split seen
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from cvg_bench.shapes.grammar import CATEGORIES, SPLITS, sample_spec
from cvg_bench.shapes.render import RenderConfig, render
from cvg_bench.types import PromptSpec

FORMAT_VERSION = 1
MANIFEST = "dataset.json"


def _shard_paths(out: Path, k: int) -> tuple[Path, Path]:
    return out / f"shard-{k:05d}.npz", out / f"shard-{k:05d}.jsonl"


def _atomic_write(path: Path, write: Any, suffix: str) -> None:
    """Write through a temporary file in the same folder, then rename (never half a file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; datasets are shared
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def sample(index: int, seed: int, split: str, categories: Sequence[str],
           cfg: RenderConfig) -> tuple[np.ndarray, PromptSpec, int]:
    """(video, spec, render seed) of sample ``index``: a pure function of its arguments."""
    rng = np.random.default_rng([seed, index])
    cat = categories[index % len(categories)]
    spec = sample_spec(rng, cat, split)
    render_seed = int(rng.integers(2 ** 31))
    return render(spec, render_seed, cfg), spec, render_seed


def _manifest(n: int, split: str, categories: Sequence[str], seed: int, shard_size: int,
              cfg: RenderConfig) -> dict[str, Any]:
    return {"format": FORMAT_VERSION, "n": n, "split": split, "categories": list(categories),
            "seed": seed, "shard_size": shard_size, "render": asdict(cfg)}


def _shard_complete(out: Path, k: int, expected: int) -> bool:
    npz, jsonl = _shard_paths(out, k)
    if not (npz.is_file() and jsonl.is_file()):
        return False
    with open(jsonl) as f:
        return sum(1 for _ in f) == expected


def _prepare(out: Path, manifest: dict[str, Any], overwrite: bool) -> None:
    """Create ``out`` or check that what is there was made with the same settings."""
    path = out / MANIFEST
    if overwrite and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        old = json.loads(path.read_text())
        if old != json.loads(json.dumps(manifest)):
            raise ValueError(
                f"{out} holds a dataset built with other settings ({path}); pass overwrite=True "
                f"(--overwrite) to replace it or choose another folder.\n  there: {old}\n  "
                f"asked: {manifest}")
        return
    _atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=2)), ".json")


def _save_npz(path: str, videos: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a name
        np.savez_compressed(f, videos=videos)


def _write_shard(out: Path, k: int, start: int, stop: int, seed: int, split: str,
                 categories: Sequence[str], cfg: RenderConfig, bar: tqdm) -> None:
    videos, lines = [], []
    for i in range(start, stop):
        video, spec, rseed = sample(i, seed, split, categories, cfg)
        videos.append(video)
        lines.append(json.dumps({"index": i, "seed": rseed, "spec": spec.to_dict()}))
        bar.update(1)
    npz, jsonl = _shard_paths(out, k)
    # The jsonl is written last: a shard counts as complete only when both files are there.
    _atomic_write(npz, lambda tmp: _save_npz(tmp, np.stack(videos)), ".npz")
    _atomic_write(jsonl, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"), ".jsonl")


def build_dataset(out_dir: str | Path, n: int, split: str = "seen",
                  categories: Sequence[str] | None = None, seed: int = 0, shard_size: int = 256,
                  render_cfg: RenderConfig | None = None, overwrite: bool = False,
                  progress: bool = True) -> Path:
    """Render ``n`` (video, spec) pairs of ``split`` into shards under ``out_dir``; resumable.

    ``categories`` default to all seven, taken in turn. Returns ``out_dir``.
    """
    if n < 1 or shard_size < 1:
        raise ValueError(f"n={n} and shard_size={shard_size} must be >= 1")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; accepted: {', '.join(SPLITS)}")
    categories = list(categories or CATEGORIES)
    bad = [c for c in categories if c not in CATEGORIES]
    if bad:
        raise ValueError(f"unknown categories {bad}; accepted: {', '.join(CATEGORIES)}")
    cfg = render_cfg or RenderConfig()
    out = Path(out_dir)
    _prepare(out, _manifest(n, split, categories, seed, shard_size, cfg), overwrite)
    n_shards = -(-n // shard_size)
    with tqdm(total=n, desc=f"rendering {out.name}", unit="video", disable=not progress) as bar:
        for k in range(n_shards):
            start, stop = k * shard_size, min(n, (k + 1) * shard_size)
            if _shard_complete(out, k, stop - start):
                bar.update(stop - start)
                continue
            _write_shard(out, k, start, stop, seed, split, categories, cfg, bar)
    return out


class ShapesDataset:
    """A built dataset as a sequence of (video, spec) pairs; shards are loaded lazily (the
    last one is kept in memory), so it works as a map-style torch Dataset."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        path = self.root / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"no shapes dataset at {self.root} (missing {MANIFEST}); "
                                    "build one with `python -m cvg_bench.shapes.dataset`")
        self.manifest = json.loads(path.read_text())
        n, size = self.manifest["n"], self.manifest["shard_size"]
        missing = [k for k in range(-(-n // size))
                   if not _shard_complete(self.root, k, min(size, n - k * size))]
        if missing:
            raise FileNotFoundError(f"dataset {self.root} is incomplete: shards {missing[:10]} "
                                    "missing; run build_dataset again with the same settings")
        self._cache: tuple[int, np.ndarray, list[PromptSpec]] | None = None

    def __len__(self) -> int:
        return int(self.manifest["n"])

    def _shard(self, k: int) -> tuple[np.ndarray, list[PromptSpec]]:
        if self._cache is None or self._cache[0] != k:
            npz, jsonl = _shard_paths(self.root, k)
            with np.load(npz) as data:
                videos = data["videos"]
            with open(jsonl) as f:
                specs = [PromptSpec.from_dict(json.loads(line)["spec"]) for line in f]
            self._cache = (k, videos, specs)
        return self._cache[1], self._cache[2]

    def __getitem__(self, i: int) -> tuple[np.ndarray, PromptSpec]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i %= len(self)
        videos, specs = self._shard(i // self.manifest["shard_size"])
        j = i % self.manifest["shard_size"]
        return videos[j], specs[j]

    def __iter__(self) -> Iterator[tuple[np.ndarray, PromptSpec]]:
        for i in range(len(self)):
            yield self[i]


def load_dataset(root: str | Path) -> ShapesDataset:
    """Open a dataset made by :func:`build_dataset`."""
    return ShapesDataset(root)


def iter_dataset(root: str | Path) -> Iterator[tuple[np.ndarray, PromptSpec]]:
    """Every (video, spec) pair of a built dataset, in index order."""
    return iter(ShapesDataset(root))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Render a shapes-world dataset to disk (resumable).")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--n", type=int, required=True, help="number of videos")
    ap.add_argument("--split", default="seen", choices=SPLITS)
    ap.add_argument("--categories", nargs="+", choices=CATEGORIES, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=RenderConfig.frames)
    ap.add_argument("--size", type=int, default=RenderConfig.size)
    ap.add_argument("--noise", type=float, default=RenderConfig.noise)
    ap.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    args = ap.parse_args(argv)
    cfg = RenderConfig(frames=args.frames, size=args.size, noise=args.noise)
    out = build_dataset(args.out, args.n, args.split, args.categories, args.seed,
                        args.shard_size, cfg, args.overwrite)
    print(f"dataset: {out} ({args.n} videos)")


if __name__ == "__main__":
    main()
