"""Structured schemas of the commands' configs (hydra checks overrides against them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

CONFIG_MODULE = "cvg_bench.configs"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


@dataclass
class RunConfig:
    method: Any = MISSING
    generator: Any = MISSING
    benchmark: Any = MISSING
    scorer: Any = field(default_factory=dict)  # name -> scorer config; every one runs
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    seed: Optional[int] = None  # one seed (hydra sweeps: seed=0,1,2); overrides seeds
    results_dir: str = "results/runs"
    force: bool = False  # recompute finished samples
    fail_fast: bool = False  # raise on the first failed sample instead of recording it
    save_videos: bool = True
    fps: int = 8
    leaderboard: bool = True  # write the benchmark's leaderboard after the run


@dataclass
class ScoreConfig:
    benchmark: Any = MISSING
    scorer: Any = field(default_factory=dict)
    videos: str = MISSING  # folder with prompts.jsonl and <id>.mp4
    label: Optional[str] = None  # the generator column in tables; default: the folder name
    results_dir: str = "results/runs"
    force: bool = False


@dataclass
class LeaderboardConfig:
    results_dirs: list[str] = field(default_factory=lambda: ["results/runs"])
    out_dir: str = "results/leaderboards"
    categories: Optional[list[str]] = None
    faithfulness: Optional[str] = None  # e.g. oracle/relation; None: each record's primary score


@dataclass
class ReportConfig:
    results_dirs: list[str] = field(default_factory=lambda: ["results/runs"])
    out_dir: str = "results/report"
    limit: Optional[int] = None  # prompts per category
    seeds: Optional[list[int]] = None
    categories: Optional[list[str]] = None
    methods: Optional[list[str]] = None  # keep only these; also the column order


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(name="score_schema", node=ScoreConfig)
    cs.store(name="leaderboard_schema", node=LeaderboardConfig)
    cs.store(name="report_schema", node=ReportConfig)
