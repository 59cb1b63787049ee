"""Device choice and mixed precision: CUDA with bf16 autocast when present, CPU otherwise."""

from __future__ import annotations

import contextlib
from typing import Literal

import torch


class DeviceUnavailable(RuntimeError):
    pass


def resolve_device(policy: Literal["auto", "cpu", "cuda"]) -> torch.device:
    if policy == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if policy == "cuda":
        raise DeviceUnavailable("device 'cuda' requested but torch sees no CUDA device")
    return torch.device("cpu")


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaling needed, unlike fp16); full precision on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()
