"""The GPU check, run small on the CPU, and the real-size architectures' parameter counts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from bench import gpu_check
from bench.archs import architecture, build_pipeline, meta_parameter_counts

MODELS = ("sd1", "sdxl", "flux")


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    # The tiny models' kernels are too small to share: on a busy machine OpenMP's workers
    # spin waiting for cores, and two threads ran this file four times slower than one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    out = tmp_path / "result.json"
    code = gpu_check.main(["--tiny", "--device", "cpu", "--out", str(out), *args])
    return code, json.loads(out.read_text(encoding="utf-8"))


def test_tiny_cpu_run_writes_a_row_per_configuration(tmp_path: Path) -> None:
    code, report = run(
        tmp_path, "--steps", "1", "--runs", "1", "--skip-compile", "--models", ",".join(MODELS)
    )
    assert code == 0
    rows = {(r["model"], r["config"]): r for r in report["rows"]}
    expected = [(m, c) for m in MODELS for c in ("build", "sdpa", "vae", "sdpa-b4", "xformers")]
    assert sorted(rows) == sorted(expected)
    assert report["environment"]["device"] == "cpu"
    for model in MODELS:
        assert rows[model, "build"]["status"] == "ok"
        assert all(n > 0 for n in rows[model, "build"]["extra"]["params"].values())
        for config, batch in (("sdpa", 1), ("sdpa-b4", 4)):
            row = rows[model, config]
            assert row["status"] == "ok", row["error"]
            assert row["batch"] == batch and len(row["runs_s"]) == 1
            assert row["s_per_image"] > 0 and row["images_per_s"] > 0
        vae = rows[model, "vae"]
        assert vae["status"] == "ok", vae["error"]
        assert isinstance(vae["extra"]["fp16_nan_or_inf"], bool)
        assert {"float16", "bfloat16", "float32"} <= set(vae["extra"])
        # xformers is not installed here, and needs CUDA anyway: reported, never a crash.
        assert rows[model, "xformers"]["status"] == "unavailable"


def test_compile_path_traces_the_tiny_unet(tmp_path: Path) -> None:
    # The "eager" backend runs dynamo's capture of the pipeline's UNet without generating code.
    code, report = run(
        tmp_path,
        *("--models", "sd1", "--configs", "compile", "--steps", "2", "--runs", "1"),
        *("--compile-backend", "eager"),
    )
    assert code == 0
    compiled = report["rows"][-1]
    assert compiled["config"] == "compile" and compiled["status"] == "ok", compiled["error"]
    assert compiled["compile_s"] > 0 and compiled["s_per_image"] > 0


def test_spent_time_budget_skips_and_says_so(tmp_path: Path) -> None:
    code, report = run(tmp_path, "--models", "sd1,flux", "--time-budget-s", "0")
    assert code == 0
    assert report["rows"] and all(r["status"] == "skipped" for r in report["rows"])
    assert "time budget" in report["rows"][0]["note"]


def test_real_sizes_refused_on_the_cpu(tmp_path: Path) -> None:
    assert gpu_check.main(["--device", "cpu", "--out", str(tmp_path / "x.json")]) == 2


def test_xformers_processors_are_undone() -> None:
    from diffusers.models.attention_processor import XFormersAttnProcessor

    for name in ("sd1", "flux"):
        built = build_pipeline(architecture(name, tiny=True), "cpu", torch.float32)
        state = gpu_check.attention_state(built.pipe)
        denoiser = getattr(built.pipe, architecture(name).denoiser)
        # What enable_xformers_memory_efficient_attention does, without needing xformers.
        built.pipe.vae.set_attn_processor(XFormersAttnProcessor())
        for processor in denoiser.attn_processors.values():
            if hasattr(processor, "_attention_backend"):
                processor._attention_backend = "xformers"
            else:
                denoiser.set_attn_processor(XFormersAttnProcessor())
                break
        gpu_check.restore_attention(state)
        for module in (built.pipe.vae, denoiser):
            for processor in module.attn_processors.values():
                assert "XFormers" not in type(processor).__name__
                assert getattr(processor, "_attention_backend", None) is None


# The published sizes: SD 1.5's UNet 859.52M, SDXL's 2567.46M, FLUX.1-dev's transformer 11.90B.
PUBLISHED = {
    ("sd1", "unet"): 859.52e6,
    ("sd1", "text_encoder"): 123.06e6,
    ("sd1", "vae"): 83.65e6,
    ("sdxl", "unet"): 2567.46e6,
    ("sdxl", "text_encoder"): 123.06e6,
    ("sdxl", "text_encoder_2"): 694.66e6,
    ("sdxl", "vae"): 83.65e6,
    ("flux", "transformer"): 11.90e9,
    ("flux", "text_encoder"): 123.06e6,
    ("flux", "text_encoder_2"): 4.762e9,
    ("flux", "vae"): 83.82e6,
}


def test_real_architectures_have_the_published_parameter_counts() -> None:
    for model in MODELS:
        counts = meta_parameter_counts(architecture(model))
        for slot, n in counts.items():
            published = PUBLISHED[model, slot]
            assert abs(n / published - 1) < 0.01, (model, slot, n, published)


def test_reduced_flux_depth_is_labelled() -> None:
    arch = architecture("flux", flux_layers=2)
    assert "reduced depth: 2+4 of 19+38" in arch.note
    assert arch.components["transformer"].published_params is None
    counts = meta_parameter_counts(arch)
    assert counts["transformer"] < 0.2 * PUBLISHED["flux", "transformer"]
