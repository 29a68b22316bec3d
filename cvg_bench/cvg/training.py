"""Training steps (a), (e), (f): dual inversion, a feature cache, the dual cross-entropy.

Every video is inverted twice, under p+ (its true composition) and under p- (a wrong label
from Y); the entity maps at the steps T of both trajectories are cached on disk, and both are
supervised with the true label y. The cache is sharded and resumable, so training runs and
ablations never re-invert. A ``relative`` head (attribute binding, ``cvg.binding``) reads y
against each prompt's own words, so its p+ and p- targets differ (``targets``).
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from cvg_bench.cvg.augment import augment_batch, check_transforms
from cvg_bench.cvg.binding import relative_label
from cvg_bench.cvg.classifier import CVGClassifier
from cvg_bench.cvg.features import FeatureSpec, entity_maps, kp_tokens
from cvg_bench.records import atomic_write_text
from cvg_bench.types import PromptSpec, Video

log = logging.getLogger(__name__)

# A labelled training video: the video, its true spec (p+), a wrong spec (p-), its source.
Example = tuple[Video, PromptSpec, PromptSpec, str]


@torch.no_grad()
def featurize(generator, video: Video, spec: PromptSpec, features: FeatureSpec) -> torch.Tensor:
    """Steps (a)-(b) for one prompt: invert ``video`` under ``spec``, replay the trajectory's
    latents at the steps T and capture the entity maps: ``(|T|, L, H, E, F, s, s)``."""
    inversion = generator.invert(video, spec, features.num_inference_steps)
    tokens = kp_tokens(generator, spec)
    selection = features.selection(tokens)
    per_step = []
    for step in features.steps:
        t = inversion.timesteps[step]
        attn = generator.capture(inversion.latent_at(t), t, spec, selection)
        per_step.append(entity_maps(attn, tokens, features)[0])
    return torch.stack(per_step)


@dataclass
class FeatureCache:
    """Shards ``shard-NNNNN.safetensors`` (maps of p+ and p-) + ``shard-NNNNN.jsonl`` (labels)."""

    root: Path
    # the shards of this cache's data (None: every shard present). A cache folder is keyed
    # without its size, so a larger build may sit beside: data.train=384 reads shards 0..5 of
    # 64, never the 768 a larger run left there (build_feature_cache sets it).
    num_shards: int | None = None

    def shard_paths(self, index: int) -> tuple[Path, Path]:
        return self.root / f"shard-{index:05d}.safetensors", self.root / f"shard-{index:05d}.jsonl"

    def has_shard(self, index: int) -> bool:
        return all(p.exists() for p in self.shard_paths(index))

    def write_shard(self, index: int, pos: list[torch.Tensor], neg: list[torch.Tensor],
                    rows: list[dict[str, Any]]) -> None:
        tensors, meta = self.shard_paths(index)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = tensors.with_suffix(".tmp")
        save_file({"pos": torch.stack(pos).half().contiguous(),
                   "neg": torch.stack(neg).half().contiguous()}, tmp)
        tmp.replace(tensors)  # the jsonl is written last: a shard counts once both exist
        atomic_write_text(meta, "".join(json.dumps(r) + "\n" for r in rows))

    def stream_state_path(self, index: int) -> Path:
        return self.root / f"shard-{index:05d}.stream.json"

    def write_stream_state(self, index: int, state: dict[str, Any]) -> None:
        """The sequential stream's state after shard ``index``'s examples were drawn."""
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.stream_state_path(index), json.dumps(state))

    def resume_point(self, shards: list[int]) -> tuple[int, dict[str, Any] | None]:
        """How many leading ``shards`` are finished with the stream state after the last of
        them saved, and that state: a sequential build starts drawing there."""
        done, state = 0, None
        for n, index in enumerate(shards):
            if not (self.has_shard(index) and self.stream_state_path(index).exists()):
                break
            done = n + 1
        if done:
            state = json.loads(self.stream_state_path(shards[done - 1]).read_text())
        return done, state

    def missing_shards(self, num_examples: int, shard_size: int) -> list[int]:
        return [i for i in range(-(-num_examples // shard_size)) if not self.has_shard(i)]

    def load(self) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, Any]]]:
        """(p+ maps, p- maps, rows); each maps tensor is tagged with which prompt it was
        inverted under (``features_of``), so ``accuracy`` reads relative heads right."""
        pos, neg, rows = [], [], []
        metas = sorted(self.root.glob("shard-*.jsonl"))
        if self.num_shards is not None:
            metas = [m for m in metas if int(m.stem.split("-")[1]) < self.num_shards]
        for meta in metas:
            tensors = load_file(meta.with_suffix(".safetensors"))
            pos.append(tensors["pos"].float())
            neg.append(tensors["neg"].float())
            rows += [json.loads(line) for line in meta.read_text().splitlines()]
        if not rows:
            raise FileNotFoundError(f"no feature shards under {self.root}")
        pos_t, neg_t = torch.cat(pos), torch.cat(neg)
        pos_t.cvg_features, neg_t.cvg_features = "pos", "neg"
        return pos_t, neg_t, rows


@dataclass
class CacheUnion:
    """Several caches read as one (``cache_groups``: one cache per group of categories, each
    built and keyed as a training on just that group would build it). ``load`` concatenates
    them in order, with the same p+/p- tags as ``FeatureCache.load``."""

    caches: list[FeatureCache]

    def load(self) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, Any]]]:
        parts = [c.load() for c in self.caches]
        shapes = {tuple(p[0].shape[1:]) for p in parts}
        if len(shapes) > 1:
            raise ValueError(f"cache groups hold maps of different shapes {sorted(shapes)} "
                             f"({', '.join(str(c.root) for c in self.caches)}): their features differ")
        pos_t = torch.cat([p[0] for p in parts])
        neg_t = torch.cat([p[1] for p in parts])
        pos_t.cvg_features, neg_t.cvg_features = "pos", "neg"
        return pos_t, neg_t, [r for p in parts for r in p[2]]


FEATURES = ("pos", "neg")


def features_of(maps: torch.Tensor) -> str | None:
    """"pos" / "neg" for the maps ``FeatureCache.load`` returned, else None."""
    return getattr(maps, "cvg_features", None)


def build_feature_cache(generator, examples: Iterable[Example] | Callable[[int], Example],
                        features: FeatureSpec, cache: FeatureCache, num_examples: int,
                        shard_size: int = 64, task: int = 0, num_tasks: int = 1) -> FeatureCache:
    """Invert + featurize ``num_examples`` examples into ``cache`` (finished shards skipped).

    ``examples`` is deterministic: shard i always holds examples [i*size, (i+1)*size). An
    iterator must be consumed in order, so only one process can build it; a function
    ``i -> example`` lets ``num_tasks`` processes split the shards (task k builds shards
    k, k + num_tasks, ...), e.g. as the tasks of a SLURM array. A sequential stream with
    ``state``/``restore`` saves its state after each shard and resumes from the last one.
    """
    if not 0 <= task < num_tasks:
        raise ValueError(f"cache task {task} is not in 0..{num_tasks - 1}")
    indexed = callable(examples)
    if num_tasks > 1 and not indexed:
        raise ValueError("the sequential example stream cannot be split across cache tasks "
                         "(example i needs examples 0..i-1); use data.stream=indexed")
    it: Iterator[Example] | None = None if indexed else iter(examples)
    n_shards = -(-num_examples // shard_size)
    mine = [i for i in range(n_shards) if i % num_tasks == task]
    sizes = {i: min(shard_size, num_examples - i * shard_size) for i in range(n_shards)}
    bar = tqdm(total=sum(sizes[i] for i in mine), desc="dual inversion", unit="video")
    if not indexed and hasattr(it, "restore"):  # skip the finished shards without drawing them
        done, state = cache.resume_point(mine)
        if state is not None:
            it.restore(state)
            bar.update(sum(sizes[i] for i in mine[:done]))
            mine = mine[done:]
    for index in mine:
        if not indexed:  # a finished shard with no saved state (an older cache) is drawn again
            batch = [next(it) for _ in range(sizes[index])]
            if hasattr(it, "state") and not cache.stream_state_path(index).exists():
                cache.write_stream_state(index, it.state())
        if cache.has_shard(index):
            bar.update(sizes[index])
            continue
        if indexed:
            first = index * shard_size
            batch = [examples(j) for j in range(first, first + sizes[index])]
        pos, neg, rows = [], [], []
        for video, spec_pos, spec_neg, source in batch:
            t0 = time.perf_counter()
            pos.append(featurize(generator, video, spec_pos, features))
            neg.append(featurize(generator, video, spec_neg, features))
            rows.append({"prompt": spec_pos.prompt, "negative_prompt": spec_neg.prompt,
                         "category": spec_pos.category, "label": spec_pos.label,
                         "negative_label": spec_neg.label,
                         "label_set": list(spec_pos.label_set), "source": source,
                         "seconds": time.perf_counter() - t0})
            bar.update(1)
        cache.write_shard(index, pos, neg, rows)
    bar.close()
    cache.num_shards = -(-num_examples // shard_size)
    return cache


def head_label(model: CVGClassifier, row: dict[str, Any], features: str) -> str:
    """The label of ``row``'s video that the head reads from the maps of ``features`` ("pos":
    p+, "neg": p-). Absolute heads: the video's y either way. Relative heads: y read
    against the words of the prompt the maps were inverted under (p+: ``prompt_label``, the
    p+ label before any augmentation, else ``label``; p-: ``negative_label``)."""
    if features not in FEATURES:
        raise ValueError(f"features={features!r}; accepted: {', '.join(FEATURES)}")
    category = row["category"]
    if model.head_types.get(category) != "relative":
        return row["label"]
    if "negative_label" not in row:
        raise ValueError(
            f"this feature cache's {category} rows have no negative_label: the cache predates "
            "relative heads (and their K(p): colour words in the slots); rebuild it (delete "
            "the cache folder) with p- drawn as the permutation of p+'s colours")
    prompt_label = row.get("prompt_label", row["label"]) if features == "pos" else row["negative_label"]
    relative = relative_label(category, row["label"], prompt_label)
    if relative is None:
        raise ValueError(
            f"{category}: video label {row['label']!r} has no relative label against the "
            f"{'p+' if features == 'pos' else 'p-'} label {prompt_label!r}; a relative head "
            "needs p- = the permutation of p+'s colours (shapes.grammar.negative(..., "
            "permute_binding=True))")
    return relative


def targets(model: CVGClassifier, rows: list[dict[str, Any]], features: str) -> torch.Tensor:
    """Head indices of ``head_label`` for each row (one category)."""
    return torch.tensor([model.label_index(r["category"], head_label(model, r, features))
                         for r in rows])


def dual_cross_entropy(model: CVGClassifier, pos: torch.Tensor, neg: torch.Tensor | None,
                       rows: list[dict[str, Any]]) -> torch.Tensor:
    """L_CE = -log C(phi(z_t, p+))_y - log C(phi(z_t, p-))_y, summed over the steps T,
    averaged over the batch (one category per batch). ``neg=None`` trains on p+ only.
    Relative heads: y is read against each prompt's words (``head_label``): "as_written"
    for p+, "swapped"/"reversed" for the permuted p-."""
    category = rows[0]["category"]
    allowed = rows[0]["label_set"]
    loss = pos.new_zeros(())
    pairs = [(pos, targets(model, rows, "pos"))]
    if neg is not None:
        pairs.append((neg, targets(model, rows, "neg")))
    for slot in range(pos.shape[1]):
        steps = torch.full((len(rows),), slot)
        for maps, target in pairs:
            log_s = model.log_probs(maps[:, slot], steps, category, allowed)
            loss = loss + torch.nn.functional.nll_loss(log_s, target)
    return loss


def batches_by_prompt_form(rows: list[dict[str, Any]], batch_size: int,
                           rng: np.random.Generator) -> list[list[int]]:
    """Index batches whose rows share category and label set (one head, one mask per batch)."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r["category"], tuple(r["label_set"])), []).append(i)
    out = []
    for idx in groups.values():
        idx = list(rng.permutation(idx))
        out += [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    return [out[i] for i in rng.permutation(len(out))]


@torch.no_grad()
def accuracy(model: CVGClassifier, maps: torch.Tensor, rows: list[dict[str, Any]],
             score: Callable[..., torch.Tensor] | None = None,
             groups: Callable[[dict[str, Any]], Iterable[str]] | None = None,
             features: str | None = None) -> dict[str, float]:
    """Per-category accuracy of the argmax over each prompt's own label set, at every step.
    ``score``: the reading (default ``model.log_probs``); ``groups``: the keys a row counts
    under (default its category). ``features``: "pos" or "neg", the prompt ``maps`` were
    inverted under (default: the tag of ``FeatureCache.load``'s tensors); relative heads'
    targets depend on it, so reading them without it is an error."""
    model.eval()
    score = score or model.log_probs
    features = features or features_of(maps)
    if features is None:
        relative = sorted({r["category"] for r in rows
                           if model.head_types.get(r["category"]) == "relative"})
        if relative:
            raise ValueError(f"accuracy of the relative heads {relative} needs features='pos' "
                             "or 'neg' (which prompt the maps were inverted under)")
        features = "pos"
    hits: dict[str, list[float]] = {}
    for idx in batches_by_prompt_form(rows, 256, np.random.default_rng(0)):
        sub = [rows[i] for i in idx]
        target = targets(model, sub, features)
        for slot in range(maps.shape[1]):
            log_s = score(maps[idx, slot], torch.full((len(idx),), slot),
                          sub[0]["category"], sub[0]["label_set"])
            for r, ok in zip(sub, (log_s.argmax(-1) == target).float().tolist()):
                for key in (groups(r) if groups else (r["category"],)):
                    hits.setdefault(key, []).append(ok)
    out = {cat: float(np.mean(v)) for cat, v in hits.items()}
    out["mean"] = float(np.mean(list(out.values()))) if out else float("nan")
    return out


def train_classifier(model: CVGClassifier, train: FeatureCache, val: FeatureCache | None,
                     dual: bool = True, epochs: int = 20, batch_size: int = 32, lr: float = 1e-3,
                     seed: int = 0, log_fn: Callable[[dict], None] | None = None,
                     checkpoint: Path | str | None = None, val_every: int = 5,
                     augment: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Optimise theta_agg and the heads only (the backbone is frozen; the generator is absent).

    ``checkpoint``: a file written atomically after every epoch (trainable weights, optimiser,
    random states, history); when it exists, training resumes after its epoch, and the
    result is the same as an uninterrupted run. ``val`` is scored every ``val_every`` epochs
    and at the end. ``augment``: symmetries of the shapes world (``cvg.augment``), each
    applied to half the batches with the labels they imply; validation is never augmented.
    """
    augment = check_transforms(augment)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    pos, neg, rows = train.load()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=lr, weight_decay=1e-4)
    history: list[dict[str, Any]] = []
    start = 0
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.exists():
        state = load_checkpoint(ckpt)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        rng.bit_generator.state = state["numpy_rng"]
        history, start = state["history"], state["epoch"] + 1
        log.info("classifier training resumed after epoch %d from %s", state["epoch"], ckpt)
    for epoch in tqdm(range(start, epochs), desc="classifier epochs", initial=start, total=epochs):
        model.train()
        losses = []
        for idx in batches_by_prompt_form(rows, batch_size, rng):
            (bpos, bneg), brows = augment_batch([pos[idx], neg[idx] if dual else None],
                                                [rows[i] for i in idx], augment, rng)
            loss = dual_cross_entropy(model, bpos, bneg, brows)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        entry = {"epoch": epoch, "loss": float(np.mean(losses))}
        if val is not None and (epoch == epochs - 1 or epoch % val_every == val_every - 1):
            vpos, vneg, vrows = val.load()
            entry["val_acc_pos"] = accuracy(model, vpos, vrows, features="pos")
            entry["val_acc_neg"] = accuracy(model, vneg, vrows, features="neg")
        history.append(entry)
        if log_fn:
            log_fn(entry)
        if ckpt is not None:
            _save_checkpoint(ckpt, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                    "torch_rng": torch.get_rng_state(),
                                    "numpy_rng": rng.bit_generator.state,
                                    "history": history, "epoch": epoch})
    return {"history": history}


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint, unpickled with ``weights_only=True``: tensors and plain data
    only, so a crafted file cannot run code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"checkpoint {path} holds more than tensors and plain data ({first}); "
                         "accepted: a checkpoint written by train_classifier (delete it to "
                         "start over)") from None
    if not isinstance(state, dict) or not {"model", "optimizer", "epoch"} <= set(state):
        raise ValueError(f"checkpoint {path} is not a training checkpoint; accepted: a dict with "
                         "model, optimizer, torch_rng, numpy_rng, history, epoch")
    return state


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: a kill mid-save leaves the previous checkpoint
