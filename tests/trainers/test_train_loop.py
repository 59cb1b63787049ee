from __future__ import annotations

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distilld.trainers.dataset import bucketed_batches, encode_split
from distilld.trainers.job_spec import Hyperparameters
from distilld.trainers.train_loop import train
from tests.trainers.builders import synthetic_split

OOM_ABOVE_RECORDS = 4


def _refuse_big_batches(module, args, kwargs):
    # stands in for a GPU that cannot hold more than a few records: the same error torch raises
    if kwargs["input_ids"].shape[0] > OOM_ABOVE_RECORDS:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_halves_the_batch_and_training_continues(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    data = encode_split(tokenizer, synthetic_split(40, 0, "t"), 16)
    model.register_forward_pre_hook(_refuse_big_batches, with_kwargs=True)
    before = [p.detach().clone() for p in model.parameters()]
    hp = Hyperparameters(method="full", epochs=2, batch_size_records=16)
    stats = train(model, data, hp, torch.device("cpu"))
    assert stats.final_batch_size == OOM_ABOVE_RECORDS
    assert stats.oom_events == 2
    assert stats.samples == 2 * len(data)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_training_is_seeded(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    data = encode_split(tokenizer, synthetic_split(24, 0, "t"), 16)
    hp = Hyperparameters(method="full", epochs=1, batch_size_records=8, seed=3)
    finals = []
    for _ in range(2):
        torch.manual_seed(hp.seed)
        model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
        train(model, data, hp, torch.device("cpu"))
        finals.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(finals[0], finals[1])


def test_batches_cover_every_record_once_and_group_similar_lengths():
    lengths = np.random.default_rng(0).integers(1, 100, 1000)
    batches = bucketed_batches(lengths, 10, np.random.default_rng(1), pool_batches=20)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    assert spread < 10
