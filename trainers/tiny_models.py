"""Tiny random-initialised classifiers with a real WordPiece tokenizer, built offline.

Tests and the daemon's end-to-end test need a student that loads, trains and
exports like a real one but runs in milliseconds. The tokenizer's vocabulary
is trained with the ``tokenizers`` library on a fixed little corpus (plus any
texts the caller passes), so it splits real words rather than mapping
everything to [UNK].
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizer,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BASE_CORPUS = (
    "where is my parcel",
    "the quick brown fox jumps over the lazy dog",
    "a domesticated animal kept for companionship",
    "move fast from one place to another",
    "an implement used for cutting food",
    "a person who writes software for a living",
    "feel happy about something good that happened",
    "the act of changing location by walking",
    "relating to the sea or ocean and the ships on it",
    "a plant with green leaves and yellow flowers",
    "refund my order please it never arrived",
    "cancel the subscription and close my account",
    "what time does the store open tomorrow morning",
    "abcdefghijklmnopqrstuvwxyz 0123456789",
)


def make_tiny_tokenizer(texts: Sequence[str] = (), vocab_size: int = 500) -> BertTokenizer:
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False
    )
    wordpiece.train_from_iterator([*BASE_CORPUS, *texts], trainer)
    return BertTokenizer(vocab=wordpiece.get_vocab(), do_lower_case=True)


def make_tiny_classifier(
    arch: Literal["bert", "distilbert"],
    n_classes: int,
    out_dir: Path,
    seed: int = 0,
    texts: Sequence[str] = (),
    max_position_embeddings: int = 128,
) -> Path:
    """Write a tiny random-init sequence classifier and its tokenizer to ``out_dir``; return it."""
    tokenizer = make_tiny_tokenizer(texts)
    vocab_size = len(tokenizer)
    torch.manual_seed(seed)
    labels = {"id2label": {i: f"class_{i}" for i in range(n_classes)}}
    if arch == "bert":
        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=max_position_embeddings,
            num_labels=n_classes,
            **labels,
        )
        model = BertForSequenceClassification(config)
    elif arch == "distilbert":
        config = DistilBertConfig(
            vocab_size=vocab_size,
            dim=32,
            n_layers=2,
            n_heads=2,
            hidden_dim=64,
            max_position_embeddings=max_position_embeddings,
            num_labels=n_classes,
            **labels,
        )
        model = DistilBertForSequenceClassification(config)
    else:
        raise ValueError(f"arch must be 'bert' or 'distilbert', not {arch!r}")
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
