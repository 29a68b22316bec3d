"""Tiny generator training: loss goes down, checkpoints, exact resume, export, config errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from safetensors.torch import load_file

from cvg_bench.generators import tiny_training as tt
from cvg_bench.generators.tiny import TinyGenerator
from cvg_bench.types import PromptSpec

SMALL = [
    "batch_size=4", "data.num_frames=4", "data.height=16", "data.width=16", "log_every=1",
    "preview_every=0", "warmup_steps=1", "lr=3e-3", "num_threads=1",
    "model.max_length=8", "model.unet.sample_size=8", "model.unet.block_out_channels=[16,32]",
    "model.unet.cross_attention_dim=32", "model.text_encoder.hidden_size=32",
    "model.text_encoder.intermediate_size=64", "model.text_encoder.projection_dim=32",
]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


class Squares:
    """A stand-in data source: one coloured square whose colour the prompt names."""

    colours = ("red", "green", "blue")

    def batch(self, step, batch_size):
        rng = np.random.default_rng([0, step])
        prompts, videos = [], []
        for _ in range(batch_size):
            c, x = int(rng.integers(3)), int(rng.integers(0, 12))
            v = np.zeros((4, 16, 16, 3), np.uint8)
            v[:, 4:8, x : x + 4, c] = 255
            prompts.append(f"a {self.colours[c]} square")
            videos.append(v)
        return prompts, np.stack(videos)

    def vocabulary(self):
        return {"a", "square", *self.colours}


def _cfg(tmp_path, name, steps, *extra):
    return tt.load_config(None, [
        f"checkpoint_dir={tmp_path / name / 'ck'}", f"export_dir={tmp_path / name / 'export'}",
        f"steps={steps}", "eval_batches=1", *SMALL, *extra,
    ])


def test_training_lowers_the_loss_checkpoints_and_exports(tmp_path):
    out = tt.train_tiny_generator(_cfg(tmp_path, "a", 12, "checkpoint_every=5", "eval_every=12",
                                       "keep_checkpoints=2"), data=Squares())
    rows = list(csv.DictReader(open(tmp_path / "a" / "ck" / "loss.csv")))
    assert [int(r["step"]) for r in rows] == list(range(0, 13))
    evals = {int(r["step"]): float(r["eval_loss"]) for r in rows if r["eval_loss"]}
    assert set(evals) == {0, 12} and evals[12] < 0.9 * evals[0], evals
    assert (tmp_path / "a" / "ck" / "latest").read_text().strip() == "step_0000012"
    assert (tmp_path / "a" / "ck" / "step_0000010" / "model.safetensors").is_file()
    info = json.loads((out / "TRAINING.json").read_text())
    assert info["steps"] == 12 and info["seed"] == 0 and info["final_loss_mean_last_100"] > 0
    gen = TinyGenerator(path=str(out), num_frames=4, height=16, width=16, num_inference_steps=2)
    assert gen.sample(PromptSpec("x", "a red square", "t"), 0).video.shape == (4, 16, 16, 3)


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    tt.train_tiny_generator(_cfg(tmp_path, "once", 6, "checkpoint_every=100"), data=Squares())
    tt.train_tiny_generator(_cfg(tmp_path, "twice", 3, "checkpoint_every=100"), data=Squares())
    tt.train_tiny_generator(_cfg(tmp_path, "twice", 6, "checkpoint_every=100"), data=Squares())
    a = load_file(tmp_path / "once" / "ck" / "step_0000006" / "model.safetensors")
    b = load_file(tmp_path / "twice" / "ck" / "step_0000006" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    rows = list(csv.DictReader(open(tmp_path / "twice" / "ck" / "loss.csv")))
    assert [int(r["step"]) for r in rows] == list(range(0, 7))


def test_data_workers_render_the_same_batches_in_step_order(tmp_path):
    """data.num_workers renders ahead in other processes: same batches, same weights."""
    inline = list(tt.step_batches(Squares(), 2, 7, 3))
    ahead = list(tt.step_batches(Squares(), 2, 7, 3, num_workers=2))
    assert [b[0] for b in ahead] == list(range(2, 7))
    assert all(a[1] == b[1] and np.array_equal(a[2], b[2]) for a, b in zip(inline, ahead))
    tt.train_tiny_generator(_cfg(tmp_path, "w0", 4, "checkpoint_every=100"), data=Squares())
    tt.train_tiny_generator(_cfg(tmp_path, "w2", 4, "checkpoint_every=100", "data.num_workers=2"),
                            data=Squares())
    a = load_file(tmp_path / "w0" / "ck" / "step_0000004" / "model.safetensors")
    b = load_file(tmp_path / "w2" / "ck" / "step_0000004" / "model.safetensors")
    assert all((a[k] == b[k]).all() for k in a)


def test_config_errors_name_the_bad_key_and_values(tmp_path):
    with pytest.raises(ValueError, match="stepz"):
        tt.load_config(None, ["stepz=3"])
    with pytest.raises(ValueError, match="lr_schedule"):
        tt.lr_at(tt.load_config(None, ["lr_schedule=linear", "warmup_steps=0"]), 5)
    tt.train_tiny_generator(_cfg(tmp_path, "m", 1), data=Squares())
    with pytest.raises(ValueError, match="was started with model"):
        tt.train_tiny_generator(_cfg(tmp_path, "m", 2, "model.text_encoder.num_hidden_layers=1"), data=Squares())


def test_shapes_data_source_draws_seen_prompts():
    pytest.importorskip("cvg_bench.shapes.render")
    from cvg_bench.shapes.grammar import is_heldout, parse

    cfg = tt.load_config(None, ["data.num_frames=4", "data.height=16", "data.width=16"])
    data = tt.make_data_source(cfg)
    prompts, videos = data.batch(3, 5)
    assert videos.shape == (5, 4, 16, 16, 3) and videos.dtype == np.uint8
    assert not any(is_heldout(parse(p)) for p in prompts)
    again, _ = data.batch(3, 5)
    assert again == prompts
    assert {"red", "circle", "left", "above"} <= data.vocabulary()


def test_export_lists_every_resumed_run_and_warns_of_an_lr_jump(tmp_path, capsys):
    """A model trained over resumed runs with other keys keeps each command; a resumed run
    whose schedule keys differ from the last one's (lr jumps) is warned about."""
    tt.train_tiny_generator(_cfg(tmp_path, "s", 3, "checkpoint_every=100"), data=Squares())
    assert "warning" not in capsys.readouterr().err
    out = tt.train_tiny_generator(_cfg(tmp_path, "s", 5, "checkpoint_every=100", "lr=1e-4"), data=Squares())
    assert "resuming at step 3 with lr 0.0001" in capsys.readouterr().err
    info = json.loads((out / "TRAINING.json").read_text())
    assert [s["start_step"] for s in info["segments"]] == [0, 3]
    assert "lr=0.0001" in info["segments"][1]["overrides"]
    assert "lr=0.003" in info["segments"][0]["overrides"] and "steps=3" in info["segments"][0]["overrides"]
    text = (out / "TRAINING.md").read_text()
    assert "steps 0-3" in text and "steps 3-5" in text
    again = tt.train_tiny_generator(_cfg(tmp_path, "s", 5, "export_only=true", "lr=1e-4"), data=Squares())
    assert len(json.loads((again / "TRAINING.json").read_text())["segments"]) == 2
    tt.train_tiny_generator(_cfg(tmp_path, "s", 5, "checkpoint_every=100", "lr=1e-4"), data=Squares())
    assert len(tt.read_segments(tmp_path / "s" / "ck")) == 2  # nothing left to train: no new run
    assert "earlier runs" in tt._segments_md([{"start_step": 7, "started_at": "t", "command": "c"}], 9)


