"""Scorer ``vlm``: a transformers vision-language model as judge, with T2V-CompBench's MLLM
protocol (``MLLM_eval/eval_*.py``, KaiyueSun98/T2V-CompBench; the benchmark uses LLaVA-1.6-34B).

Frames: 16 evenly spaced frames are taken (``np.linspace``); for the grid-based categories
``num_frames`` (6) of them, evenly spaced again with the first and last kept, are tiled into one
image, two per row (the benchmark's 3 x 2 grid). Each prompt is a two-turn conversation: the
judge first describes the video in 20 words, then answers a scoring question in JSON, both turns
with the image. The questions (``TEMPLATES``) are the project's own wording of the benchmark's:
the same structure, rubric levels, scales and JSON keys (its exact texts are not shipped, its
repository having no licence; ``templates: <yaml file>`` substitutes any of them). They are
filled from the prompt's metadata (T2V-CompBench's JSON records) or, for other suites such as
the shapes world, from the spec's entities and label.

Per category, raw (the benchmark's scale) -> normalised (the benchmark's normalisation):

- ``consistent_attribute_binding``: two multiple-choice questions (A: clearly portrayed
  throughout, B: present in some frames, C: not correctly portrayed, D: not present), one per
  attribute phrase; the option pair maps to 5, 4.5, 4, 3.5, 3, 2.8, 2.5, 2, 1.5, 1 (AA, AB, BB,
  AC, AD, BC, BD, CC, CD, DD, either order) -> ``(s - 1) / 4``.
- ``action_binding``: a 0-5 rubric over both objects and both actions -> ``s / 5``.
- ``object_interactions``: a 1-5 rubric -> ``(s - 1) / 4``.
- ``dynamic_attribute_binding``: no grid. The first and the last frame are each described and
  rated 1-5 against both states (s1, s1' on the first frame for state 0 and state 1; s2, s2'
  on the last); every intermediate frame is asked whether it shows state 0 (2), state 1 (1) or
  neither (0). Score = ``(s1/5 (1 - s1'/5) / 2 + (1 - s2/5) s2'/5 / 2) * flag`` where ``flag``
  = 1 when more than 80% of the intermediate frames match a state (``dynamic_intermediate:
  false`` skips that check: flag = 1). Raw = normalised (already in [0, 1]).

An answer that cannot be parsed (no JSON, missing key, out of range) gives NaN with the replies in
``details`` (the benchmark drops such "bad replies" from its average; leaderboards treat NaN as
missing). Spatial relationships, motion and numeracy have no MLLM protocol in the benchmark
(``detector`` and ``motion`` score them): NaN with the reason.

Deviation: the benchmark samples with temperature 0.2; the default here is greedy decoding
(``temperature: 0``), reproducible run to run. Set ``temperature: 0.2`` to match it (then
``seed`` fixes the sampling).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import string
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from cvg_bench.registry import register
from cvg_bench.scorers._common import (
    check_video,
    clean,
    hf_download_hint,
    hf_identity,
    metadata,
    missing_weights,
    nan_result,
    not_ready,
    require_local_folder,
    resolve_model_path,
    sample_indices,
    torch_device,
)
from cvg_bench.scorers.base import Scorer, ScoreResult
from cvg_bench.types import PromptSpec, Video

METRICS = ("score",)
CATEGORIES = ("consistent_attribute_binding", "dynamic_attribute_binding", "action_binding",
              "object_interactions")

# ---- question texts ----------------------------------------------------------------------------
# The project's own wording of T2V-CompBench's questions: same conversation structure, same
# rubric levels and scales (so the benchmark's normalisation applies), same JSON keys. The
# benchmark's exact texts are not shipped (its repository has no licence); to reproduce them,
# write them into a YAML file with these keys and placeholders and set ``templates: <file>``.
_GRID = ("The image shows key frames of one video as a grid, in time order (left to right, then "
         "top to bottom).")
_JSON_SCORE = ('Reply in JSON with the keys "score" (a number, e.g. 2) and "explanation" (at most '
               "20 words).")
TEMPLATES: dict[str, str] = {
    "consistent_describe": _GRID + " In at most 20 words, describe the video, looking closely at "
    "every character or object across the frames and at its visible attributes.",
    "consistent_judge": (
        "Based on your description, answer two multiple-choice questions.\n"
        "Question 1 (choose one of A1, B1, C1, D1):\n"
        "A1: '{p1}' is shown clearly in all the frames.\n"
        "B1: '{p1}' is shown in some of the frames only.\n"
        "C1: '{p1}' is shown, but not correctly.\n"
        "D1: '{p1}' is not shown.\n"
        "Question 2 (choose one of A2, B2, C2, D2):\n"
        "A2: '{p2}' is shown clearly in all the frames.\n"
        "B2: '{p2}' is shown in some of the frames only.\n"
        "C2: '{p2}' is shown, but not correctly.\n"
        "D2: '{p2}' is not shown.\n"
        'Reply in JSON with the keys "option" (your two choices separated by a comma, e.g. '
        '"A1,B2") and "explanation" (at most 20 words).'),
    "action_describe": _GRID + " In at most 20 words, describe the video: name every character "
    "or object that appears across the frames and say what each one does.",
    "action_judge": (
        "Based on the video and your description, rate how well the video shows the text "
        "'{prompt}', from 0 to 5:\n"
        "5: {o1} and {o2} both appear, and {a1}, and {a2}.\n"
        "4: {o1} and {o2} both appear, but only one of the actions ({a1}; {a2}) is shown.\n"
        "3: {o1} and {o2} both appear, but neither action is shown.\n"
        "2: only one of {o1} and {o2} appears, and it does its action from the text.\n"
        "1: only one of {o1} and {o2} appears, and it does not do its action from the text.\n"
        "0: neither {o1} nor {o2} appears.\n" + _JSON_SCORE),
    "interaction_describe": _GRID + " In at most 20 words, describe the video, focusing on how "
    "the characters or objects in it interact.",
    "interaction_judge": (
        "Based on the video and your description, rate how well the video shows the text "
        "'{prompt}', from 1 to 5:\n"
        "5: every object taking part in the interaction appears, and the interaction is right.\n"
        "4: every object taking part appears, and the interaction is nearly right.\n"
        "3: every object taking part appears, but the interaction is wrong.\n"
        "2: some of the objects taking part are missing.\n"
        "1: none of the objects taking part appears.\n" + _JSON_SCORE),
    "dynamic_describe": "In at most 20 words, describe this image, mentioning the attributes of "
    "every object in it.",
    "dynamic_judge": (
        "Based on the image and your description, rate how well the image matches the text "
        "'{state}', from 1 to 5:\n"
        "5: the image matches the text exactly.\n"
        "4: the image roughly matches the text, with a slightly different attribute.\n"
        "3: the image roughly matches the text, but the attribute is completely different.\n"
        "2: the image does not match the text.\n"
        "1: nothing in the image relates to the text.\n" + _JSON_SCORE),
    "dynamic_intermediate": (
        "Does this image match the text '{s0}' or the text '{s1}'? Score 2 if it matches "
        "'{s0}', 1 if it matches '{s1}', 0 if it matches neither.\n" + _JSON_SCORE),
}
#: The placeholders each template is filled with.
TEMPLATE_FIELDS: dict[str, frozenset] = {
    "consistent_describe": frozenset(), "consistent_judge": frozenset({"p1", "p2"}),
    "action_describe": frozenset(), "action_judge": frozenset({"prompt", "o1", "o2", "a1", "a2"}),
    "interaction_describe": frozenset(), "interaction_judge": frozenset({"prompt"}),
    "dynamic_describe": frozenset(), "dynamic_judge": frozenset({"state"}),
    "dynamic_intermediate": frozenset({"s0", "s1"}),
}


def load_templates(path: str | None) -> dict[str, str]:
    """The default templates, with those of a YAML/JSON file (``{name: text}``) replacing them;
    a file naming an unknown template or using an unknown placeholder is rejected."""
    templates = dict(TEMPLATES)
    if not path:
        return templates
    from pathlib import Path

    import yaml

    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"scorer 'vlm': templates file {file} not found")
    data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{file} must map template names to texts")
    for name, text in data.items():
        if name not in TEMPLATES:
            raise ValueError(f"{file}: unknown template {name!r}; known: {', '.join(TEMPLATES)}")
        used = {f for _, f, _, _ in string.Formatter().parse(str(text)) if f}
        if not used <= TEMPLATE_FIELDS[name]:
            raise ValueError(f"{file}: template {name!r} uses {sorted(used - TEMPLATE_FIELDS[name])}; "
                             f"it may use {sorted(TEMPLATE_FIELDS[name]) or 'no placeholders'}")
        templates[name] = str(text)
    return templates


# unordered option pair (letters of question 1 and 2) -> score on 1..5
OPTION_SCORES: dict[frozenset, float] = {
    frozenset("A"): 5.0, frozenset("AB"): 4.5, frozenset("B"): 4.0, frozenset("AC"): 3.5,
    frozenset("AD"): 3.0, frozenset("BC"): 2.8, frozenset("BD"): 2.5, frozenset("C"): 2.0,
    frozenset("CD"): 1.5, frozenset("D"): 1.0,
}
INTERMEDIATE_FRACTION = 0.8  # the benchmark's threshold on intermediate frames matching a state


# ---- parsing and normalisation (pure) ------------------------------------------------------------
def extract_json(text: str) -> dict | None:
    """The object between the first "{" and the last "}" of a reply, or None."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        obj = json.loads(text[start:end + 1])
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def parse_score(text: str, lo: float, hi: float) -> float | None:
    """The ``score`` of a JSON reply (a bare ``"score": n`` is accepted too), None when missing
    or outside [lo, hi]."""
    obj = extract_json(text)
    value: Any = obj.get("score") if obj else None
    if value is None:
        m = re.search(r'"?score"?\s*:\s*"?(-?\d+(?:\.\d+)?)', text)
        value = m.group(1) if m else None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if lo <= value <= hi and math.isfinite(value) else None


