"""Synthetic inference-log traffic: realistic records for replay, benchmarks and tests.

Texts are WordNet glosses (``trainers.wordnet``), labelled with their 45
lexicographer classes, drawn with a class mix that can shift at a given
record index. Outputs come from a fixed synthetic model pair:

- teacher logits = hashed bag-of-words of the text times a fixed random
  linear map, plus a margin on the true class (an accurate teacher);
- student logits = teacher logits plus a fixed per-text perturbation that is
  small on the classes common in the base mix and large on the rare ones: the
  student was distilled on the base traffic, so it agrees with the teacher
  there and much less where the shifted traffic goes.

Both are deterministic per text and do not depend on ``seed`` (which only
drives the traffic), so streams with different seeds see the same models.
A class-mix shift therefore moves input n-grams, the prediction mix, teacher–
student agreement and (labelled) accuracy together, as real drift does.

``python -m distilld.daemon.traffic_synth --records 100000 --shift-at 60000 --out s.jsonl``
writes a JSONL stream that ``distilld replay --from`` reads.
"""

from __future__ import annotations

import argparse
import re
import sys
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from tqdm import tqdm

from distilld.trainers.wordnet import NUM_CLASSES, load_glosses

DEFAULT_START_TS = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
HASH_DIM = 1 << 14
MODEL_SEED = 20261122
TEACHER_MARGIN = 4.0
STUDENT_NOISE_COMMON = 0.3
STUDENT_NOISE_RARE = 1.5
_TOKEN = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class SyntheticModels:
    """Texts by class and the fixed teacher/student logits of every text."""

    texts: list[str]
    labels: np.ndarray
    class_start: np.ndarray  # texts are sorted by class: class c is texts[start[c]:start[c]+count[c]]
    class_count: np.ndarray
    teacher: np.ndarray  # (n_texts, C) float32
    student: np.ndarray
    base_weights: np.ndarray  # (C,) base class mix
    shifted_weights: np.ndarray  # (C,) where the traffic goes after a shift