def test_warm_start_adds_position_to_a_trained_model(tmp_path):
    """init_from: a new run starts from a saved pipeline's weights; the zero-initialised
    position projection is the only new parameter, so step 0 computes the source's function."""
    import torch

    from cvg_bench.generators.positional_unet3d import PositionalUNet3DConditionModel
    from cvg_bench.generators.tiny import load_tiny_pipeline

    source = tt.train_tiny_generator(_cfg(tmp_path, "src", 2, "checkpoint_every=100"), data=Squares())
    cfg = _cfg(tmp_path, "pos", 0, f"init_from={source}", "model.position_frequencies=2")
    tr = tt.build_trainer(cfg, Squares())
    tt._release_lock(tmp_path / "pos" / "ck")
    assert isinstance(tr.pipe.unet, PositionalUNet3DConditionModel)
    tr.pipe.unet.eval()  # UNet3D's temporal convolutions have dropout in train mode
    tr.pipe.text_encoder.eval()
    src = load_tiny_pipeline(source)
    x, ids = torch.randn(1, 12, 4, 8, 8), src.tokenizer(["a red square"], return_tensors="pt").input_ids
    with torch.no_grad():
        e_src, e_new = src.text_encoder(ids)[0], tr.pipe.text_encoder(ids)[0]
        assert torch.equal(e_src, e_new)
        assert torch.equal(src.unet(x, 7, e_src).sample, tr.pipe.unet(x, 7, e_new).sample)
    assert json.loads((tmp_path / "pos" / "ck" / "run.json").read_text())["init_from"] == str(source)
    out = tt.train_tiny_generator(_cfg(tmp_path, "pos", 2, f"init_from={source}", "model.position_frequencies=2"),
                                  data=Squares())
    assert isinstance(load_tiny_pipeline(out).unet, PositionalUNet3DConditionModel)
    with pytest.raises(ValueError, match="UNet weights do not match"):
        tt.build_trainer(_cfg(tmp_path, "wide", 0, f"init_from={source}", "model.unet.layers_per_block=2"), Squares())