def parse_options(text: str) -> tuple[str, str] | None:
    """The letters chosen for question 1 and 2 of the attribute-binding reply ("A1,B2")."""
    obj = extract_json(text)
    value = obj.get("option") if obj else None
    if value is None:
        m = re.search(r'"?option"?\s*:\s*"([^"]*)"', text)
        value = m.group(1) if m else None
    if not isinstance(value, str):
        return None
    picks = {q: l for l, q in re.findall(r"\b([ABCD])([12])\b", value.upper())}
    return (picks["1"], picks["2"]) if set(picks) == {"1", "2"} else None


def option_score(letters: tuple[str, str]) -> float:
    return OPTION_SCORES[frozenset(letters)]


def dynamic_score(s1: float, s1_other: float, s2: float, s2_other: float, flag: bool) -> float:
    """``(s1/5 (1 - s1'/5) / 2 + (1 - s2/5) s2'/5 / 2) * flag``: first frame should show state 0
    (s1 high) and not state 1 (s1' low); the last frame the reverse."""
    return ((s1 / 5 * (1 - s1_other / 5)) * 0.5 + ((1 - s2 / 5) * (s2_other / 5)) * 0.5) * float(flag)


def frame_grid(frames: Sequence[np.ndarray], columns: int = 2) -> np.ndarray:
    """Frames tiled row by row, ``columns`` per row (the benchmark's 3 x 2 grid for 6 frames);
    an incomplete last row is padded with black."""
    frames = [np.asarray(f) for f in frames]
    h, w = frames[0].shape[:2]
    rows = math.ceil(len(frames) / columns)
    grid = np.zeros((rows * h, columns * w, 3), dtype=np.uint8)
    for k, f in enumerate(frames):
        r, c = divmod(k, columns)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = f
    return grid


