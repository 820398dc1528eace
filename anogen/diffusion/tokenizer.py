"""Tokenizers built offline from a word list, for the small models this project makes.

The embedded demo model (:mod:`anogen.diffusion.demo_model`) and the tiny random test
models (:mod:`anogen.diffusion.tiny`) have no downloaded tokenizer: theirs is made here
from an in-memory vocabulary. Every character of :data:`CHARACTERS` is a token (so any
text encodes) and every listed word becomes one token through byte-pair merges.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

MAX_TOKENS = 77  # SD 1.x prompt length

CHARACTERS = tuple("abcdefghijklmnopqrstuvwxyz0123456789") + tuple(".,-!?'\"()*<>_:;/&+=%#@[]{}$")


def _byte_pair_encode(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Merge the adjacent pair of lowest rank until none is known (CLIP's BPE)."""
    while len(pieces) > 1:
        best = min(range(len(pieces) - 1), key=lambda i: ranks.get((pieces[i], pieces[i + 1]), math.inf))
        if (pieces[best], pieces[best + 1]) not in ranks:
            break
        pieces = pieces[:best] + [pieces[best] + pieces[best + 1]] + pieces[best + 2:]
    return pieces


def clip_vocabulary(words: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-format byte-pair vocabulary and merge list (word-final pieces end in ``</w>``).

    Every character is a token, with and without ``</w>``; every word of ``words``
    becomes one token through merges added word by word, in order. A merge added later
    ranks after all earlier ones, so it can never break a word finished before it.
    """
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    for char in CHARACTERS:
        tokens += [char, f"{char}</w>"]
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        pieces = _byte_pair_encode(list(word[:-1]) + [f"{word[-1]}</w>"], ranks)
        while len(pieces) > 1:
            ranks[(pieces[0], pieces[1])] = len(ranks)
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            tokens.append(pieces[0])
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab, sorted(ranks, key=ranks.__getitem__)


def build_clip_tokenizer(words: Iterable[str], max_length: int = MAX_TOKENS) -> Any:
    """A ``CLIPTokenizer`` that knows ``words`` as single tokens."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocabulary(words)
    # transformers 5 takes (a, b) pairs as merges too; its annotation names only strings.
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)  # type: ignore[arg-type]


def build_bert_tokenizer(words: Iterable[str], max_length: int = MAX_TOKENS) -> Any:
    """A ``BertTokenizer`` (word pieces) that knows ``words`` as single tokens."""
    from transformers import BertTokenizer

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += list(CHARACTERS) + [f"##{c}" for c in CHARACTERS] + list(words)
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return BertTokenizer(vocab=vocab, model_max_length=max_length)


def vocabulary_size(tokenizer: Any) -> int:
    """The embedding-table size a tokenizer needs: its largest id + 1. With a hand-made
    vocabulary ``len(tokenizer)`` and the ids may disagree in transformers 5."""
    return max(tokenizer.get_vocab().values()) + 1