def test_high_noise_share_redraws_timesteps_and_zero_keeps_old_draws():
    import torch

    def gen():
        return torch.Generator().manual_seed(3)

    assert torch.equal(tt.draw_timesteps(gen(), 64, 1000), torch.randint(0, 1000, (64,), generator=gen()))
    assert (tt.draw_timesteps(gen(), 64, 1000, high_share=1.0, high_min_t=900) >= 900).all()
    half = tt.draw_timesteps(gen(), 4000, 1000, high_share=0.5, high_min_t=600)
    assert 0.66 < float((half >= 600).float().mean()) < 0.74  # 0.5 + 0.5 * 0.4
    with pytest.raises(ValueError, match="high_noise_min_t=1000"):
        tt.draw_timesteps(gen(), 4, 1000, high_share=0.5, high_min_t=1000)


def test_position_projection_gets_its_own_learning_rate(tmp_path):
    plain = tt.build_trainer(_cfg(tmp_path, "p", 0), Squares())
    tt._release_lock(tmp_path / "p" / "ck")
    assert [g["lr_scale"] for g in plain.optimizer.param_groups] == [1.0, 1.0]  # UNet, text encoder
    cfg = _cfg(tmp_path, "q", 1, "model.position_frequencies=2", "position_lr_scale=10", "warmup_steps=0")
    tr = tt.build_trainer(cfg, Squares())
    tt._release_lock(tmp_path / "q" / "ck")
    tt.train_step(tr, Squares())
    base, _, position = tr.optimizer.param_groups
    assert [p.shape for p in position["params"]] == [tr.pipe.unet.position_proj.weight.shape,
                                                     tr.pipe.unet.position_proj.bias.shape]
    assert position["lr"] == pytest.approx(10 * base["lr"]) and base["lr"] == pytest.approx(3e-3)


def test_text_encoder_lr_scale_applies_on_resume_from_a_one_group_state(tmp_path):
    """A checkpoint saved with one group (earlier runs) resumes with the text encoder at its
    new scale, and the Adam moments follow their parameters into the new groups."""
    tr = tt.build_trainer(_cfg(tmp_path, "t", 1, "warmup_steps=0"), Squares())
    tt._release_lock(tmp_path / "t" / "ck")
    tt.train_step(tr, Squares())
    state = tr.optimizer.state_dict()
    one_group = {"state": state["state"], "param_groups": [
        {**state["param_groups"][0], "params": [i for g in state["param_groups"] for i in g["params"]]}]}
    cfg = _cfg(tmp_path, "u", 2, "warmup_steps=0", "text_encoder_lr_scale=5")
    resumed = tt.build_trainer(cfg, Squares())
    tt._release_lock(tmp_path / "u" / "ck")
    tt.load_optimizer_state(resumed.optimizer, one_group)
    unet, text = resumed.optimizer.param_groups
    assert text["lr_scale"] == 5.0 and unet["lr_scale"] == 1.0
    first_text = text["params"][0]
    i = len(unet["params"])  # the text encoder's first parameter in the flat order
    assert first_text.shape == next(tr.pipe.text_encoder.parameters()).shape
    assert resumed.optimizer.state[first_text]["exp_avg"].equal(state["state"][i]["exp_avg"])
    tt.train_step(resumed, Squares())
    assert text["lr"] == pytest.approx(5 * unet["lr"]) and unet["lr"] == pytest.approx(3e-3)
    with pytest.raises(ValueError, match="another model config"):
        tt.load_optimizer_state(resumed.optimizer, {"state": {}, "param_groups": [{"params": [0, 1]}]})


def test_position_init_std_draws_the_projection_and_needs_a_positional_unet(tmp_path):
    tr = tt.build_trainer(_cfg(tmp_path, "r", 0, "model.position_frequencies=2", "position_init_std=0.05"), Squares())
    tt._release_lock(tmp_path / "r" / "ck")
    w = tr.pipe.unet.position_proj.weight.detach()
    assert 0.03 < float(w.std()) < 0.07
    with pytest.raises(ValueError, match="position_frequencies"):
        tt.build_trainer(_cfg(tmp_path, "s", 0, "position_init_std=0.05"), Squares())
