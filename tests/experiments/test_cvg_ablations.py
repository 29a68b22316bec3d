"""CVG's ablations run at the protocol's chosen setting with exactly one thing changed."""

from __future__ import annotations

from pathlib import Path

from experiments.cvg_ablations import ABLATIONS, steps
from cvg_bench.records import safe_name
from cvg_bench.reproduce import shipped_protocol, step_runs


def test_each_ablation_changes_one_setting_of_the_chosen_cvg():
    protocol = shipped_protocol("shapes_heldout")
    chosen = ["method.classifier=cvg_classifier_v3", "method.eta=0.05", "method.guided_steps=5"]
    made = steps(protocol, Path("/tmp/x"), chosen)
    assert len(made) == len(ABLATIONS) - 1 == 4  # guided_steps=5 is CVG as chosen: left out
    assert [st.method for st in made] == [safe_name(label) for label in ABLATIONS if label != "cvg[guided_steps=5]"]
    for step, (label, extra) in zip(made, ((k, v) for k, v in ABLATIONS.items() if k != "cvg[guided_steps=5]")):
        (overrides,) = step_runs(step)  # one run each: no sweep
        method = dict(o.split("=", 1) for o in overrides if o.startswith("method."))
        want = {"method.classifier": "cvg_classifier_v3", "method.eta": "0.05", "method.guided_steps": "5",
                **dict(o.split("=", 1) for o in extra)}
        assert method == want, label
        assert "benchmark.split=heldout" in overrides and "seeds=[0,1,2,3,4,5]" in overrides


def test_an_ablation_classifier_not_shipped_is_named_before_any_run(monkeypatch):
    import experiments.cvg_ablations as ab

    monkeypatch.setitem(ab.ABLATIONS, "cvg[nothing]", ["method.classifier=no_such_classifier"])
    assert any(m.startswith("cvg[nothing]: no_such_classifier") for m in ab.missing_classifiers())
    assert not any("p+ only" in m for m in ab.missing_classifiers())  # shipped


def test_only_selects_ablations_by_label_and_names_the_accepted_ones():
    from experiments.cvg_ablations import select

    assert list(select(["cvg[p+ only]"])) == ["cvg[p+ only]"] and select(None) == ABLATIONS
    # an ablation that changes nothing of the chosen setting is CVG itself: left out
    assert "cvg[guided_steps=2]" not in select(None, ["method.eta=0.05", "method.guided_steps=2"])
    assert {"cvg[guided_steps=1]", "cvg[guided_steps=5]"} <= set(select(None, ["method.guided_steps=2"]))
    made = steps(shipped_protocol("shapes_heldout"), Path("/tmp/x"), ["method.eta=0.05"],
                 select(["cvg[p+ only]"]))
    assert len(made) == 1 and "method.classifier=cvg_classifier_v3_ablations/p_plus_only" in made[0].args
    try:
        select(["cvg[nothing]"])
    except SystemExit as exc:
        assert "accepted: cvg[guided_steps=1]" in str(exc)
    else:
        raise AssertionError("an unknown label must stop the study")


def test_the_ablation_contact_sheet_shows_vanilla_cvg_and_each_ablation_from_their_runs(monkeypatch, tmp_path):
    import pandas as pd

    import experiments.cvg_ablations as ab

    protocol = shipped_protocol("shapes_heldout")
    rows = [{"method": m, "run_hash": h, "category": c, "prompt_id": f"{c}-0", "seed": 0}
            for m, h in (("cvg", "c1"), ("layout_energy", "l1"), ("vanilla", "v1"), ("cvg[x]", "a1"))
            for c in ("spatial_relationships", "motion_binding")]
    seen = {}

    def fake_sheet(df, run_dirs, spec, path):
        seen.update(methods=list(dict.fromkeys(df["method"])), dirs=run_dirs, path=path, spec=spec)
        return path

    monkeypatch.setattr(ab, "write_contact_sheet", fake_sheet)
    out = ab.ablation_contact_sheet(pd.DataFrame(rows), protocol, tmp_path / "report",
                                    {"cvg[x]": tmp_path / "abl" / "run"}, tmp_path)
    assert out == tmp_path / "contact_sheet_ablations.png" == seen["path"]
    assert seen["methods"] == ["vanilla", "cvg", "cvg[x]"]  # no energy baseline column
    assert seen["dirs"]["cvg[x]"] == tmp_path / "abl" / "run"
    assert seen["dirs"]["vanilla"] == tmp_path / "report" / "shapes" / "vanilla__tiny__v1"
    assert seen["dirs"]["cvg"].name == "cvg__tiny__c1" and seen["spec"] == protocol["contact_sheet"]


def test_reuse_takes_an_ablation_run_from_an_earlier_protocols_report_or_ablations(tmp_path, monkeypatch):
    """The chosen setting of one protocol can be another's ablation (and back): same run hash."""
    import cvg_bench.reproduce as rp

    old, new = tmp_path / "p-old", tmp_path / "p-new"
    made = old / "report" / "shapes" / "cvg__tiny__g5"
    made.mkdir(parents=True)
    (made / "manifest.json").write_text("{}")
    monkeypatch.setattr(rp, "step_runs", lambda step: [["method=cvg"]])
    monkeypatch.setattr(rp, "run_folder_of", lambda o: new / "ablations" / "shapes" / "cvg__tiny__g5")
    assert rp.reuse_runs([object()], new / "ablations", [old], tmp_path)
    assert (new / "ablations" / "shapes" / "cvg__tiny__g5" / "manifest.json").is_file()
