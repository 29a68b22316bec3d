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
