"""Tiny random-weight pipelines for the worker's unit tests: built once per test session,
loaded fresh where a test changes them (adapters), run at 64x64 for 2 steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

_built: dict[str, Path] = {}


def model_dir(family: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model of `family`, built on first use."""
    if family not in _built:
        from worker.demo_model import build

        _built[family] = build(family, tmp_path_factory.mktemp("tiny") / family)
    return _built[family]


def load(path: Path) -> Any:
    from diffusers import AutoPipelineForText2Image

    pipe = AutoPipelineForText2Image.from_pretrained(str(path))  # type: ignore[no-untyped-call]
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe: Any, **kwargs: Any) -> np.ndarray[Any, Any]:
    """One 64x64, 2-step image as floats in [0, 1] (seed 0 unless `seed` is given); the prompt
    defaults to "a cat"."""
    seed = int(kwargs.pop("seed", 0))
    if "prompt" not in kwargs and "prompt_embeds" not in kwargs:
        kwargs["prompt"] = "a cat"
    kwargs.setdefault("width", 64)
    kwargs.setdefault("height", 64)
    generator = torch.Generator("cpu").manual_seed(seed)
    with torch.inference_mode():
        result = pipe(num_inference_steps=2, generator=generator, output_type="np", **kwargs)
    images: np.ndarray[Any, Any] = result.images
    return images
