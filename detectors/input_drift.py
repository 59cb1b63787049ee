"""Input drift for text: hashed word n-gram histograms plus length and unseen-word statistics.

Every record's words and adjacent word pairs are hashed into a fixed number
of buckets (first half unigrams, second half bigrams), so a window's state
has a bounded size whatever the vocabulary. Metrics (all "above"):

- ``input.ngram_js``: Jensen-Shannon divergence (bits) between the current and
  reference n-gram bucket distributions, over the buckets a window of
  ``window_records`` records expects at least ``min_expected`` counts in (the
  rest pooled into one cell: rare buckets are mostly sampling noise).
- ``input.length_shift``: absolute difference of mean words per record.
- ``input.oov_rate``: share of the current window's words that fall in
  buckets the reference never saw (a hashed out-of-vocabulary rate; hash
  collisions make it a lower bound).

No embedding (MMD) test: it would need the student's encoder on the record
path; the n-gram test is the one that sees every record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from distilld.detectors.additive_state import AdditiveState
from distilld.detectors.calibration import Calibration, uncalibrated_score
from distilld.detectors.ngram_hashing import bucket_of, hash_tokens
from distilld.detectors.record_batch import RecordBatch
from distilld.detectors.record_signals import RecordSignals
from distilld.detectors.score import Score
from distilld.detectors.statistic import (
    Statistic,
    js_bits,
    js_contributions,
    mean_and_var,
    pool_rare,
    unusable,
)

METRICS = ("input.ngram_js", "input.length_shift", "input.oov_rate")


class InputDrift(AdditiveState):
    kind = "input_drift"
    params = ("ngram_buckets",)
    fields = ("n", "ngram_counts", "token_sum", "token_sq", "empty")

    def __init__(self, ngram_buckets: int = 1 << 15):
        if ngram_buckets < 4 or ngram_buckets & (ngram_buckets - 1):
            raise ValueError(f"ngram_buckets must be a power of two >= 4, got {ngram_buckets}")
        self.ngram_buckets = int(ngram_buckets)
        self.n = np.zeros((), np.int64)
        self.ngram_counts = np.zeros(ngram_buckets, np.int64)
        self.token_sum = np.zeros((), np.float64)
        self.token_sq = np.zeros((), np.float64)
        self.empty = np.zeros((), np.int64)

    @property
    def _half(self) -> int:
        return self.ngram_buckets // 2

    def update(self, batch: RecordBatch, signals: RecordSignals | None = None) -> None:
        if len(batch) == 0:
            return
        tokens = (signals or RecordSignals(batch)).tokens
        half = self._half
        uni = bucket_of(tokens.hashes, half)
        bi = bucket_of(tokens.bigram_hashes(), half) + half
        self.ngram_counts += np.bincount(np.concatenate([uni, bi]), minlength=self.ngram_buckets)
        per_text = tokens.tokens_per_text.astype(np.float64)
        self.n += len(batch)
        self.token_sum += per_text.sum()
        self.token_sq += (per_text * per_text).sum()
        self.empty += int((per_text == 0).sum())

    def _oov_rate(self, current: InputDrift) -> tuple[float, int]:
        half = self._half
        words = current.ngram_counts[:half]
        total = int(words.sum())
        if total == 0:
            return 0.0, 0
        unseen = self.ngram_counts[:half] == 0
        return float(words[unseen].sum()) / total, total

    def _grams(self, texts: Sequence[str], wanted: np.ndarray) -> list[tuple[int, str]]:
        """(bucket, n-gram) for the words and word pairs of ``texts`` that ``update`` hashes into a
        bucket where ``wanted`` (a mask over buckets) is true."""
        if not texts:
            return []
        half = self._half
        hashed = hash_tokens(texts)
        uni = bucket_of(hashed.hashes, half)
        out = [(int(uni[i]), hashed.token(i)) for i in np.flatnonzero(wanted[uni]).tolist()]
        pair_index = np.flatnonzero(hashed.doc[1:] == hashed.doc[:-1])
        bi = bucket_of(hashed.bigram_hashes(), half) + half
        out += [
            (int(bi[j]), f"{hashed.token(int(pair_index[j]))} {hashed.token(int(pair_index[j]) + 1)}")
            for j in np.flatnonzero(wanted[bi]).tolist()
        ]
        return out

    @staticmethod
    def _name_buckets(buckets: Sequence[int], grams: list[tuple[int, str]]) -> dict[int, str]:
        """The n-gram most often hashed to each of ``buckets``."""
        wanted = set(buckets)
        counts = Counter(pair for pair in grams if pair[0] in wanted)
        names: dict[int, str] = {}
        for (bucket, gram), _ in counts.most_common():
            names.setdefault(bucket, gram)
        return names

    def statistics(
        self,
        current: InputDrift,
        evidence: bool = True,
        top_k: int = 5,
        current_texts: Sequence[str] = (),
        reference_texts: Sequence[str] = (),
        window_records: int = 5000,
        min_expected: float = 20.0,
    ) -> list[Statistic]:
        m, n = int(self.n), int(current.n)
        if m == 0 or n == 0:
            return [
                unusable("input.ngram_js", "chi2", n, m, "empty window"),
                unusable("input.length_shift", "z_two_sided", n, m, "empty window"),
                unusable("input.oov_rate", "level", n, m, "empty window"),
            ]
        size_scale = 1 / n + 1 / m
        js = js_bits(*pool_rare(current.ngram_counts, self.ngram_counts, window_records, m, min_expected))
        ref_len, ref_var = mean_and_var(float(self.token_sum), float(self.token_sq), m)
        cur_len = float(current.token_sum) / n
        oov, n_words = self._oov_rate(current)

        js_ev: dict[str, object] = {}
        len_ev: dict[str, object] = {}
        oov_ev: dict[str, object] = {}
        if evidence:
            cur_counts, ref_counts = current.ngram_counts, self.ngram_counts
            cur_tokens, ref_tokens = max(int(cur_counts.sum()), 1), max(int(ref_counts.sum()), 1)
            # rank by share of the divergence, among n-grams frequent enough to be more than noise
            contrib = js_contributions(cur_counts, ref_counts)
            contrib[np.maximum(cur_counts, ref_counts * (n / m)) < 10] = 0.0
            top = [b for b in np.argsort(-contrib)[: 8 * top_k].tolist() if contrib[b] > 0]
            wanted = np.zeros(self.ngram_buckets, bool)
            wanted[top] = True
            names = self._name_buckets(
                top, self._grams(current_texts, wanted) + self._grams(reference_texts, wanted)
            )
            named = [
                {
                    "ngram": names[b],
                    "current_per_1000": 1000 * float(cur_counts[b]) / cur_tokens,
                    "reference_per_1000": 1000 * float(ref_counts[b]) / ref_tokens,
                }
                for b in top
                if b in names
            ]
            js_ev = {
                "rising_ngrams": [x for x in named if x["current_per_1000"] > x["reference_per_1000"]][
                    :top_k
                ],
                "falling_ngrams": [x for x in named if x["current_per_1000"] < x["reference_per_1000"]][
                    :top_k
                ],
                "ngram_buckets": self.ngram_buckets,
            }
            len_ev = {
                "current_mean_words": cur_len,
                "reference_mean_words": ref_len,
                "current_empty_share": float(current.empty) / n,
                "reference_empty_share": float(self.empty) / m,
            }
            unseen = self.ngram_counts == 0
            unseen[self._half :] = False
            examples = sorted({g for _, g in self._grams(current_texts, unseen)})[:top_k]
            oov_ev = {"current_words": n_words, "unseen_word_examples": examples}
        return [
            Statistic("input.ngram_js", js, size_scale, "chi2", n, m, evidence=js_ev),
            Statistic(
                "input.length_shift",
                abs(cur_len - ref_len),
                float(np.sqrt(max(ref_var, 1e-12) * size_scale)),
                "z_two_sided",
                n,
                m,
                evidence=len_ev,
            ),
            Statistic("input.oov_rate", oov, 1 / np.sqrt(n), "level", n, m, evidence=oov_ev),
        ]

    @staticmethod
    def score(
        reference: InputDrift,
        current: InputDrift,
        calibration: Calibration | None = None,
        current_texts: Sequence[str] = (),
        reference_texts: Sequence[str] = (),
        window_records: int = 5000,
    ) -> list[Score]:
        stats = reference.statistics(
            current,
            current_texts=current_texts,
            reference_texts=reference_texts,
            window_records=window_records,
        )
        return [calibration.score(s) if calibration else uncalibrated_score(s) for s in stats]
