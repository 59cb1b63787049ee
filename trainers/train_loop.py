"""The training loop: KD loss, AdamW, bucketed dynamic-padding batches, OOM back-off.

The learning-rate schedule (linear warm-up, then linear decay) runs on samples
seen rather than on steps, so it stays correct when an out-of-memory error
halves the batch size part-way: the failed batch is split in two and retried,
and every later batch is cut to the new size.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from distilld.trainers.dataset import EncodedSplit, bucketed_batches
from distilld.trainers.device import autocast, is_out_of_memory
from distilld.trainers.job_spec import Hyperparameters
from distilld.trainers.kd_loss import kd_loss
from distilld.trainers.progress import ProgressFile

log = logging.getLogger(__name__)


class TimeLimitExceeded(RuntimeError):
    pass


@dataclass
class TrainStats:
    epochs: int
    steps: int
    samples: int
    wall_s: float
    samples_per_s: float
    initial_batch_size: int
    final_batch_size: int
    oom_events: int
    last_epoch_loss: float | None
    peak_gpu_memory_bytes: int | None


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _lr_factor(samples_seen: int, total_samples: int, warmup_fraction: float) -> float:
    warmup = warmup_fraction * total_samples
    if warmup > 0 and samples_seen < warmup:
        return max(samples_seen / warmup, 1e-3)
    return max(0.0, (total_samples - samples_seen) / max(total_samples - warmup, 1.0))


def train(
    model: nn.Module,
    data: EncodedSplit,
    hp: Hyperparameters,
    device: torch.device,
    progress: ProgressFile | None = None,
    deadline_monotonic: float | None = None,
) -> TrainStats:
    """Distil into ``model``'s trainable parameters for ``hp.epochs`` passes over ``data``."""
    if len(data) == 0:
        raise ValueError("no training records left after applying the missing-teacher policy")
    progress = progress or ProgressFile(None)
    rng = np.random.default_rng(hp.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)
    total = len(data) * hp.epochs
    lengths = data.lengths
    batch_size = hp.batch_size_records
    steps = seen = oom_events = 0
    last_epoch_loss = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.to(device).train()
    start = time.monotonic()
    bar = tqdm(total=total, unit="sample", desc="distil", dynamic_ncols=True, mininterval=1.0)
    try:
        for epoch in range(hp.epochs):
            queue = deque(bucketed_batches(lengths, batch_size, rng))
            loss_sum = loss_n = 0.0
            while queue:
                index = queue.popleft()
                if len(index) > batch_size:
                    queue.extendleft(reversed(np.array_split(index, -(-len(index) // batch_size))))
                    continue
                if deadline_monotonic is not None and time.monotonic() > deadline_monotonic:
                    raise TimeLimitExceeded(f"time limit reached after {seen} of {total} samples")
                batch = {k: v.to(device) for k, v in data.collate(index).items()}
                try:
                    with autocast(device):
                        logits = model(
                            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                        ).logits
                    loss = kd_loss(
                        logits,
                        batch["teacher_logits"],
                        batch["has_teacher"],
                        batch["labels"],
                        hp.temperature,
                        hp.alpha,
                    )
                    loss.backward()
                except Exception as err:
                    if not is_out_of_memory(err) or batch_size == 1:
                        raise
                    optimizer.zero_grad(set_to_none=True)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    oom_events += 1
                    batch_size = max(1, batch_size // 2)
                    log.warning("out of memory; halving the batch", extra={"batch_size": batch_size})
                    queue.appendleft(index)
                    continue
                for group in optimizer.param_groups:
                    group["lr"] = hp.learning_rate * _lr_factor(seen, total, hp.warmup_fraction)
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                steps += 1
                seen += len(index)
                loss_sum += float(loss.detach()) * len(index)
                loss_n += len(index)
                bar.update(len(index))
                elapsed = time.monotonic() - start
                rate = seen / elapsed if elapsed > 0 else 0.0
                bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}", bs=batch_size, refresh=False)
                progress.update(
                    phase="train",
                    epoch=epoch + 1,
                    epochs=hp.epochs,
                    samples_done=seen,
                    samples_total=total,
                    samples_per_s=rate,
                    eta_s=(total - seen) / rate if rate > 0 else None,
                    batch_size=batch_size,
                    loss=loss_sum / loss_n,
                )
            last_epoch_loss = loss_sum / loss_n if loss_n else None
    finally:
        bar.close()
    wall = time.monotonic() - start
    return TrainStats(
        epochs=hp.epochs,
        steps=steps,
        samples=seen,
        wall_s=wall,
        samples_per_s=seen / wall if wall > 0 else 0.0,
        initial_batch_size=hp.batch_size_records,
        final_batch_size=batch_size,
        oom_events=oom_events,
        last_epoch_loss=last_epoch_loss,
        peak_gpu_memory_bytes=torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
    )