# ---- what each category's questions are filled with -------------------------------------------
def attribute_phrases(spec: PromptSpec) -> tuple[str, str]:
    phrases = [clean(p) for p in str(metadata(spec).get("phrases", "")).split(";") if clean(p)]
    if len(phrases) < 2:
        phrases = [clean(e.phrase) for e in spec.entities]
    if len(phrases) < 2:
        raise ValueError(f"prompt {spec.prompt_id}: attribute binding needs two phrases, got {phrases}")
    return phrases[0], phrases[1]


def action_phrases(spec: PromptSpec) -> tuple[str, str, str, str]:
    """(object 1, object 1 + action, object 2, object 2 + action)."""
    md = metadata(spec)
    pairs = [md.get("phrase_0"), md.get("phrase_1")]
    if all(isinstance(p, (list, tuple)) and len(p) == 2 for p in pairs):
        (o1, a1), (o2, a2) = [(str(p[0]).split("?")[0], str(p[1]).split("?")[0]) for p in pairs]
        return o1, a1, o2, a2
    actions = re.split(r"[|/]", spec.label or "")
    if len(spec.entities) >= 2 and len(actions) == 2:  # shapes world: "growing/shrinking"
        e1, e2 = spec.entities[0].phrase, spec.entities[1].phrase
        return f"a {e1}", f"a {e1} {actions[0]}", f"a {e2}", f"a {e2} {actions[1]}"
    raise ValueError(f"prompt {spec.prompt_id}: action binding needs phrase_0/phrase_1 metadata "
                     "or two entities with a label 'action1/action2'")


