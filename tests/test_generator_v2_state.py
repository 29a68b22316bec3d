"""Generator v2's device transport (experiments/generator_v2/state.py): a run packed into parts
and unpacked elsewhere resumes exactly (--exact) or with bfloat16 Adam moments; an export
without its text encoder's weights is assembled back, and refuses another encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cvg_bench.generators import tiny_training as tt
from cvg_bench.generators.pretrained_text import random_bert_folder
from cvg_bench.generators.tiny import TinyGenerator
from cvg_bench.generators.tokens import spec_for_words
from experiments.generator_v2 import state

pytestmark = pytest.mark.usefixtures("torch_one_thread")

WORDS = ["a", "red", "green", "blue", "square"]


class Squares:
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
        return set(WORDS)


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return random_bert_folder(tmp_path_factory.mktemp("bert") / "enc", WORDS, split=())


def _cfg(root, bert, steps):
    return tt.load_config(None, [
        f"checkpoint_dir={root / 'ck'}", f"export_dir={root / 'export'}", f"steps={steps}", "eval_every=0",
        "batch_size=2", "data.num_frames=4", "data.height=16", "data.width=16", "log_every=1",
        "preview_every=0", "warmup_steps=1", "lr=3e-3", "num_threads=1", "freeze_text_encoder=true",
        "model.max_length=8", f"model.text_encoder_path={bert}", "model.unet.sample_size=8",
        "model.unet.block_out_channels=[16,32]", "checkpoint_every=100"])


def _weights(root, step):
    return load_file(root / "ck" / f"step_{step:07d}" / "model.safetensors")


def test_packed_state_resumes_elsewhere(bert, tmp_path):
    tt.train_tiny_generator(_cfg(tmp_path / "once", bert, 3), data=Squares())
    tt.train_tiny_generator(_cfg(tmp_path / "device", bert, 2), data=Squares())
    parts = state.pack(tmp_path / "device" / "ck", tmp_path / "out", part_mb=0.2, exact=True)
    assert len(parts) > 1 and all(p.stat().st_size <= 200_000 for p in parts)
    assert state.info(tmp_path / "out")["step"] == 2
    # a cold machine: only the parts (no init/, which the run rebuilds from its config)
    assert state.unpack(tmp_path / "out", tmp_path / "cold" / "ck") == 2
    assert not (tmp_path / "cold" / "ck" / "init").exists()
    assert state.unpack(tmp_path / "out", tmp_path / "cold" / "ck") is None  # holds it already
    tt.train_tiny_generator(_cfg(tmp_path / "cold", bert, 3), data=Squares())
    a, b = _weights(tmp_path / "once", 3), _weights(tmp_path / "cold", 3)
    assert all(torch.equal(a[k], b[k]) for k in a)  # --exact: the same as never stopping
    # the default stores Adam's moments in bfloat16: it resumes, near the exact run
    state.pack(tmp_path / "device" / "ck", tmp_path / "out16")
    state.unpack(tmp_path / "out16", tmp_path / "cold16" / "ck")
    tt.train_tiny_generator(_cfg(tmp_path / "cold16", bert, 3), data=Squares())
    c = _weights(tmp_path / "cold16", 3)
    assert max(float((a[k] - c[k]).abs().max()) for k in a) < 1e-3


def test_export_without_the_encoder_assembles_back(bert, tmp_path):
    out = tt.train_tiny_generator(_cfg(tmp_path / "run", bert, 1), data=Squares())
    tar = state.pack_export(out, tmp_path / "ret")
    assert tar.stat().st_size < sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    whole = state.assemble(tar, bert, tmp_path / "assembled")
    spec = spec_for_words("a red square", [["red", "square"]])
    kw = dict(num_frames=4, height=16, width=16, num_inference_steps=2)
    assert np.array_equal(TinyGenerator(path=str(whole), **kw).sample(spec, 0).video,
                          TinyGenerator(path=str(out), **kw).sample(spec, 0).video)
    other = random_bert_folder(tmp_path / "other", WORDS, split=(), seed=1)
    with pytest.raises(ValueError, match="not the text encoder"):
        state.assemble(tar, other, tmp_path / "wrong")
