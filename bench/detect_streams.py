"""WordNet-gloss record streams with known change points, for bench/detect.py.

Texts are real glosses (class = lexicographer file). Logits come from a
fixed random model over the gloss's words, so a change in the words changes
the outputs the way it would for a real student:

    teacher = 3 * onehot(class) + X @ W_teacher + noise
    student = teacher + X @ W_gap + noise

with X the gloss's hashed word counts (L2-normalised). ``W_gap`` is where
the student falls short of its teacher; it is larger for words typical of
example sentences, so a shift towards such texts also raises divergence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from distilld.detectors.ngram_hashing import bucket_of, hash_tokens
from distilld.detectors.record_batch import NO_LABEL, RecordBatch
from distilld.trainers.wordnet import NUM_CLASSES, Gloss

FEATURES = 1 << 12


@dataclass(frozen=True)
class StreamSpec:
    name: str
    description: str
    change_at: int | None  # records after the reference at which the change starts
    ramp_records: int  # 0 for an abrupt change
    records: int  # records after the reference


class GlossPools:
    """Glosses per class, split into definitions only and definitions with example sentences."""

    def __init__(self, glosses: list[Gloss]):
        self.by_class: dict[str, dict[int, list[str]]] = {"all": {}, "definition": {}, "example": {}}
        for g in glosses:
            kind = "example" if '"' in g.text else "definition"
            self.by_class["all"].setdefault(g.label, []).append(g.text)
            self.by_class[kind].setdefault(g.label, []).append(g.text)
        self.natural = np.bincount([g.label for g in glosses], minlength=NUM_CLASSES).astype(float)
        both = [
            c
            for c in range(NUM_CLASSES)
            if c in self.by_class["definition"] and c in self.by_class["example"]
        ]
        self.text_shift_classes = np.array(both)

    def draw(self, classes: np.ndarray, pool: str, rng: np.random.Generator) -> list[str]:
        table = self.by_class[pool]
        return [table[c][rng.integers(len(table[c]))] for c in classes.tolist()]


class LogitModel:
    def __init__(self, pools: GlossPools, seed: int = 0, gap: float = 1.0):
        rng = np.random.default_rng(seed)
        self.w_teacher = rng.normal(0, 0.7, size=(FEATURES, NUM_CLASSES)).astype(np.float32)
        # the student's shortfall grows with how typical a word is of example sentences
        example = self._feature_counts([t for ts in pools.by_class["example"].values() for t in ts])
        definition = self._feature_counts([t for ts in pools.by_class["definition"].values() for t in ts])
        share = (example / example.sum()) / np.maximum(
            example / example.sum() + definition / definition.sum(), 1e-12
        )
        scale = (0.1 + 2.4 * share**2).astype(np.float32)[:, None]
        self.w_gap = (gap * scale * rng.normal(0, 1.0, size=(FEATURES, NUM_CLASSES))).astype(np.float32)

    @staticmethod
    def _feature_counts(texts: list[str]) -> np.ndarray:
        return (
            np.bincount(bucket_of(hash_tokens(texts).hashes, FEATURES), minlength=FEATURES).astype(float) + 1
        )

    def features(self, texts: list[str]) -> sparse.csr_matrix:
        tokens = hash_tokens(texts)
        x = sparse.csr_matrix(
            (np.ones(len(tokens.hashes), np.float32), (tokens.doc, bucket_of(tokens.hashes, FEATURES))),
            shape=(len(texts), FEATURES),
        )
        x.sum_duplicates()
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        return sparse.diags(1 / np.maximum(norms, 1)).dot(x).tocsr()

    def logits(
        self, texts: list[str], labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        x = self.features(texts)
        n = len(texts)
        teacher = np.asarray(x @ self.w_teacher) + rng.normal(0, 0.5, size=(n, NUM_CLASSES))
        teacher[np.arange(n), labels] += 4.0
        student = teacher + np.asarray(x @ self.w_gap) + rng.normal(0, 0.5, size=(n, NUM_CLASSES))
        return student.astype(np.float32), teacher.astype(np.float32)


def shifted_mix(
    natural: np.ndarray, fraction: float, rng: np.random.Generator, n_classes: int = 10
) -> np.ndarray:
    """``fraction`` of the traffic moves to ``n_classes`` random classes (in their natural proportions)."""
    p = natural / natural.sum()
    chosen = rng.choice(np.flatnonzero(p > 0), size=n_classes, replace=False)
    q = np.zeros_like(p)
    q[chosen] = p[chosen] / p[chosen].sum()
    return (1 - fraction) * p + fraction * q


class StreamMaker:
    """Makes batches of records for one stream, with teacher outputs and labels on samples of records."""

    def __init__(
        self,
        pools: GlossPools,
        model: LogitModel,
        seed: int,
        teacher_share: float = 0.2,
        label_share: float = 0.05,
    ):
        self.pools = pools
        self.model = model
        self.rng = np.random.default_rng(seed)
        self.teacher_share = teacher_share
        self.label_share = label_share
        self.next_id = 0

    def batch(
        self,
        class_probs: np.ndarray,
        pool: str,
        n: int,
        shifted_probs: np.ndarray | None = None,
        shifted_share: np.ndarray | None = None,
        shifted_pool: str | None = None,
    ) -> RecordBatch:
        """``n`` records; record i comes from the shifted mix/pool with probability ``shifted_share[i]``."""
        rng = self.rng
        moved = np.zeros(n, bool) if shifted_share is None else rng.random(n) < shifted_share
        classes = rng.choice(NUM_CLASSES, size=n, p=class_probs)
        if shifted_probs is not None:
            classes[moved] = rng.choice(NUM_CLASSES, size=int(moved.sum()), p=shifted_probs)
        texts = self.pools.draw(classes, pool, rng)
        if shifted_pool is not None:
            for i, t in zip(
                np.flatnonzero(moved), self.pools.draw(classes[moved], shifted_pool, rng), strict=True
            ):
                texts[i] = t
        student, teacher = self.model.logits(texts, classes, rng)
        ids = [f"r{self.next_id + i}" for i in range(n)]
        self.next_id += n
        return RecordBatch.from_columns(
            texts=texts,
            student_logits=student,
            teacher_logits=teacher,
            has_teacher=rng.random(n) < self.teacher_share,
            labels=np.where(rng.random(n) < self.label_share, classes, NO_LABEL),
            request_ids=ids,
            ts=np.arange(self.next_id - n, self.next_id, dtype=np.float64),
        )
