"""Word and word-bigram hashing for whole batches of texts, in numpy.

Input drift has to look at every record, and a Python loop over tokens tops
out far below the 50k records/s the detector path needs. So a batch of texts
is joined into one byte buffer, tokenised with byte-table lookups, and every
token hashed at once with a polynomial rolling hash computed from a prefix
sum (uint64 arithmetic wraps mod 2**64, which is exactly the ring the hash
lives in). The hash is stable across processes and machines (unlike Python's
salted ``hash``), so states built by different consumers can be merged.

Tokens are maximal runs of ASCII letters/digits or non-ASCII bytes (so
accented and non-Latin words stay whole), lower-cased for ASCII.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_BASE = np.uint64(0x100000001B3)  # odd, so invertible mod 2**64
_BASE_INV = np.uint64(pow(int(_BASE), -1, 2**64))
_BIGRAM_MIX = np.uint64(0x9E3779B97F4A7C15)

_IS_WORD = np.zeros(256, dtype=bool)
for _c in b"abcdefghijklmnopqrstuvwxyz0123456789":
    _IS_WORD[_c] = True
_IS_WORD[128:] = True
_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")

_powers: dict[str, np.ndarray] = {}


def _power_table(kind: str, base: np.uint64, n: int) -> np.ndarray:
    table = _powers.get(kind)
    if table is None or len(table) < n:
        size = max(n, 2 * len(table) if table is not None else 1 << 16)
        with np.errstate(over="ignore"):
            table = np.cumprod(np.full(size, base, dtype=np.uint64))
        table = np.concatenate([np.ones(1, dtype=np.uint64), table[:-1]])
        _powers[kind] = table
    return table[:n]


def _finalise(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads the polynomial hash's weak low bits."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(30))
        h = h * np.uint64(0xBF58476D1CE4E5B9)
        h = h ^ (h >> np.uint64(27))
        h = h * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


@dataclass(frozen=True)
class HashedTokens:
    """Tokens of a batch of texts: their 64-bit hashes and the text each came from."""

    hashes: np.ndarray  # uint64 per token
    doc: np.ndarray  # int64 per token: index of its text in the batch
    n_texts: int
    starts: np.ndarray  # byte offset of each token in ``buffer``
    ends: np.ndarray
    buffer: bytes  # the lower-cased, joined texts

    def token(self, i: int) -> str:
        return self.buffer[self.starts[i] : self.ends[i]].decode("utf-8", "replace")

    @property
    def tokens_per_text(self) -> np.ndarray:
        return np.bincount(self.doc, minlength=self.n_texts)

    def bigram_hashes(self) -> np.ndarray:
        """Hashes of adjacent token pairs inside one text."""
        same_doc = self.doc[1:] == self.doc[:-1]
        with np.errstate(over="ignore"):
            pair = self.hashes[:-1][same_doc] * _BIGRAM_MIX + self.hashes[1:][same_doc]
        return _finalise(pair)


def hash_tokens(texts: Sequence[str]) -> HashedTokens:
    """Tokenise and hash every text of a batch in one pass."""
    n = len(texts)
    if n == 0:
        return _no_tokens(0, b"")
    # "\n" separates texts and is never a word byte, so tokens cannot span texts.
    raw = "\n".join(texts).encode("utf-8", "surrogatepass").translate(_LOWER)
    buf = np.frombuffer(raw, dtype=np.uint8)
    newlines = np.flatnonzero(buf == 10)
    if len(newlines) != n - 1:  # some text has its own line breaks: make them plain spaces
        raw = (
            "\n".join(t.replace("\n", " ") for t in texts).encode("utf-8", "surrogatepass").translate(_LOWER)
        )
        buf = np.frombuffer(raw, dtype=np.uint8)
        newlines = np.flatnonzero(buf == 10)
    word = _IS_WORD[buf]
    edges = np.diff(word.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    if len(starts) == 0:
        return _no_tokens(n, raw)
    # prefix[i] = sum_{j<i} b[j] * BASE_INV**j, so the polynomial hash of
    # b[s:e] = sum b[j] * BASE**(e-1-j) = BASE**(e-1) * (prefix[e] - prefix[s]).
    inv_pow = _power_table("inv", _BASE_INV, len(buf))
    fwd_pow = _power_table("fwd", _BASE, len(buf))
    with np.errstate(over="ignore"):
        prefix = np.empty(len(buf) + 1, dtype=np.uint64)
        prefix[0] = 0
        np.cumsum(buf.astype(np.uint64) * inv_pow, out=prefix[1:])
        h = fwd_pow[ends - 1] * (prefix[ends] - prefix[starts])
        h = h + (ends - starts).astype(np.uint64)  # keeps a token distinct from its zero-padded cousins
    doc = np.searchsorted(newlines, starts)
    return HashedTokens(_finalise(h), doc.astype(np.int64), n, starts, ends, raw)


def _no_tokens(n_texts: int, raw: bytes) -> HashedTokens:
    empty = np.zeros(0, np.int64)
    return HashedTokens(np.zeros(0, np.uint64), empty, n_texts, empty, empty, raw)


def hash_strings(values: Sequence[str]) -> np.ndarray:
    """A stable 64-bit hash of each whole string (e.g. request ids)."""
    n = len(values)
    if n == 0:
        return np.zeros(0, np.uint64)
    raw = "\n".join(v.replace("\n", " ") for v in values).encode("utf-8", "surrogatepass")
    buf = np.frombuffer(raw, dtype=np.uint8)
    newlines = np.flatnonzero(buf == 10)
    starts = np.concatenate([[0], newlines + 1])
    ends = np.concatenate([newlines, [len(buf)]])
    inv_pow = _power_table("inv", _BASE_INV, len(buf))
    fwd_pow = _power_table("fwd", _BASE, len(buf) + 1)
    with np.errstate(over="ignore"):
        prefix = np.empty(len(buf) + 1, dtype=np.uint64)
        prefix[0] = 0
        np.cumsum(buf.astype(np.uint64) * inv_pow, out=prefix[1:])
        h = fwd_pow[np.maximum(ends - 1, 0)] * (prefix[ends] - prefix[starts])
        h = h + (ends - starts).astype(np.uint64)
    return _finalise(h)


def bucket_of(hashes: np.ndarray, n_buckets: int) -> np.ndarray:
    """Bucket index from the top bits (``n_buckets`` is a power of two)."""
    shift = np.uint64(64 - (n_buckets.bit_length() - 1))
    return (hashes >> shift).astype(np.int64)
