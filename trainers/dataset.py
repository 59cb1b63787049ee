"""Training tensors from a snapshot split: tokenised once, padded per batch.

Batches are length-bucketed (records of similar length together) so that
dynamic padding wastes little compute: the order is shuffled, cut into pools
of ``pool_batches`` batches, each pool sorted by length and cut into batches,
and the batches shuffled again so lengths do not trend through an epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from distilld.trainers.snapshot import Split


@dataclass
class EncodedSplit:
    input_ids: list[list[int]]
    teacher_logits: np.ndarray
    has_teacher: np.ndarray
    labels: np.ndarray
    pad_token_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self.input_ids))

    def collate(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        """Pad the records at ``index`` to the longest of them."""
        rows = [self.input_ids[i] for i in index]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            ids[j, : len(r)] = torch.as_tensor(r, dtype=torch.long)
            mask[j, : len(r)] = 1
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "teacher_logits": torch.from_numpy(self.teacher_logits[index]),
            "has_teacher": torch.from_numpy(self.has_teacher[index]),
            "labels": torch.from_numpy(self.labels[index]),
        }


def encode_texts(tokenizer, texts: list[str], max_length_tokens: int) -> list[list[int]]:
    if not texts:
        return []
    enc = tokenizer(texts, truncation=True, max_length=max_length_tokens, padding=False)
    return [list(x) for x in enc["input_ids"]]


def encode_split(tokenizer, split: Split, max_length_tokens: int) -> EncodedSplit:
    return EncodedSplit(
        input_ids=encode_texts(tokenizer, split.texts, max_length_tokens),
        teacher_logits=split.teacher_logits.astype(np.float32),
        has_teacher=split.has_teacher.astype(bool),
        labels=split.labels.astype(np.int64),
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
    )


def bucketed_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, pool_batches: int = 50
) -> list[np.ndarray]:
    """Index batches of similar-length records, in random order."""
    order = rng.permutation(len(lengths))
    pool = batch_size * pool_batches
    batches: list[np.ndarray] = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Index batches in length order, for inference (results are put back by index)."""
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
