"""`prompts`: what a benchmark adapter makes of its suite, before any GPU time is spent.

    python -m cvg_bench prompts benchmark=t2vcompbench benchmark.data_root=PATH [benchmark.version=v2]

Per category: prompts, how many map fully onto a composition spec (entities found verbatim,
their words located, the relation words found, a label), a few parsed specs, and every
prompt that does not map, with the adapter's notes saying why.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from cvg_bench import registry
from cvg_bench.types import PromptSpec


def unmapped_reasons(spec: PromptSpec) -> list[str]:
    """Why a spec is not a full composition spec (empty: it maps)."""
    meta, why = spec.meta or {}, []
    if not spec.entities:
        why.append("no entities")
    if spec.label is None:
        why.append("no label")
    if meta.get("entities_verbatim") is False:
        why.append("an entity is not verbatim in the prompt")
    if meta.get("entity_words_found") is False:
        why.append("an entity's words were not located")
    if meta.get("relation_found") is False:
        why.append("the relation words were not found")
    return why


def summarize(specs: list[PromptSpec], examples: int = 2) -> dict[str, Any]:
    counts: dict[str, Counter] = {}
    shown: dict[str, list[dict[str, Any]]] = {}
    unmapped = []
    for spec in specs:
        c = counts.setdefault(spec.category, Counter())
        c["prompts"] += 1
        why = unmapped_reasons(spec)
        if why:
            c["unmapped"] += 1
            unmapped.append({"id": spec.prompt_id, "prompt": spec.prompt, "why": why,
                             "notes": list((spec.meta or {}).get("notes", []))})
        elif len(shown.setdefault(spec.category, [])) < examples:
            shown[spec.category].append({
                "id": spec.prompt_id, "prompt": spec.prompt, "label": spec.label,
                "entities": [e.phrase for e in spec.entities],
                "relation": [spec.prompt[a:b] for a, b in spec.relation_spans],
                "labels": len(spec.label_set)})
    table = {cat: {"prompts": c["prompts"], "mapped": c["prompts"] - c["unmapped"], "unmapped": c["unmapped"]}
             for cat, c in counts.items()}
    return {"counts": table, "examples": shown, "unmapped": unmapped}


def to_text(name: str, version: str, summary: dict[str, Any]) -> str:
    counts = summary["counts"]
    lines = [f"benchmark {name} ({version}): {sum(c['prompts'] for c in counts.values())} prompts", "",
             "| category | prompts | mapped | unmapped |", "|---|---|---|---|"]
    lines += [f"| {cat} | {c['prompts']} | {c['mapped']} | {c['unmapped']} |" for cat, c in counts.items()]
    lines += ["", "examples:"]
    for cat, rows in summary["examples"].items():
        for r in rows:
            lines.append(f"  {r['id']}: {r['prompt']!r} -> entities {r['entities']}, relation words "
                         f"{r['relation']}, label {r['label']!r} (of {r['labels']})")
    lines += ["", f"unmapped ({len(summary['unmapped'])}):"]
    for u in summary["unmapped"]:
        note = f"; {u['notes'][0]}" if u["notes"] else ""
        lines.append(f"  {u['id']}: {u['prompt']!r}: {', '.join(u['why'])}{note}")
    return "\n".join(lines) + "\n"


def main(cfg: DictConfig) -> int:
    from omegaconf import OmegaConf

    bcfg = OmegaConf.to_container(cfg.benchmark, resolve=True)
    benchmark = registry.build("benchmark", bcfg)
    specs = benchmark.prompts()
    summary = summarize(specs, int(cfg.examples))
    version = str(getattr(benchmark, "version", "unversioned"))
    print(to_text(str(bcfg["name"]), version, summary), end="")
    if cfg.get("out"):
        out = Path(str(cfg.out))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"benchmark": bcfg["name"], "version": version, **summary}, indent=1))
        print(f"written: {out}")
    return 0
