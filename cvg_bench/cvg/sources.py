"""Where the classifier's training videos come from: ``data.source`` = render | folder | generate.

- ``render``: the shapes renderer (the testbed default; ``pipeline.py`` streams).
- ``folder``: a folder in the layout ``score`` reads (``prompts.jsonl``, one ``{"id", "prompt"}``
  per line, and ``<id>.mp4``), with optional per-line ``category``, ``label`` (a member of the
  prompt's label set Y; without it the video is taken to show its own prompt: y = the prompt's
  label), ``negative`` (the label of p-; without it p- is drawn from Y minus y, seeded per
  example) and ``source`` (a tag kept in the cache rows). The prompts are parsed by the
  benchmark adapter ``data.benchmark`` (its ``parse_prompt``, else its own suite looked up by
  prompt text); unparseable prompts are listed and skipped. Videos of any size and length are
  fitted to the generator's input (frames sampled evenly, frames resized).
- ``generate``: the generator samples a prompt suite (``data.benchmark``'s prompts), a labeller
  plugin (``data.labeller``) labels each video, the videos with one unambiguous label are
  written as a ``folder`` source (``data.generate.out``) and read from there.

Sources mix by weight: ``data.source={render: 0.8, folder: 0.2}`` makes a fixed, seeded plan of
which example comes from which source, so any example can be made alone (cache array tasks).
Nothing here imports a scorer or the shapes oracle: the judge never trains the contestant.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cvg_bench import registry
from cvg_bench.records import (
    UnsafeName,
    atomic_write_text,
    check_name,
    confined,
    make_temp,
)
from cvg_bench.types import PromptSpec

log = logging.getLogger(__name__)

SOURCES = ("render", "folder", "generate")
PROMPTS_FILE = "prompts.jsonl"
LINE_KEYS = ("id", "prompt", "category", "label", "negative", "source")

# Words that say a label, for building p+ / p- of a parsed (non-grammar) prompt by replacing
# its relation words (``PromptSpec.relation_spans``). T2V-CompBench's label sets.
SPATIAL_WORDS = {"left": "on the left of", "right": "on the right of", "above": "above",
                 "below": "below", "on": "on", "under": "under", "behind": "behind",
                 "in front of": "in front of"}
DIRECTION_WORDS = {"left": "to the left", "right": "to the right", "up": "upward",
                   "down": "downward"}


class SkipPrompt(ValueError):
    """A prompt the source cannot use (listed and skipped, never silently dropped)."""


# ---------------------------------------------------------------------------------------------
# Which sources, with what weights


def source_weights(source: Any) -> dict[str, float]:
    """``data.source``: a name, or a mapping name -> weight (> 0); returns normalised weights."""
    if isinstance(source, str):
        weights = {source: 1.0}
    elif isinstance(source, Mapping):
        weights = {str(k): v for k, v in source.items()}
    else:
        raise ValueError(f"data.source={source!r}; accepted: one of {', '.join(SOURCES)}, or a "
                         "mapping of them to weights, e.g. {render: 0.8, folder: 0.2}")
    bad = [k for k in weights if k not in SOURCES]
    if bad or not weights:
        raise ValueError(f"data.source names {bad or 'nothing'}; accepted: {', '.join(SOURCES)}")
    for k, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not w > 0:
            raise ValueError(f"data.source weight of {k!r} is {w!r}; accepted: a number > 0")
    total = float(sum(weights.values()))
    return {k: float(w) / total for k, w in sorted(weights.items())}


def mix_plan(weights: dict[str, float], n: int, seed: int) -> list[tuple[str, int]]:
    """Example i -> (source, j): ``round(w * n)`` examples per source (largest remainder),
    each source's j = 0, 1, ... in order, interleaved by a seeded permutation. One source:
    the identity."""
    if len(weights) == 1:
        (name,) = weights
        return [(name, j) for j in range(n)]
    exact = {k: w * n for k, w in weights.items()}
    counts = {k: int(np.floor(v)) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (counts[k] - exact[k], k))[: n - sum(counts.values())]:
        counts[k] += 1
    entries = [(k, j) for k in sorted(counts) for j in range(counts[k])]
    order = np.random.default_rng([int(seed), 0x5EED]).permutation(len(entries))
    return [entries[int(i)] for i in order]


# ---------------------------------------------------------------------------------------------
# Prompts: the benchmark adapter parses them; p+ / p- for a label


class PromptParser:
    """Specs of folder prompts, and of the same prompt with another label, from a benchmark
    adapter (``data.benchmark``): the shapes grammar, T2V-CompBench's parser (its suite looked
    up by prompt text), or any adapter with ``parse_prompt``."""

    def __init__(self, benchmark_cfg: Any, split: str = "all") -> None:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(benchmark_cfg, DictConfig):
            benchmark_cfg = OmegaConf.to_container(benchmark_cfg, resolve=True)
        self.cfg = dict(benchmark_cfg or {"name": "shapes"})
        self.name = self.cfg.get("name")
        # the compositions the classifier may see (the shapes grammar defines the split; other
        # adapters' folders are taken as given)
        if split not in ("seen", "heldout", "all"):
            raise ValueError(f"data.split={split!r}; accepted: seen, heldout, all")
        self.split = split
        self.benchmark = registry.build("benchmark", self.cfg)
        self._suite: dict[str, PromptSpec] | None = None

    @property
    def grammar(self) -> bool:
        return self.name == "shapes"

    def label_sets(self) -> dict[str, tuple[str, ...]] | None:
        """Every label of each category (the classifier heads' Y), when the adapter says."""
        if self.grammar:
            from cvg_bench.shapes.grammar import CATEGORIES, label_set

            out = {}
            for cat in CATEGORIES:
                labels: list[str] = []
                for n in (1, 2):
                    try:
                        labels += [y for y in label_set(cat, n) if y not in labels]
                    except ValueError:
                        continue
                out[cat] = tuple(labels)
            return out
        fn = getattr(self.benchmark, "label_sets", None)
        return dict(fn()) if callable(fn) else None

    def prompts(self) -> list[PromptSpec]:
        return self.benchmark.prompts()

    def in_split(self, spec: PromptSpec) -> bool:
        """Whether the classifier may see ``spec``'s composition (``split``; grammar only)."""
        if self.split == "all" or not self.grammar:
            return True
        from cvg_bench.shapes.grammar import is_heldout

        return is_heldout(spec) == (self.split == "heldout")

    def check_split(self, spec: PromptSpec) -> PromptSpec:
        if not self.in_split(spec):
            raise SkipPrompt(f"composition {spec.prompt!r} is outside data.split={self.split} "
                             "(the classifier never sees it)")
        return spec

    def parse(self, prompt: str, prompt_id: str) -> PromptSpec:
        try:
            return self.benchmark.parse_prompt(prompt, prompt_id)
        except NotImplementedError:
            pass
        except ValueError as exc:
            raise SkipPrompt(f"not a {self.name} prompt: {exc}") from None
        if self._suite is None:
            self._suite = {}
            for spec in self.benchmark.load(self.benchmark.split):
                self._suite.setdefault(spec.prompt.strip().lower(), spec)
        spec = self._suite.get(prompt.strip().lower())
        if spec is None:
            raise SkipPrompt(f"not in the {self.name} suite (its adapter parses only its own "
                             "prompts)")
        return replace(spec, prompt_id=prompt_id)

    def with_label(self, spec: PromptSpec, label: str) -> PromptSpec:
        """The prompt ``spec`` with its composition's label set to ``label`` (same entities)."""
        if label not in spec.label_set:
            raise ValueError(f"label {label!r} is not in the label set {list(spec.label_set)} of "
                             f"{spec.prompt!r}")
        if label == spec.label:
            return self.check_split(spec)
        if self.grammar:
            from cvg_bench.shapes.grammar import Composition, composition_of, spec_of

            comp = composition_of(spec)
            return self.check_split(spec_of(Composition(comp.category, comp.objects, label), spec.prompt_id))
        return relabel_by_spans(spec, label)

    def negative(self, spec: PromptSpec, rng: np.random.Generator,
                 label: str | None = None) -> PromptSpec:
        """p-: ``spec`` with a wrong label: ``label`` if given, else drawn from Y minus y,
        among the labels whose composition is in ``split`` (grammar prompts)."""
        wrong = [y for y in spec.label_set if y != spec.label]
        others = wrong
        if self.grammar and self.split != "all":
            from cvg_bench.shapes.grammar import negative_labels

            others = negative_labels(spec, self.split)
        if label is None:
            if not others:
                raise SkipPrompt(f"label set {list(spec.label_set)} has no wrong label for p- "
                                 f"(in data.split={self.split})")
            label = others[int(rng.integers(len(others)))]
        elif label not in wrong:
            raise ValueError(f"negative {label!r} of {spec.prompt!r}; accepted: {wrong}")
        elif label not in others:
            raise SkipPrompt(f"negative {label!r} of {spec.prompt!r} is outside data.split="
                             f"{self.split} (the classifier never sees it)")
        return self.with_label(spec, label)


def relabel_by_spans(spec: PromptSpec, label: str) -> PromptSpec:
    """``spec`` with its relation words (``relation_spans``) replaced by the words of
    ``label`` (spatial: one span; motion: one span per moving entity), entity spans shifted."""
    if spec.category == "spatial_relationships":
        words = [SPATIAL_WORDS.get(label)]
    elif spec.category == "motion_binding":
        words = [DIRECTION_WORDS.get(d) for d in label.split("|")]
    else:
        raise SkipPrompt(f"category {spec.category!r}: no relation words to replace for another "
                         "label (accepted here: spatial_relationships, motion_binding)")
    spans = sorted(spec.relation_spans)
    if None in words or len(spans) != len(words):
        raise SkipPrompt(f"{len(spans)} relation span(s) found for the {len(words)} part(s) of "
                         f"label {label!r}: cannot write the prompt with another label")
    text, shift, new_rel = spec.prompt, 0, []
    moves: list[tuple[int, int]] = []  # (original end, delta after it)
    for (s, e), w in zip(spans, words):
        text = text[: s + shift] + w + text[e + shift:]
        new_rel.append((s + shift, s + shift + len(w)))
        shift += len(w) - (e - s)
        moves.append((e, shift))

    def moved(pos: int) -> int:
        delta = 0
        for end, d in moves:
            if pos >= end:
                delta = d
        return pos + delta

    ents = tuple(replace(ent, span=(moved(ent.span[0]), moved(ent.span[1])),
                         word_spans=tuple((moved(a), moved(b)) for a, b in ent.word_spans))
                 for ent in spec.entities)
    return replace(spec, prompt=text, label=label, entities=ents, relation_spans=tuple(new_rel))


# ---------------------------------------------------------------------------------------------
# The folder layout


@dataclass(frozen=True)
class FolderItem:
    id: str
    spec: PromptSpec  # p+: the prompt with the label the video shows
    negative: str | None
    source: str
    video: Path


def read_folder(root: Path | str, parser: PromptParser, categories: list[str] | None = None
                ) -> tuple[list[FolderItem], list[dict[str, str]]]:
    """The usable items of a folder in file order, and the skipped ones ``{"id", "prompt",
    "reason"}`` (unparseable prompts, categories not trained). Malformed lines, labels outside
    Y, unsafe ids and missing videos are errors naming the file and line."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.folder {str(root)!r} is not a folder; accepted: a folder "
                                f"holding {PROMPTS_FILE} and <id>.mp4")
    path = root / PROMPTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the folder must hold {PROMPTS_FILE} with one "
                                '{"id": ..., "prompt": ...} per line')
    text = confined(path, root, PROMPTS_FILE).read_text(encoding="utf-8", errors="strict")
    items, skipped, seen = [], [], {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: malformed line {line[:80]!r} ({exc}); expected "
                             '{"id": "...", "prompt": "..."}') from None
        if not isinstance(row, dict) or not {"id", "prompt"} <= set(row):
            raise ValueError(f"{where}: not an object with id and prompt; expected "
                             '{"id": "...", "prompt": "..."[, "category", "label", "negative", '
                             '"source"]}')
        unknown = sorted(set(row) - set(LINE_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; accepted: {', '.join(LINE_KEYS)}")
        pid, prompt = row["id"], row["prompt"]
        try:
            check_name(pid, "id")
        except UnsafeName as exc:
            raise ValueError(f"{where}: {exc}") from None
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"{where}: prompt {prompt!r}; accepted: a non-empty string")
        if pid in seen:
            raise ValueError(f"{path}: id {pid!r} is on line {seen[pid]} and on line {lineno}; "
                             "accepted: each id once")
        seen[pid] = lineno
        try:
            spec = parser.parse(prompt, pid)
        except SkipPrompt as exc:
            skipped.append({"id": pid, "prompt": prompt, "reason": str(exc)})
            continue
        if row.get("category") is not None and row["category"] != spec.category:
            raise ValueError(f"{where}: category {row['category']!r}, but the {parser.name} "
                             f"adapter parses the prompt as {spec.category!r}")
        if categories is not None and spec.category not in categories:
            skipped.append({"id": pid, "prompt": prompt,
                            "reason": f"category {spec.category!r} is not trained "
                                      f"(categories: {categories})"})
            continue
        label = row.get("label")
        if label is None:
            label = spec.label  # the video shows its own prompt
        if label is None or label not in spec.label_set:
            if row.get("label") is None:
                skipped.append({"id": pid, "prompt": prompt,
                                "reason": "the parse gives no label of Y for the prompt"})
                continue
            raise ValueError(f"{where}: label {label!r} is not in the prompt's label set Y; "
                             f"accepted: {list(spec.label_set)}")
        negative = row.get("negative")
        if negative is not None and (negative not in spec.label_set or negative == label):
            raise ValueError(f"{where}: negative {negative!r}; accepted: a label of Y other than "
                             f"{label!r}: {[y for y in spec.label_set if y != label]}")
        try:
            positive = parser.with_label(spec, label)
            parser.negative(positive, np.random.default_rng(0), negative)  # p- exists in the split
        except SkipPrompt as exc:
            skipped.append({"id": pid, "prompt": prompt, "reason": str(exc)})
            continue
        video = confined(f"{pid}.mp4", root, "video")
        if not video.is_file():
            raise FileNotFoundError(f"{where}: video {video} not found; accepted: <id>.mp4 next "
                                    f"to {PROMPTS_FILE}")
        source = row.get("source") or "folder"
        if not isinstance(source, str):
            raise ValueError(f"{where}: source {source!r}; accepted: a string")
        items.append(FolderItem(pid, positive, negative, source, video))
    if skipped:
        log.warning("%s: %d prompt(s) skipped: %s", root, len(skipped),
                    "; ".join(f"{s['id']}: {s['reason']}" for s in skipped[:10]))
    return items, skipped


def folder_digest(root: Path | str | None) -> str | None:
    """A hash of a folder's prompts file (cache keys change when the folder's lines do)."""
    if root is None:
        return None
    path = Path(root) / PROMPTS_FILE
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.is_file() else None


def fit_video(video: np.ndarray, frames: int | None, height: int | None,
              width: int | None) -> np.ndarray:
    """``video`` with ``frames`` frames sampled evenly and each frame resized (bilinear) to
    ``height`` x ``width`` (None: keep); unchanged when it already fits."""
    from PIL import Image

    if frames and video.shape[0] != frames:
        idx = np.linspace(0, video.shape[0] - 1, frames).round().astype(int)
        video = video[idx]
    if height and width and video.shape[1:3] != (height, width):
        video = np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BILINEAR))
                          for f in video])
    return np.ascontiguousarray(video, dtype=np.uint8)


def generator_input(generator) -> tuple[int | None, int | None, int | None]:
    """(frames, height, width) the generator's pipeline takes, where it says."""
    if generator is None:
        return None, None, None
    if hasattr(generator, "num_frames"):
        return generator.num_frames, generator.height, generator.width
    if hasattr(generator, "frames") and hasattr(generator, "size"):
        return generator.frames, generator.size, generator.size
    return None, None, None


