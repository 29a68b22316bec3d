"""Base class of guidance methods."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from cvg_bench.types import PromptSpec

if TYPE_CHECKING:
    from cvg_bench.generators.base import Generator, StepHook


class GuidanceMethod(ABC):
    """A method that may edit z_t at each denoising step of a generator.

    ``make_hook`` is called once per sample; it returns the per-step hook the generator
    calls (or ``None`` for no guidance). Methods read the target composition from ``spec``.
    """

    #: prompt categories this method can guide; ``None`` means any.
    supported_categories: tuple[str, ...] | None = None

    def check_spec(self, spec: PromptSpec) -> None:
        """Fail clearly on a prompt this method cannot guide."""
        cats = self.supported_categories
        if cats is not None and spec.category not in cats:
            name = getattr(self, "registered_name", type(self).__name__)
            raise ValueError(
                f"method {name!r} cannot guide category {spec.category!r} "
                f"(prompt {spec.prompt_id!r}); it supports: {', '.join(cats)}"
            )

    def version(self) -> str | None:
        """Identity of the method's trained weights (None for a method without weights);
        recorded in the run's manifest so a retrained model cannot resume into old samples."""
        return None

    def training_data(self) -> dict | None:
        """What made the data of the method's learned parts (sources, split, the labeller of
        generated videos), recorded in the run's manifest so that a table row can name it.
        None for a method that learned nothing."""
        return None

    @abstractmethod
    def make_hook(self, generator: "Generator", spec: PromptSpec) -> "StepHook | None":
        """The per-step hook for one sample, or None when the method does nothing."""
