"""Dependency messages a normal run should not print, each silenced for a stated reason.

Causes are fixed where they are ours (``dtype=`` instead of the deprecated ``torch_dtype=``);
what is left is what diffusers says about choices this project makes on purpose:

- ``TextToVideoSDPipeline`` is deprecated in diffusers, yet it is the only diffusers pipeline
  for the ModelScope/ZeroScope UNet3D (and the tiny generator): the notice is dropped.
- "Expected types for vae ... PixelFoldVAE": the tiny generator's lossless 2x2 pixel fold
  stands in for a VAE by design (docs/generators.md): the notice is dropped for that class only.
- Loading progress bars of diffusers and transformers (a run has its own progress bar).
"""

from __future__ import annotations

import logging

_DROPPED = (
    "The TextToVideoSDPipeline has been deprecated",
    "PixelFoldVAE",
)
_installed = False


class _DropKnown(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in _DROPPED)


def quiet_dependencies() -> None:
    """Install the filters once (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    logging.getLogger("diffusers.pipelines.pipeline_utils").addFilter(_DropKnown())
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


def dtype_kwarg(dtype) -> dict:
    """``from_pretrained``'s dtype argument: ``dtype=`` where diffusers has it (``torch_dtype=``
    is deprecated there), ``torch_dtype=`` on older diffusers."""
    from diffusers.utils import deprecation_utils

    key = "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"
    return {key: dtype}
