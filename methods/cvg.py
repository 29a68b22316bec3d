"""CVG guided sampling (inference steps (a)-(e) of shared/seed/cvg-method.txt)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import cvg_bench
from cvg_bench.cvg.classifier import CVGClassifier
from cvg_bench.cvg.features import entity_maps, kp_tokens
from cvg_bench.generators.base import AttentionMaps, StepContext
from cvg_bench.guidance import EnergyGuidance
from cvg_bench.registry import register
from cvg_bench.types import PromptSpec

# Under the cvg_bench package itself: this file sits in methods/ in a checkout but in
# cvg_bench/methods/ once installed, so it must not be located from this file.
ASSETS = Path(cvg_bench.__file__).resolve().parent / "assets"
DEFAULT_CLASSIFIER = ASSETS / "cvg_classifier_v3"


def shipped_classifiers() -> list[str]:
    """The classifiers under cvg_bench/assets/, by name (a folder holding config.json)."""
    return sorted(str(p.parent.relative_to(ASSETS)) for p in ASSETS.rglob("config.json")
                  if (p.parent / "classifier.safetensors").is_file())


def resolve_classifier(classifier: str | None) -> Path:
    """``classifier``: None (the default, DEFAULT_CLASSIFIER), a folder, or the name of a
    shipped classifier (e.g. ``cvg_classifier_v3``, found under cvg_bench/assets/ whatever the
    working directory)."""
    if classifier is None:
        return DEFAULT_CLASSIFIER
    path = Path(classifier)
    if (path / "config.json").is_file():
        return path
    if not path.is_absolute() and ".." not in path.parts and (ASSETS / path / "config.json").is_file():
        return ASSETS / path
    raise FileNotFoundError(f"classifier={classifier!r}: no CVG classifier there (config.json "
                            f"missing); accepted: a folder made by `python -m cvg_bench train "
                            f"component=classifier`, or a shipped one: {', '.join(shipped_classifiers())}")


@register("method", "cvg")
class CVG(EnergyGuidance):
    """CVG: gradient of a cross-attention classifier's -log s_t[y] on the first steps."""

    def __init__(self, classifier: str | None = None, guided_steps: int = 2, eta: float = 0.1,
                 eta_schedule: str = "constant", grad_norm: str = "normalize",
                 max_grad_norm: float = 1.0, iterations: int = 1,
                 energy_threshold: float | None = None,
                 allow_other_generator: bool = False, symmetrize: bool = False) -> None:
        # energy_threshold: a guided step whose -log s_t[y] is already below it is not taken.
        # With grad_norm=normalize every step moves z_t by eta * ||z_t||, however satisfied
        # the classifier is; the threshold spends those steps only where they are needed.
        super().__init__(guided_steps=guided_steps, eta=eta, eta_schedule=eta_schedule,
                         grad_norm=grad_norm, max_grad_norm=max_grad_norm, iterations=iterations,
                         energy_threshold=energy_threshold)
        folder = resolve_classifier(classifier)
        self.classifier = CVGClassifier.load(folder)
        self.classifier_version = CVGClassifier.fingerprint(folder)
        self.classifier_name = (str(folder.relative_to(ASSETS)) if folder.is_relative_to(ASSETS)
                                else str(classifier))
        self.classifier.requires_grad_(False)
        self.classifier.eval()  # guidance is inference: no dropout in the aggregator
        trained = self.classifier.features.steps
        missing = [s for s in range(guided_steps) if s not in trained]
        if missing:
            raise ValueError(f"guided_steps={guided_steps} needs classifier steps {missing}, but "
                             f"the classifier was trained on T = {list(trained)}")
        self.supported_categories = tuple(self.classifier.label_sets)
        self.allow_other_generator = allow_other_generator
        self.symmetrize = symmetrize

    def training_data(self) -> dict:
        """The classifier's data provenance as its training saved it (``data`` in its meta),
        with its variant and backbone; ``unrecorded`` for a classifier trained before that."""
        meta = self.classifier.meta
        return {"classifier": self.classifier_name, "variant": meta.get("variant"),
                "dual": meta.get("dual"), "backbone": self.classifier.backbone_cfg.get("name"),
                "data": meta.get("data", "unrecorded")}

    def version(self) -> str:
        """A hash of the classifier's weights and config (its docs and report are not part)."""
        return f"cvg_classifier:{self.classifier_version}"

    def prepare(self, generator, spec: PromptSpec) -> dict[str, Any]:
        """(a) K(p) and y; the same T, L, H as at training (checked). K(p) is
        ``features.kp_spec``'s, as in the feature cache; y is the prompt's label, or
        ``as_written`` for a relative head (attribute binding)."""
        features = self.classifier.features
        n_steps = len(generator.timesteps())
        if features.num_inference_steps != n_steps:
            raise ValueError(f"classifier was trained for a {features.num_inference_steps}-step "
                             f"sampler; the generator samples with {n_steps} steps")
        self._check_generator(generator)
        self.classifier.to(getattr(generator, "device", "cpu"))  # maps arrive on its device
        tokens = kp_tokens(generator, spec)
        target = self.classifier.guidance_label(spec.category, spec.label)
        return {"tokens": tokens, "selection": features.selection(tokens), "spec": spec,
                "target": self.classifier.label_index(spec.category, target)}

    def _check_generator(self, generator) -> None:
        """The classifier reads one generator's maps: another generator's (other weights) are
        out of its training distribution, so using it there is an explicit choice."""
        trained_on = self.classifier.meta.get("generator")
        version = generator.version()
        if trained_on and trained_on != version and not self.allow_other_generator:
            raise ValueError(
                f"the CVG classifier was trained on the cross-attention maps of generator "
                f"{trained_on!r}, not of {version!r}; train one for this generator "
                "(python -m cvg_bench train component=classifier) or set "
                "method.allow_other_generator=true")

    def energy(self, attn: AttentionMaps, state: dict[str, Any], ctx: StepContext) -> torch.Tensor:
        """(b)-(c): L_comp = -log s_t[y], s_t = C(theta_agg(A_t)) over the prompt's Y."""
        clf, spec = self.classifier, state["spec"]
        maps, _ = entity_maps(attn, state["tokens"], clf.features)
        maps = maps.float()  # the classifier runs in float32 whatever the generator's dtype
        slot = torch.tensor([clf.step_slot(ctx.step_index)], device=maps.device)
        score = clf.symmetrized_log_probs if self.symmetrize else clf.log_probs
        log_s = score(maps[None], slot, spec.category, spec.label_set)
        return -log_s[0, state["target"]]
