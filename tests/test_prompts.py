"""`python -m cvg_bench prompts`: counts per category, parsed specs, the prompts that do not map."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvg_bench.cli import main as cli

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "t2vcompbench"
needs_shared = pytest.mark.skipif(not (SHARED / "meta_data").is_dir(), reason=f"no T2V-CompBench copy at {SHARED}")


@needs_shared
@pytest.mark.parametrize("version,per_category", [("v1", 100), ("v2", 200)])
def test_prompts_of_t2vcompbench(version, per_category, tmp_path, capsys):
    out = tmp_path / "summary.json"
    rc = cli(["prompts", "benchmark=t2vcompbench", f"benchmark.data_root={SHARED}", f"benchmark.version={version}",
              f"out={out}"])
    assert rc == 0
    text = capsys.readouterr().out
    summary = json.loads(out.read_text())
    counts = summary["counts"]
    assert len(counts) == 7 and all(c["prompts"] == per_category for c in counts.values())
    assert all(c["mapped"] + c["unmapped"] == c["prompts"] for c in counts.values())
    assert counts["spatial_relationships"]["unmapped"] == 0
    assert counts["object_interactions"]["mapped"] == 0  # no metadata: no entities, no label
    assert len(summary["unmapped"]) == sum(c["unmapped"] for c in counts.values())
    assert f"| spatial_relationships | {per_category} | {per_category} | 0 |" in text
    assert "spatial_relationships-0001: 'A dog running on the left of a bicycle'" in text
    assert "object_interactions-0001" in text.split("unmapped (", 1)[1]


def test_prompts_of_the_shapes_world_all_map(capsys):
    assert cli(["prompts", "benchmark=shapes", "benchmark.limit=3", "examples=1"]) == 0
    text = capsys.readouterr().out
    assert "unmapped (0):" in text and "| spatial_relationships | 3 | 3 | 0 |" in text


def test_prompts_bad_benchmark_is_one_line(capsys):
    assert cli(["prompts", "benchmark=shapes", "benchmark.limit=0"]) == 2
    assert "limit=0" in capsys.readouterr().err