def _hashed_bow(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR parts (indptr, indices, values) of L2-normalised hashed bags of words."""
    indptr = [0]
    indices: list[int] = []
    values: list[float] = []
    for text in texts:
        toks = {zlib.crc32(t.encode()) & (HASH_DIM - 1) for t in _TOKEN.findall(text.lower())} or {0}
        indices.extend(toks)
        w = 1.0 / np.sqrt(len(toks))
        values.extend([w] * len(toks))
        indptr.append(len(indices))
    return np.asarray(indptr), np.asarray(indices), np.asarray(values, dtype=np.float32)


@lru_cache(maxsize=4)
def synthetic_models(n_classes: int = NUM_CLASSES) -> SyntheticModels:
    """Build (once per process) the teacher/student pair over the glosses of the first ``n_classes`` classes."""
    if not 2 <= n_classes <= NUM_CLASSES:
        raise ValueError(f"n_classes must be in 2..{NUM_CLASSES} (WordNet has {NUM_CLASSES} classes)")
    glosses = sorted((g for g in load_glosses() if g.label < n_classes), key=lambda g: g.label)
    texts = [g.text for g in glosses]
    labels = np.asarray([g.label for g in glosses], dtype=np.int64)
    count = np.bincount(labels, minlength=n_classes)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])

    rng = np.random.default_rng(MODEL_SEED)
    w = rng.standard_normal((HASH_DIM, n_classes)).astype(np.float32)
    indptr, indices, values = _hashed_bow(texts)
    teacher = np.zeros((len(texts), n_classes), dtype=np.float32)
    rows = np.repeat(np.arange(len(texts)), np.diff(indptr))
    np.add.at(teacher, rows, values[:, None] * w[indices])
    teacher[np.arange(len(texts)), labels] += TEACHER_MARGIN

    # base mix: Zipf-like over a fixed random order of the classes that have texts
    present = np.flatnonzero(count > 0)
    order = rng.permutation(present)
    base = np.zeros(n_classes)
    base[order] = 1.0 / np.arange(1, len(order) + 1) ** 0.8
    base /= base.sum()
    shifted = np.zeros(n_classes)
    shifted[order[::-1]] = base[order]
    common = np.zeros(n_classes, dtype=bool)
    common[order[: (len(order) + 1) // 2]] = True
    noise_scale = np.where(common, STUDENT_NOISE_COMMON, STUDENT_NOISE_RARE).astype(np.float32)
    student = teacher + noise_scale[labels][:, None] * rng.standard_normal(teacher.shape).astype(np.float32)
    return SyntheticModels(
        texts=texts,
        labels=labels,
        class_start=start,
        class_count=count,
        teacher=teacher,
        student=student,
        base_weights=base,
        shifted_weights=shifted,
    )


def _iso_ms(ts: np.ndarray) -> list[str]:
    ms = np.round(ts * 1000).astype("datetime64[ms]")
    return [s + "Z" for s in np.datetime_as_string(ms, unit="ms").tolist()]


def generate_records(
    n: int,
    n_classes: int = NUM_CLASSES,
    shift_at: int | None = None,
    seed: int = 0,
    shadow_fraction: float = 0.2,
    label_fraction: float = 0.05,
    *,
    shift_strength: float = 0.6,
    model: str = "intent-classifier",
    version: str = "1",
    start_ts: float = DEFAULT_START_TS,
    records_per_s: float = 20.0,
    chunk: int = 8192,
) -> Iterator[dict[str, Any]]:
    """Yield ``n`` inference records (dicts in the Kafka JSON schema).

    From record index ``shift_at`` on, the class mix moves ``shift_strength``
    of the way from the base mix to the shifted mix (rare classes become
    common). ``shadow_fraction`` of records carry teacher logits,
    ``label_fraction`` carry a label. Event times advance by
    ``1/records_per_s`` seconds per record from ``start_ts`` (epoch seconds).
    """
    if not 0 <= shift_strength <= 1:
        raise ValueError("shift_strength must be in [0, 1]")
    m = synthetic_models(n_classes)
    rng = np.random.default_rng(seed)
    base_cdf = np.cumsum(m.base_weights)
    shifted_cdf = np.cumsum((1 - shift_strength) * m.base_weights + shift_strength * m.shifted_weights)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        k = hi - lo
        # draw full chunks whatever n is, so a stream's first records do not depend on its length
        u_class, u_text, u_teacher, u_label = (rng.random(chunk)[:k] for _ in range(4))
        latency = np.round(rng.lognormal(np.log(8.0), 0.3, chunk)[:k], 2).tolist()
        idx = np.arange(lo, hi)
        shifted = np.zeros(k, dtype=bool) if shift_at is None else idx >= shift_at
        cls = np.where(
            shifted,
            np.searchsorted(shifted_cdf, u_class * shifted_cdf[-1], side="right"),
            np.searchsorted(base_cdf, u_class * base_cdf[-1], side="right"),
        ).clip(0, n_classes - 1)
        text_idx = m.class_start[cls] + (u_text * m.class_count[cls]).astype(np.int64)
        has_teacher = u_teacher < shadow_fraction
        has_label = u_label < label_fraction
        stamps = _iso_ms(start_ts + idx / records_per_s)
        student = m.student[text_idx]
        preds = student.argmax(axis=1).tolist()
        # float64 before rounding, so the JSON carries 3 decimals rather than float32 noise
        student_l = np.round(student.astype(np.float64), 3).tolist()
        teacher_l = np.round(m.teacher[text_idx].astype(np.float64), 3).tolist()
        for j in range(hi - lo):
            t = int(text_idx[j])
            rec: dict[str, Any] = {
                "request_id": f"{seed:x}-{lo + j:010d}",
                "ts": stamps[j],
                "model": model,
                "model_version": version,
                "input": {"text": m.texts[t]},
                "student": {"logits": student_l[j]},
                "prediction": preds[j],
                "latency_ms": latency[j],
            }
            if has_teacher[j]:
                rec["teacher"] = {"logits": teacher_l[j]}
            if has_label[j]:
                rec["label"] = int(m.labels[t])
            yield rec


def encode(record: dict[str, Any]) -> bytes:
    """One record as the Kafka message value (JSON bytes)."""
    return orjson.dumps(record)


def write_jsonl(path: Path, records: Iterator[dict[str, Any]], total: int | None = None) -> int:
    """Write records one JSON per line; return how many."""
    n = 0
    with path.open("wb") as fh:
        for rec in tqdm(records, total=total, unit="rec", desc=f"writing {path.name}", disable=total is None):
            fh.write(encode(rec))
            fh.write(b"\n")
            n += 1
    return n


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m distilld.daemon.traffic_synth",
        description="Write a synthetic inference-log JSONL stream.",
    )
    p.add_argument("--records", type=int, required=True, help="how many records")
    p.add_argument("--out", type=Path, required=True, help="JSONL file to write")
    p.add_argument("--shift-at", type=int, default=None, help="record index where the class mix shifts")
    p.add_argument("--shift-strength", type=float, default=0.6, help="how far the mix moves (0..1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", type=int, default=NUM_CLASSES)
    p.add_argument(
        "--shadow-fraction", type=float, default=0.2, help="fraction of records with teacher logits"
    )
    p.add_argument("--label-fraction", type=float, default=0.05, help="fraction of records with a label")
    p.add_argument("--model", default="intent-classifier")
    p.add_argument("--model-version", default="1")
    p.add_argument("--records-per-s", type=float, default=20.0, help="event-time rate of the stream")
    args = p.parse_args(argv)
    gen = generate_records(
        args.records,
        n_classes=args.classes,
        shift_at=args.shift_at,
        seed=args.seed,
        shadow_fraction=args.shadow_fraction,
        label_fraction=args.label_fraction,
        shift_strength=args.shift_strength,
        model=args.model,
        version=args.model_version,
        records_per_s=args.records_per_s,
    )
    n = write_jsonl(args.out, gen, total=args.records)
    print(f"wrote {n} records to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
