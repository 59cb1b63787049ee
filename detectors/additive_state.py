"""Detector states that are sums over records, and their compact JSON form.

Every detector keeps only counts and sums, so two states over disjoint
records merge by addition (consumer-group members can split the work) and a
state minus a part of it is the state of the rest (calibration uses that to
compare a reference sub-window with the remainder of the reference).
"""

from __future__ import annotations

import base64
import zlib
from typing import Any, ClassVar, Self

import numpy as np


def encode_array(a: np.ndarray) -> dict[str, Any]:
    """JSON-able form of an array: dtype, shape and zlib-compressed bytes in base64.

    Hash histograms are mostly zeros, so compression keeps a window state small.
    Level 1: states are written every consumed batch, where level 6 cost a
    tenth of the daemon's ingest time for blobs barely smaller.
    """
    a = a if a.flags.c_contiguous else a.copy(order="C")
    return {
        "dtype": a.dtype.str,
        "shape": list(a.shape),
        "zlib_b64": base64.b64encode(zlib.compress(a.tobytes(), 1)).decode("ascii"),
    }


def decode_array(d: dict[str, Any]) -> np.ndarray:
    raw = zlib.decompress(base64.b64decode(d["zlib_b64"]))
    return np.frombuffer(raw, dtype=np.dtype(d["dtype"])).reshape(tuple(d["shape"])).copy()


class AdditiveState:
    """Base of detector states: named numpy arrays that add up over records.

    Subclasses list their array names in ``fields`` and their settings (which
    must agree for two states to merge) in ``params``.
    """

    kind: ClassVar[str]
    fields: ClassVar[tuple[str, ...]]
    params: ClassVar[tuple[str, ...]]

    def _check_compatible(self, other: AdditiveState) -> None:
        if type(other) is not type(self):
            raise TypeError(f"cannot combine {type(self).__name__} with {type(other).__name__}")
        for p in self.params:
            if getattr(self, p) != getattr(other, p):
                raise ValueError(f"cannot combine {self.kind} states with different {p}")

    def merge(self, other: Self) -> Self:
        """Fold ``other`` (disjoint records) into this state; returns self."""
        self._check_compatible(other)
        for f in self.fields:
            getattr(self, f).__iadd__(getattr(other, f))
        return self

    def minus(self, part: Self) -> Self:
        """A new state of this state's records that are not in ``part``."""
        self._check_compatible(part)
        out = self.copy()
        for f in self.fields:
            getattr(out, f).__isub__(getattr(part, f))
        return out

    def copy(self) -> Self:
        return type(self).from_dict(self.to_dict(compress=False))

    def to_dict(self, compress: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind}
        d.update({p: getattr(self, p) for p in self.params})
        for f in self.fields:
            a = getattr(self, f)
            d[f] = encode_array(a) if compress else a.copy()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        if d.get("kind") != cls.kind:
            raise ValueError(f"expected a {cls.kind!r} state, got {d.get('kind')!r}")
        state = cls(**{p: d[p] for p in cls.params})
        for f in cls.fields:
            v = d[f]
            a = decode_array(v) if isinstance(v, dict) else np.array(v, copy=True)
            expected = getattr(state, f)
            if a.shape != expected.shape:
                raise ValueError(f"{cls.kind}.{f} has shape {a.shape}, expected {expected.shape}")
            setattr(state, f, a.astype(expected.dtype, copy=False))
        return state

    def equals(self, other: AdditiveState, rtol: float = 1e-9) -> bool:
        """Same settings and counts; float sums equal up to summation order."""
        if type(other) is not type(self) or any(getattr(self, p) != getattr(other, p) for p in self.params):
            return False
        for f in self.fields:
            a, b = getattr(self, f), getattr(other, f)
            same = np.allclose(a, b, rtol=rtol, atol=1e-12) if a.dtype.kind == "f" else np.array_equal(a, b)
            if not same:
                return False
        return True