def write_video_lossless(path: Path, video: np.ndarray, fps: int = 8) -> Path:
    """An RGB mp4 without loss (libx264rgb, crf 0): training videos read back bit-exact."""
    import imageio.v2 as iio

    from cvg_bench.video_io import check_video, read_video

    video = check_video(video)
    tmp = make_temp(path.parent, path.stem, suffix=path.suffix)
    try:
        with iio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264rgb",
                            pixelformat="rgb24", macro_block_size=1, ffmpeg_log_level="error",
                            output_params=["-crf", "0", "-preset", "ultrafast"]) as writer:
            for frame in video:
                writer.append_data(frame)
        if not np.array_equal(read_video(tmp), video):
            raise OSError(f"{path}: the lossless video does not read back as written")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_folder(root: Path | str, examples: list[tuple[str, np.ndarray, PromptSpec,
                                                        PromptSpec | None, str]]) -> Path:
    """Write ``(id, video, p+, p- or None, source)`` as a folder source (lossless videos; each
    line has id, prompt, category, label, and negative where p- is given)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for pid, video, pos, neg, source in examples:
        check_name(pid, "id")
        write_video_lossless(confined(f"{pid}.mp4", root, "video"), video)
        row = {"id": pid, "prompt": pos.prompt, "category": pos.category, "label": pos.label,
               "source": source}
        if neg is not None:
            row["negative"] = neg.label
        lines.append(json.dumps(row) + "\n")
    atomic_write_text(root / PROMPTS_FILE, "".join(lines))
    return root


class FolderSource:
    """Examples from a folder: item j -> (fitted video, p+, p-, source); p- is the line's
    ``negative`` or drawn from Y minus y by ``rng([seed, j])``."""

    def __init__(self, items: list[FolderItem], parser: PromptParser, generator, seed: int):
        self.items, self.parser, self.seed = items, parser, int(seed)
        self.shape = generator_input(generator)

    def __len__(self) -> int:
        return len(self.items)

    def example(self, j: int):
        from cvg_bench.video_io import read_video

        item = self.items[j]
        video = fit_video(read_video(item.video), *self.shape)
        rng = np.random.default_rng([self.seed, int(j)])
        return video, item.spec, self.parser.negative(item.spec, rng, item.negative), item.source


def split_folder(items: list[FolderItem], n_val: int, seed: int
                 ) -> tuple[list[FolderItem], list[FolderItem]]:
    """(train, val) of one folder: ``n_val`` items held out by a seeded draw; order kept."""
    if n_val >= len(items):
        raise ValueError(f"the folder has {len(items)} usable videos; data.val={n_val} would leave "
                         "none to train on (accepted: data.val < the usable videos, or "
                         "data.val_folder)")
    held = set(np.random.default_rng([int(seed), 0xF01D]).permutation(len(items))[:n_val].tolist())
    return ([it for i, it in enumerate(items) if i not in held],
            [it for i, it in enumerate(items) if i in held])


# ---------------------------------------------------------------------------------------------
# Generate: sample, label, keep the unambiguous ones, write them as a folder


def build_labeller(cfg: Any):
    """The labeller plugin of a config node (``configs/labeller/<name>.yaml``)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    if not cfg or "name" not in cfg:
        raise ValueError(f"data.labeller={cfg!r}; accepted: a labeller config with a name, one of "
                         f"{', '.join(registry.names('labeller'))}")
    return registry.build("labeller", cfg)


