from __future__ import annotations

import pytest

from distilld.trainers.tiny_models import make_tiny_classifier
from tests.trainers.builders import N_CLASSES, write_synthetic_snapshot


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    return make_tiny_classifier("bert", N_CLASSES, tmp_path_factory.mktemp("bert"), seed=0)


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory):
    return make_tiny_classifier("distilbert", N_CLASSES, tmp_path_factory.mktemp("distilbert"), seed=0)


@pytest.fixture(params=["bert", "distilbert"])
def tiny_student(request, tiny_bert, tiny_distilbert):
    return {"bert": tiny_bert, "distilbert": tiny_distilbert}[request.param]


@pytest.fixture
def snapshot_dir(tmp_path):
    return write_synthetic_snapshot(tmp_path / "snapshot")
