"""A training run's resumable state, and its exported model, in pieces that a device's return
and carry limits let through.

    python experiments/generator_v2/state.py pack CHECKPOINT_DIR OUT [--part-mb 15] [--exact]
    python experiments/generator_v2/state.py unpack PARTS_DIR CHECKPOINT_DIR
    python experiments/generator_v2/state.py info PARTS_DIR
    python experiments/generator_v2/state.py pack-export EXPORT_DIR OUT
    python experiments/generator_v2/state.py assemble EXPORT_TAR TEXT_ENCODER_DIR DEST

A lent device returns at most 8 files of at most 16 MB; the next call carries at most 64 MiB
with the working tree (tracked files alone were 21.5 MiB on 2026-12-05).

``pack`` writes the latest checkpoint of a ``cvg_bench.generators.tiny_training`` run
(weights, EMA, optimizer, step) with the run's ``run.json``, ``loss.csv``, ``segments.jsonl``
and newest preview as ``OUT/state.tar.00``, ``.01``, ... (a tar split into parts of
``--part-mb``). Left out: ``init/`` (the run rebuilds it from its config: the frozen text
encoder's folder and the seed) and older checkpoints. Adam's two moment tensors are stored in
bfloat16 (8 significant bits) unless ``--exact``: 25 MB instead of 34 for generator v2's UNet;
weights and EMA are always exact. ``unpack`` rebuilds the checkpoint folder from the parts
(the moments back in float32) unless that folder already holds the same or a later step (a
warm device keeps its own). That exact resume fits a carry only beside a small tree: with
the text encoder (21 MiB) and wheels (6.5 MiB) the 25 MB state does not.

``pack-export`` writes ``OUT/export.tar``: an exported pipeline folder without its text
encoder's weights (the frozen encoder every run carries anyway): the EMA UNet, 8 MB.
``assemble`` puts the weights back from the text encoder folder (checked equal to those the
export was made with) into a complete pipeline folder: the model to evaluate or commit, or
``init_from`` of a run that continues on a cold device (fresh optimizer and EMA, lr warm-up
again: a warm start, not an exact resume).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

MOMENTS = ("exp_avg", "exp_avg_sq")
RUN_FILES = ("run.json", "loss.csv", "segments.jsonl")


def _latest(ckpt_dir: Path) -> Path:
    pointer = ckpt_dir / "latest"
    if not pointer.is_file():
        raise FileNotFoundError(f"{ckpt_dir} holds no checkpoint (no 'latest' pointer)")
    return ckpt_dir / pointer.read_text().strip()


def _step(ckpt_dir: Path) -> int:
    try:
        return int(json.loads((_latest(ckpt_dir) / "state.json").read_text())["step"])
    except FileNotFoundError:
        return -1


def compact_optimizer(state_pt: Path, out: Path, exact: bool = False) -> None:
    """``training_state.pt`` -> ``optimizer_moments.safetensors`` (the Adam moments) +
    ``training_meta.pt`` (the rest: steps, param groups, EMA scalars, RNG states)."""
    state = torch.load(state_pt, map_location="cpu", weights_only=True)
    moments, rest = {}, {}
    for idx, entry in state["optimizer"]["state"].items():
        rest[idx] = {}
        for key, value in entry.items():
            if key in MOMENTS:
                moments[f"{idx}.{key}"] = value if exact else value.to(torch.bfloat16)
            else:
                rest[idx][key] = value
    save_file({k: v.contiguous() for k, v in moments.items()}, out / "optimizer_moments.safetensors")
    meta = {**{k: v for k, v in state.items() if k != "optimizer"},  # EMA scalars, RNG states
            "optimizer": {"state": rest, "param_groups": state["optimizer"]["param_groups"]},
            "moments_dtype": "float32" if exact else "bfloat16"}
    torch.save(meta, out / "training_meta.pt")


def expand_optimizer(folder: Path) -> None:
    """The inverse of :func:`compact_optimizer`, in place: writes ``training_state.pt``."""
    meta = torch.load(folder / "training_meta.pt", map_location="cpu", weights_only=True)
    moments = load_file(folder / "optimizer_moments.safetensors")
    state = meta["optimizer"]["state"]
    for name, value in moments.items():
        idx, key = name.split(".", 1)
        state[int(idx)][key] = value.to(torch.float32)
    meta.pop("moments_dtype")
    torch.save(meta, folder / "training_state.pt")
    (folder / "training_meta.pt").unlink()
    (folder / "optimizer_moments.safetensors").unlink()


def pack(ckpt_dir: Path, out: Path, part_mb: float = 15.0, exact: bool = False) -> list[Path]:
    ckpt_dir, out = Path(ckpt_dir), Path(out)
    latest = _latest(ckpt_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("state.tar.*"):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        step_dir = Path(tmp) / latest.name
        step_dir.mkdir()
        for f in latest.iterdir():
            if f.name != "training_state.pt":
                shutil.copy2(f, step_dir / f.name)
        compact_optimizer(latest / "training_state.pt", step_dir, exact=exact)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(step_dir, arcname=latest.name)
            for name in RUN_FILES:
                if (ckpt_dir / name).is_file():
                    tar.add(ckpt_dir / name, arcname=name)
            previews = sorted((ckpt_dir / "previews").glob("step_*.png"))
            for p in previews[-1:]:
                tar.add(p, arcname=f"previews/{p.name}")
                if p.with_suffix(".txt").is_file():
                    tar.add(p.with_suffix(".txt"), arcname=f"previews/{p.with_suffix('.txt').name}")
            info = tarfile.TarInfo("latest")
            data = f"{latest.name}\n".encode()
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob, size = buf.getvalue(), int(part_mb * 1e6)
    parts = []
    for i in range(0, max(1, len(blob)), size):
        part = out / f"state.tar.{len(parts):02d}"
        part.write_bytes(blob[i : i + size])
        parts.append(part)
    return parts


def unpack(parts_dir: Path, ckpt_dir: Path) -> int | None:
    """Restore the checkpoint in ``parts_dir`` into ``ckpt_dir``; returns its step, or None
    when ``ckpt_dir`` already holds that step or a later one (nothing is changed)."""
    parts = sorted(Path(parts_dir).glob("state.tar.*"))
    if not parts:
        raise FileNotFoundError(f"no state.tar.* parts in {parts_dir}")
    blob = b"".join(p.read_bytes() for p in parts)
    ckpt_dir = Path(ckpt_dir)
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(tmp, filter="data")
        tmp = Path(tmp)
        name = (tmp / "latest").read_text().strip()
        step = int(json.loads((tmp / name / "state.json").read_text())["step"])
        if _step(ckpt_dir) >= step:
            return None
        expand_optimizer(tmp / name)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        for f in [*RUN_FILES, "previews"]:
            src = tmp / f
            if src.is_dir():
                (ckpt_dir / f).mkdir(exist_ok=True)
                for p in src.iterdir():
                    shutil.copy2(p, ckpt_dir / f / p.name)
            elif src.is_file():
                shutil.copy2(src, ckpt_dir / f)
        shutil.rmtree(ckpt_dir / name, ignore_errors=True)
        shutil.copytree(tmp / name, ckpt_dir / name)
        (ckpt_dir / "latest").write_text(name + "\n")
    return step


TEXT_WEIGHTS = "text_encoder/model.safetensors"


def pack_export(export_dir: Path, out: Path) -> Path:
    """``out/export.tar``: ``export_dir`` without its text encoder's weights, plus their
    checksum (``text_encoder.sha256``: of the tensors, whatever their file layout)."""
    export_dir, out = Path(export_dir), Path(out)
    if not (export_dir / "model_index.json").is_file():
        raise FileNotFoundError(f"{export_dir} is no saved pipeline (no model_index.json)")
    out.mkdir(parents=True, exist_ok=True)
    target = out / "export.tar"
    with tarfile.open(target, "w") as tar:
        for f in sorted(export_dir.rglob("*")):
            rel = f.relative_to(export_dir).as_posix()
            if f.is_file() and rel != TEXT_WEIGHTS:
                tar.add(f, arcname=rel)
        data = (_tensor_digest(export_dir / TEXT_WEIGHTS) + "\n").encode()
        info = tarfile.TarInfo("text_encoder.sha256")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return target


def _tensor_digest(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for key, value in sorted(load_file(path).items()):
        h.update(key.encode())
        h.update(str(value.dtype).encode())
        h.update(value.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def assemble(export_tar: Path, text_encoder_dir: Path, dest: Path) -> Path:
    """A complete pipeline folder from ``export.tar`` and the text encoder folder it was
    trained with (its weights must match the export's checksum)."""
    dest = Path(dest)
    weights = Path(text_encoder_dir) / "model.safetensors"
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(export_tar) as tar:
        tar.extractall(tmp, filter="data")
    want = (tmp / "text_encoder.sha256").read_text().strip()
    have = _tensor_digest(weights)
    if want != have:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(f"{weights} is not the text encoder {export_tar} was trained with "
                         f"(tensor checksum {have[:12]} != {want[:12]})")
    (tmp / "text_encoder.sha256").unlink()
    shutil.copy2(weights, tmp / TEXT_WEIGHTS)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def info(parts_dir: Path) -> dict:
    parts = sorted(Path(parts_dir).glob("state.tar.*"))
    blob = b"".join(p.read_bytes() for p in parts)
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        name = tar.extractfile("latest").read().decode().strip()
        state = json.loads(tar.extractfile(f"{name}/state.json").read())
    return {"parts": [p.name for p in parts], "megabytes": round(len(blob) / 1e6, 1), **state}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("ckpt_dir", type=Path)
    a.add_argument("out", type=Path)
    a.add_argument("--part-mb", type=float, default=15.0)
    a.add_argument("--exact", action="store_true", help="keep Adam's moments in float32")
    b = sub.add_parser("unpack")
    b.add_argument("parts_dir", type=Path)
    b.add_argument("ckpt_dir", type=Path)
    c = sub.add_parser("info")
    c.add_argument("parts_dir", type=Path)
    d = sub.add_parser("pack-export")
    d.add_argument("export_dir", type=Path)
    d.add_argument("out", type=Path)
    e = sub.add_parser("assemble")
    e.add_argument("export_tar", type=Path)
    e.add_argument("text_encoder_dir", type=Path)
    e.add_argument("dest", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "pack":
        parts = pack(args.ckpt_dir, args.out, args.part_mb, args.exact)
        print(f"packed step {_step(args.ckpt_dir)} of {args.ckpt_dir} into "
              + ", ".join(f"{q.name} ({q.stat().st_size / 1e6:.1f} MB)" for q in parts))
    elif args.cmd == "unpack":
        step = unpack(args.parts_dir, args.ckpt_dir)
        print(f"restored step {step} into {args.ckpt_dir}" if step is not None else
              f"{args.ckpt_dir} already holds step {_step(args.ckpt_dir)}, not older than {args.parts_dir}'s: kept it")
    elif args.cmd == "pack-export":
        target = pack_export(args.export_dir, args.out)
        print(f"packed {args.export_dir} (without its text encoder's weights) into {target} "
              f"({target.stat().st_size / 1e6:.1f} MB)")
    elif args.cmd == "assemble":
        print(f"assembled {assemble(args.export_tar, args.text_encoder_dir, args.dest)}")
    else:
        print(json.dumps(info(args.parts_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