def generate_folder(generator, labeller, parser: PromptParser, out: Path | str, num_videos: int,
                    seed: int, categories: list[str] | None = None, task: int = 0,
                    num_tasks: int = 1) -> dict[str, Any]:
    """Sample video i (prompt i mod |suite| of the adapter's selection, seed
    ``seed * 1_000_003 + i``), label it, and write it to ``out`` when its label is unambiguous.

    Item i is ``g<i>``: its record ``items/g<i>.json`` (label or why not) makes a re-run skip
    it, and task k of ``num_tasks`` makes items k, k + num_tasks, ... Once every item has a
    record, ``prompts.jsonl`` (kept videos) and ``rejected.jsonl`` are written. Returns
    ``{"missing": [...], "kept": n, "rejected": n}``."""
    if not 0 <= task < num_tasks:
        raise ValueError(f"cache task {task} is not in 0..{num_tasks - 1}")
    suite = [s for s in parser.prompts() if categories is None or s.category in categories]
    suite = [s for s in suite if s.label is not None and len(s.label_set) > 1 and parser.in_split(s)]
    if not suite:
        raise ValueError(f"data.benchmark {parser.name!r} selects no prompt with a label set of "
                         f"two or more labels in categories {categories}")
    labeller.check_categories(sorted({s.category for s in suite}))
    labeller.check_ready()
    out = Path(out)
    (out / "items").mkdir(parents=True, exist_ok=True)
    ids = [f"g{i:06d}" for i in range(int(num_videos))]
    for i in range(task, int(num_videos), num_tasks):
        record = confined(f"items/{ids[i]}.json", out, "item record")
        if record.exists():
            continue
        spec = suite[i % len(suite)]
        video = generator.sample(spec, seed=int(seed) * 1_000_003 + i).video
        found = labeller.label(video, spec)
        row = {"id": ids[i], "prompt": spec.prompt, "category": spec.category,
               "label": found.label, "prompted": spec.label, "reason": found.reason,
               "labeller": labeller.version(), "seed": int(seed) * 1_000_003 + i}
        if found.label is not None:
            write_video_lossless(confined(f"{ids[i]}.mp4", out, "video"), video)
        atomic_write_text(record, json.dumps(row))
    missing = [pid for pid in ids if not (out / "items" / f"{pid}.json").exists()]
    kept = rejected = 0
    if not missing:
        rows = [json.loads((out / "items" / f"{pid}.json").read_text()) for pid in ids]
        keep = [r for r in rows if r["label"] is not None]
        kept, rejected = len(keep), len(rows) - len(keep)
        atomic_write_text(out / PROMPTS_FILE, "".join(
            json.dumps({"id": r["id"], "prompt": r["prompt"], "category": r["category"],
                        "label": r["label"], "source": "generate"}) + "\n" for r in keep))
        atomic_write_text(out / "rejected.jsonl", "".join(
            json.dumps(r) + "\n" for r in rows if r["label"] is None))
    return {"missing": missing, "kept": kept, "rejected": rejected, "out": str(out)}
