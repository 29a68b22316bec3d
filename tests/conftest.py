"""Fixtures shared by several test files."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny models run fastest on one thread, and the machine is shared.

    Module-scoped and opt-in: a test file asks for it with
    ``pytestmark = pytest.mark.usefixtures("torch_one_thread")``."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session", autouse=True)
def shipped_assets_untouched():
    """No test may write into cvg_bench/assets (the shipped weights): every file's hash after
    the session equals its hash before (a test once overwrote a shipped ablation classifier
    through the classifier config's default ablations_out)."""
    import hashlib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "cvg_bench" / "assets"

    def snapshot() -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}

    before = snapshot()
    yield
    after = snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"tests wrote into cvg_bench/assets: {changed}"
