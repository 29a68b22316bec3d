"""Word -> token index lookup for a prompt, from character spans.

Fast tokenizers give an offsets mapping (the exact route). Slow tokenizers (e.g. the
``CLIPTokenizer`` a ModelScope/ZeroScope folder loads) fall back to counting the tokens of
the prompt's prefix, which is exact when spans start and end on word boundaries.
"""

from __future__ import annotations

from typing import Any, Sequence

from cvg_bench.generators.base import PromptTokens
from cvg_bench.types import PromptSpec

Span = tuple[int, int]


def _check_span(prompt: str, span: Span) -> None:
    s, e = span
    if not (0 <= s < e <= len(prompt)):
        raise ValueError(f"character span {span} is not inside the prompt {prompt!r} (length {len(prompt)})")


def _padded(tokenizer: Any, prompt: str, **kw: Any) -> Any:
    return tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, **kw)


def _spans_fast(tokenizer: Any, prompt: str, spans: Sequence[Span]) -> list[tuple[int, ...]]:
    enc = _padded(tokenizer, prompt, return_offsets_mapping=True, return_special_tokens_mask=True)
    offsets, special = enc["offset_mapping"], enc["special_tokens_mask"]
    out = []
    for s, e in spans:
        out.append(tuple(i for i, ((a, b), sp) in enumerate(zip(offsets, special)) if not sp and b > s and a < e))
    return out


def _leading_specials(tokenizer: Any, prompt: str) -> int:
    """How many special tokens precede the prompt's first token (1 for CLIP's BOS)."""
    full = tokenizer(prompt).input_ids
    plain = tokenizer(prompt, add_special_tokens=False).input_ids
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return i
    raise ValueError(f"cannot locate the prompt's tokens inside its encoding for {prompt!r}")


def _spans_slow(tokenizer: Any, prompt: str, spans: Sequence[Span]) -> list[tuple[int, ...]]:
    lead = _leading_specials(tokenizer, prompt)
    plain = tokenizer(prompt, add_special_tokens=False).input_ids
    out = []
    for s, e in spans:
        before = tokenizer(prompt[:s], add_special_tokens=False).input_ids
        upto = tokenizer(prompt[:e], add_special_tokens=False).input_ids
        if plain[: len(upto)] != upto or upto[: len(before)] != before:
            raise ValueError(
                f"span {(s, e)} ({prompt[s:e]!r}) does not fall on token boundaries of {prompt!r}; "
                "use a fast tokenizer (offsets mapping) or word-aligned spans"
            )
        out.append(tuple(range(lead + len(before), lead + len(upto))))
    return out


def token_indices(tokenizer: Any, prompt: str, spans: Sequence[Span]) -> list[tuple[int, ...]]:
    """Token indices (into the padded text sequence) covered by each character span."""
    for span in spans:
        _check_span(prompt, span)
    if getattr(tokenizer, "is_fast", False):
        result = _spans_fast(tokenizer, prompt, spans)
    else:
        result = _spans_slow(tokenizer, prompt, spans)
    max_len = tokenizer.model_max_length
    full_len = len(tokenizer(prompt).input_ids)
    for span, idx in zip(spans, result):
        if not idx and full_len <= max_len:
            raise ValueError(f"span {span} ({prompt[span[0]:span[1]]!r}) maps to no token of {prompt!r}")
        if not idx or max(idx) >= max_len - 1:  # the last slot holds EOS after truncation
            raise ValueError(
                f"word {prompt[span[0]:span[1]]!r} at {span} is truncated away: the tokenizer keeps "
                f"{max_len} tokens; shorten the prompt"
            )
    return result


def prompt_tokens(tokenizer: Any, spec: PromptSpec) -> PromptTokens:
    """Token indices of every entity (its word spans, else its phrase span) and relation."""
    prompt = spec.prompt
    entity_spans = [tuple(ent.word_spans) or (tuple(ent.span),) for ent in spec.entities]
    flat = [s for spans in entity_spans for s in spans if s != (0, 0)]
    per_span = dict(zip(flat, token_indices(tokenizer, prompt, flat)))
    entities = tuple(
        tuple(sorted({i for s in spans if s != (0, 0) for i in per_span[s]})) for spans in entity_spans
    )
    relation = token_indices(tokenizer, prompt, list(spec.relation_spans)) if spec.relation_spans else []
    enc = _padded(tokenizer, prompt)
    ids = tuple(int(i) for i in enc["input_ids"])
    return PromptTokens(
        prompt=prompt,
        input_ids=ids,
        tokens=tuple(tokenizer.convert_ids_to_tokens(list(ids))),
        entity_tokens=entities,
        relation_tokens=tuple(sorted({i for idx in relation for i in idx})),
        num_text_keys=len(ids),
    )


def spec_for_words(prompt: str, entity_words: Sequence[Sequence[str]], relation_words: Sequence[str] = ()) -> PromptSpec:
    """A minimal PromptSpec locating whole words in ``prompt`` (first occurrence); for tests/CLI."""
    from cvg_bench.types import Entity

    def span(word: str) -> Span:
        import re

        m = re.search(rf"\b{re.escape(word)}\b", prompt)
        if m is None:
            raise ValueError(f"word {word!r} not found in prompt {prompt!r}")
        return m.span()

    ents = tuple(
        Entity(phrase=" ".join(ws), noun=ws[-1], attributes=tuple(ws[:-1]), word_spans=tuple(span(w) for w in ws))
        for ws in entity_words
    )
    return PromptSpec(
        prompt_id="adhoc", prompt=prompt, category="adhoc", entities=ents,
        relation_spans=tuple(span(w) for w in relation_words),
    )
