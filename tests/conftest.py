"""Fixtures shared by every test: the tiny model, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SD-1.x pipeline with random weights, saved in diffusers format."""
    from worker.demo_model import build_sd1

    path = tmp_path_factory.mktemp("models") / "tiny-sd"
    build_sd1(path)
    return path