def dynamic_states(spec: PromptSpec) -> tuple[str, str]:
    """(state 0, state 1): the metadata's, else the shapes world's "<colour> <shape>" pair."""
    md = metadata(spec)
    s0, s1 = clean(md.get("state 0")), clean(md.get("state 1"))
    if s0 and s1:
        return s0, s1
    parts = (spec.label or "").split("->")
    if len(parts) == 2 and spec.entities:
        noun = spec.entities[0].noun or spec.entities[0].phrase
        return f"a {parts[0].strip()} {noun}", f"a {parts[1].strip()} {noun}"
    raise ValueError(f"prompt {spec.prompt_id}: dynamic attribute binding needs 'state 0'/'state 1' "
                     "metadata or a label 'start->end'")


@register("scorer", "vlm")
class VLMScorer(Scorer):
    """A vision-language judge (LLaVA, Qwen2-VL, ...) with T2V-CompBench's MLLM protocol."""

    role: ClassVar[str] = "faithfulness"
    primary: ClassVar[str] = "score"
    higher_is_better: ClassVar[dict[str, bool]] = {"score": True}
    categories: ClassVar[tuple[str, ...] | None] = CATEGORIES

    def __init__(
        self,
        model_id: str = "llava-hf/llava-v1.6-34b-hf",
        num_frames: int = 6,
        max_new_tokens: int = 512,
        extract_frames: int = 16,
        dynamic_intermediate: bool = True,
        temperature: float = 0.0,
        seed: int = 0,
        device: str = "auto",
        dtype: str = "auto",
        templates: str | None = None,
    ) -> None:
        if num_frames < 1 or extract_frames < 2 or max_new_tokens < 1:
            raise ValueError(f"num_frames={num_frames} (>= 1), extract_frames={extract_frames} "
                             f"(>= 2), max_new_tokens={max_new_tokens} (>= 1)")
        if temperature < 0:
            raise ValueError(f"temperature={temperature} must be >= 0")
        if dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise ValueError(f"dtype={dtype!r}; accepted: auto, float32, float16, bfloat16")
        self.model_id, self.num_frames, self.max_new_tokens = model_id, num_frames, max_new_tokens
        self.extract_frames, self.dynamic_intermediate = extract_frames, dynamic_intermediate
        self.temperature, self.seed, self.device, self.dtype = temperature, seed, device, dtype
        self.templates_file = templates
        self.templates = load_templates(templates)
        self.model: Any = None
        self.processor: Any = None
        self._identity: str | None = None

    # ---- model ----
    def load(self) -> None:
        if self.model is not None:
            return
        import torch

        resolved = resolve_model_path(self.model_id)
        device = torch_device(self.device)
        dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                 "auto": torch.bfloat16 if device.startswith("cuda") else torch.float32}[self.dtype]
        try:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            require_local_folder(resolved)
            # straight onto the GPU: a 34B judge must not pass through CPU memory first
            placement = {"device_map": device} if device.startswith("cuda") else {}
            model = AutoModelForImageTextToText.from_pretrained(resolved, dtype=dtype, **placement)
            processor = AutoProcessor.from_pretrained(resolved)
        except Exception as exc:  # noqa: BLE001
            raise not_ready("vlm", "model_id", self.model_id, exc,
                            hf_download_hint(self.model_id)) from exc
        if getattr(processor, "chat_template", None) is None:
            raise not_ready("vlm", "model_id", self.model_id, None,
                            "a checkpoint whose processor has a chat template (instruction-tuned)")
        self.model, self.processor = (model if placement else model.to(device)).eval(), processor
        self._identity = hf_identity(self.model_id, resolved, model)

    def check_ready(self) -> None:
        self.load()

    def missing_weights(self) -> Exception | None:
        return None if self.model is not None else missing_weights("vlm", "model_id", self.model_id)

    def can_score(self, spec: PromptSpec) -> str | None:
        """The category is one of the MLLM-based ones and its questions can be filled."""
        reason = super().can_score(spec)
        if reason is not None:
            return reason
        fill = {"consistent_attribute_binding": attribute_phrases,
                "action_binding": action_phrases,
                "dynamic_attribute_binding": dynamic_states}.get(spec.category)
        try:
            if fill is not None:
                fill(spec)
        except ValueError as exc:
            return str(exc)
        return None

    def version(self) -> str:
        ident = self._identity or f"{self.model_id}@not-loaded"
        decoding = "greedy" if self.temperature == 0 else f"t={self.temperature},seed={self.seed}"
        texts = hashlib.sha256(json.dumps(self.templates, sort_keys=True).encode()).hexdigest()[:8]
        return (f"vlm-v1:{ident}({decoding},max_new_tokens={self.max_new_tokens},"
                f"templates={texts})")

    def generate(self, prompt: str, images: Sequence[Any]) -> str:
        """One reply to a chat-formatted ``prompt`` with ``images`` (PIL)."""
        import torch

        inputs = self.processor(images=list(images), text=prompt, return_tensors="pt")
        inputs = inputs.to(self.model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens,
                                  "do_sample": self.temperature > 0}
        if self.temperature > 0:
            kwargs["temperature"] = self.temperature
            torch.manual_seed(self.seed)
        with torch.no_grad():
            out = self.model.generate(**inputs, **kwargs)
        new = out[0, inputs["input_ids"].shape[1]:]
        return self.processor.decode(new, skip_special_tokens=True).strip()

    def chat(self, image: np.ndarray, questions: Sequence[str]) -> list[str]:
        """A conversation about one image: each question sees the earlier turns and answers."""
        from PIL import Image

        pil = Image.fromarray(np.ascontiguousarray(image))
        messages: list[dict[str, Any]] = []
        answers = []
        for k, q in enumerate(questions):
            content = ([{"type": "image"}] if k == 0 else []) + [{"type": "text", "text": q}]
            messages.append({"role": "user", "content": content})
            prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True)
            answer = self.generate(prompt, [pil])
            answers.append(answer)
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        return answers

    # ---- scoring ----
    def score(self, video: Video, spec: PromptSpec) -> ScoreResult:
        check_video(video)
        handlers: dict[str, Callable[[Video, PromptSpec], ScoreResult]] = {
            "consistent_attribute_binding": self._consistent,
            "action_binding": self._action,
            "object_interactions": self._interaction,
            "dynamic_attribute_binding": self._dynamic,
        }
        if spec.category not in handlers:
            return nan_result(METRICS, f"scorer 'vlm' scores only {', '.join(CATEGORIES)} (the "
                              f"benchmark's MLLM-based categories), not {spec.category!r}; use "
                              "'detector' (spatial_relationships, generative_numeracy) or "
                              "'motion' (motion_binding)")
        self.load()
        return handlers[spec.category](video, spec)

    def extracted(self, video: Video) -> np.ndarray:
        return video[sample_indices(len(video), self.extract_frames)]

    def grid(self, video: Video) -> np.ndarray:
        frames = self.extracted(video)
        pick = np.linspace(0, len(frames) - 1, min(self.num_frames, len(frames)), dtype=int)
        return frame_grid(frames[pick])

    @staticmethod
    def _result(raw: float | None, norm: Callable[[float], float], details: dict) -> ScoreResult:
        if raw is None:
            return nan_result(METRICS, "bad reply: the judge's answer could not be parsed", **details)
        return ScoreResult(raw={"score": float(raw)}, normalised={"score": float(norm(raw))},
                           details=details)

    def _consistent(self, video: Video, spec: PromptSpec) -> ScoreResult:
        p1, p2 = attribute_phrases(spec)
        answers = self.chat(self.grid(video), [
            self.templates["consistent_describe"],
            self.templates["consistent_judge"].format(p1=p1, p2=p2)])
        letters = parse_options(answers[1])
        raw = option_score(letters) if letters else None
        return self._result(raw, lambda s: (s - 1) / 4,
                            {"answers": answers, "options": "".join(letters) if letters else None})

    def _action(self, video: Video, spec: PromptSpec) -> ScoreResult:
        o1, a1, o2, a2 = action_phrases(spec)
        judge = self.templates["action_judge"].format(prompt=spec.prompt, o1=o1, o2=o2, a1=a1, a2=a2)
        answers = self.chat(self.grid(video), [self.templates["action_describe"], judge])
        return self._result(parse_score(answers[1], 0, 5), lambda s: s / 5, {"answers": answers})

    def _interaction(self, video: Video, spec: PromptSpec) -> ScoreResult:
        judge = self.templates["interaction_judge"].format(prompt=spec.prompt)
        answers = self.chat(self.grid(video), [self.templates["interaction_describe"], judge])
        return self._result(parse_score(answers[1], 1, 5), lambda s: (s - 1) / 4, {"answers": answers})

    def _dynamic(self, video: Video, spec: PromptSpec) -> ScoreResult:
        s0, s1 = dynamic_states(spec)
        frames = self.extracted(video)
        describe = self.templates["dynamic_describe"]
        judge0, judge1 = (self.templates["dynamic_judge"].format(state=s) for s in (s0, s1))
        first = self.chat(frames[0], [describe, judge0, judge1])
        last = self.chat(frames[-1], [describe, judge0, judge1])
        ratings = [parse_score(a, 1, 5) for a in (first[1], first[2], last[1], last[2])]
        details: dict[str, Any] = {"answers_first": first, "answers_last": last, "ratings": ratings}
        flag = True
        if self.dynamic_intermediate and len(frames) > 2:
            question = self.templates["dynamic_intermediate"].format(s0=s0, s1=s1)
            matches = []
            for frame in frames[1:-1]:
                value = parse_score(self.chat(frame, [describe, question])[1], 0, 2)
                matches.append(value)
            hits = sum(1 for v in matches if v is not None and v > 0)
            flag = hits > INTERMEDIATE_FRACTION * len(matches)
            details.update(intermediate=matches, intermediate_hits=hits)
        if any(r is None for r in ratings):
            return self._result(None, float, details)
        details["flag"] = bool(flag)
        raw = dynamic_score(*ratings, flag)  # type: ignore[arg-type]
        return self._result(raw, float, details)
