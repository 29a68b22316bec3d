"""The committed reference tables are what their committed records say, under the shipped
protocol (issue 27): a reader can recompute every cell with pandas."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cvg_bench.reproduce import protocol_hash, read_exported, shipped_protocol, table_from_records

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "reference" / "shapes_heldout"
PROTOCOL = shipped_protocol("shapes_heldout")


@pytest.mark.parametrize("split", ["seen", "heldout"])
def test_the_committed_table_is_recomputed_from_its_committed_records(split):
    records = OUT / f"records_{split}.jsonl.gz"
    assert records.is_file(), f"{records} is not committed"
    recomputed = table_from_records(records, PROTOCOL["headline"], PROTOCOL["validity"],
                                    PROTOCOL["baseline"]).reset_index()
    written = pd.read_csv(OUT / f"table_{split}.csv")
    pd.testing.assert_frame_equal(recomputed, written, check_dtype=False)
    meta = json.loads((OUT / f"table_{split}.json").read_text())
    assert meta["protocol"]["hash"] == protocol_hash(PROTOCOL)  # made under the shipped file
    assert protocol_hash(PROTOCOL) in (OUT / f"table_{split}.md").read_text().splitlines()[0]


def test_the_committed_records_cover_the_protocol():
    """Every method on its categories, the split's seeds and prompts: nothing dropped."""
    df = read_exported(OUT / "records_heldout.jsonl.gz")
    report = PROTOCOL["report"]
    assert set(df["seed"]) == set(report["seeds"])
    cats = {m: s["categories"] for m, s in PROTOCOL["methods"].items()}
    cats[PROTOCOL["baseline"]] = sorted({c for v in cats.values() for c in v})
    assert set(df["method"]) == set(cats)
    for method, want in cats.items():
        sub = df[df["method"] == method]
        assert set(sub["category"]) == set(want), method
        assert len(sub) == len(want) * report["limit"] * len(report["seeds"]), method
    chosen = json.loads((OUT / "chosen_settings.json").read_text())
    assert chosen["protocol"]["hash"] == protocol_hash(PROTOCOL)
    assert set(chosen["methods"]) == set(cats)


def test_the_cvg_row_names_a_classifier_the_judge_never_trained():
    """The table's CVG classifier: its data were seen compositions only, no generated video was
    labelled by the evaluation oracle, and the Markdown table says who labelled them."""
    meta = json.loads((OUT / "table_heldout.json").read_text())
    info = meta["training_data"]["cvg"]
    assert info["classifier"] == PROTOCOL["methods"]["cvg"]["fixed"]["classifier"]
    data = info["data"]
    assert data["split"] == "seen" and (data["labeller"] or {}).get("name") != "oracle"
    assert set(meta["training_data"]) == {"cvg"}  # no other method of the table learned anything
    md = (OUT / "table_heldout.md").read_text()
    assert f"cvg: {info['classifier']}" in md and "labelled by the `shapes` labeller" in md
