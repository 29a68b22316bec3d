"""CVG's ablations run at the protocol's chosen setting with exactly one thing changed."""

from __future__ import annotations

from pathlib import Path

from experiments.cvg_ablations import ABLATIONS, steps
from cvg_bench.reproduce import shipped_protocol, step_runs


def test_each_ablation_changes_one_setting_of_the_chosen_cvg():
    protocol = shipped_protocol("shapes_heldout")
    chosen = ["method.classifier=cvg_classifier_v3", "method.eta=0.05", "method.guided_steps=5"]
    made = steps(protocol, Path("/tmp/x"), chosen)
    assert len(made) == len(ABLATIONS) == 4
    for step, (label, extra) in zip(made, ABLATIONS.items()):
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
    made = steps(shipped_protocol("shapes_heldout"), Path("/tmp/x"), ["method.eta=0.05"],
                 select(["cvg[p+ only]"]))
    assert len(made) == 1 and "method.classifier=cvg_classifier_v3_ablations/p_plus_only" in made[0].args
    try:
        select(["cvg[nothing]"])
    except SystemExit as exc:
        assert "accepted: cvg[guided_steps=1]" in str(exc)
    else:
        raise AssertionError("an unknown label must stop the study")
