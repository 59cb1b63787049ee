"""Batched forward passes that return logits as numpy, in input order."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from distilld.trainers.dataset import encode_texts, sorted_batches
from distilld.trainers.device import autocast


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    tokenizer,
    texts: list[str],
    device: torch.device,
    batch_size_records: int = 128,
    max_length_tokens: int = 128,
) -> np.ndarray:
    n_classes = model.config.num_labels
    if not texts:
        return np.zeros((0, n_classes), np.float32)
    was_training = model.training
    model.eval()
    ids = encode_texts(tokenizer, texts, max_length_tokens)
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = np.zeros((len(texts), n_classes), np.float32)
    for index in sorted_batches(lengths, batch_size_records):
        width = int(lengths[index].max())
        batch = torch.full((len(index), width), pad, dtype=torch.long)
        mask = torch.zeros((len(index), width), dtype=torch.long)
        for j, i in enumerate(index):
            batch[j, : lengths[i]] = torch.as_tensor(ids[i])
            mask[j, : lengths[i]] = 1
        with autocast(device):
            logits = model(input_ids=batch.to(device), attention_mask=mask.to(device)).logits
        out[index] = logits.float().cpu().numpy()
    model.train(was_training)
    return out
