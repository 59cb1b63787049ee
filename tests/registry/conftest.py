"""Fixtures for the registry tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from registry_builders import write_export, write_tiny_model

from distilld.registry.config import RegistryConfig
from distilld.registry.model_registry import ModelRegistry


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("base") / "student", seed=0)


@pytest.fixture
def make_export(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(1, 1000))

    def make(metrics: dict[str, Any], seed: int | None = None) -> Path:
        n = next(counter)
        return write_export(tmp_path / f"export-{n}", seed if seed is not None else 100 + n, metrics)

    return make


@pytest.fixture
def local_registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(RegistryConfig(), state_dir=tmp_path / "state")


@pytest.fixture
def receiver():
    from registry_builders import Receiver

    server = Receiver()
    yield server
    server.close()
