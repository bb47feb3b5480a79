"""LoRA adapters on real tiny pipelines: loaded once, switched per job, base restored exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tests.unit.tiny_pipelines import load, model_dir, run
from worker.adapters import (
    AdapterLoadError,
    UnknownAdapter,
    activate,
    build_tiny_lora,
    load_adapters,
    loaded_adapters,
)


@pytest.fixture(scope="module")
def sd1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_dir("sd1", tmp_path_factory)


@pytest.fixture(scope="module")
def sd1_loras(sd1: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two LoRAs: UNet only (a file), and UNet with text encoder (a folder)."""
    out = tmp_path_factory.mktemp("loras")
    return {
        "style-a": build_tiny_lora(sd1, out / "style-a.safetensors", seed=1),
        "style-b": build_tiny_lora(
            sd1, out / "style-b" / "pytorch_lora_weights.safetensors", seed=2, text_encoders=True
        ).parent,
    }


@pytest.fixture
def pipe(sd1: Path, sd1_loras: dict[str, Path]) -> Any:
    """A fresh SD 1.x pipeline with both LoRAs loaded."""
    pipe = load(sd1)
    load_adapters(pipe, list(sd1_loras.items()))
    return pipe


@pytest.fixture(scope="module")
def base_image(sd1: Path) -> np.ndarray[Any, Any]:
    """What the model makes before any adapter is loaded."""
    return run(load(sd1))


def test_loading_leaves_the_base_model_on(pipe: Any, base_image: np.ndarray[Any, Any]) -> None:
    assert loaded_adapters(pipe) == {"style-a", "style-b"}
    assert pipe.get_list_adapters() == {
        "unet": ["style-a", "style-b"],
        "text_encoder": ["style-b"],
    }
    assert np.array_equal(run(pipe), base_image)


def test_weights_change_the_image(pipe: Any, base_image: np.ndarray[Any, Any]) -> None:
    activate(pipe, [("style-a", 1.0)])
    full = run(pipe)
    activate(pipe, [("style-a", 0.5)])
    half = run(pipe)
    activate(pipe, [("style-b", 1.0)])
    other = run(pipe)
    activate(pipe, [("style-a", 1.0), ("style-b", 1.0)])
    both = run(pipe)

    images = [base_image, full, half, other, both]
    for i, first in enumerate(images):
        for second in images[i + 1 :]:
            assert np.abs(first - second).max() > 0.01
    # The effect grows with the weight.
    assert np.abs(half - base_image).mean() < np.abs(full - base_image).mean()
    # Weights are set, not multiplied: the same activation gives the same image again.
    activate(pipe, [("style-a", 1.0)])
    assert np.array_equal(run(pipe), full)


def test_a_job_without_adapters_gets_the_base_model_exactly(
    pipe: Any, base_image: np.ndarray[Any, Any]
) -> None:
    for loras in ([("style-a", 1.0)], [("style-b", 0.7)], [("style-a", 1.0), ("style-b", -0.5)]):
        activate(pipe, loras)
        assert not np.array_equal(run(pipe), base_image)
        activate(pipe, [])
        assert np.array_equal(run(pipe), base_image)


def test_derived_pipelines_follow_the_base(sd1: Path, sd1_loras: dict[str, Path]) -> None:
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

    pipe = load(sd1)
    # One derived before the adapters are loaded, one after: both share the adapted modules.
    restyler = AutoPipelineForImage2Image.from_pipe(pipe)
    restyler.set_progress_bar_config(disable=True)
    image = Image.new("RGB", (64, 64), (200, 40, 90))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    restyled_base = run(restyler, image=image, strength=0.9)

    load_adapters(pipe, list(sd1_loras.items()))
    inpainter = AutoPipelineForInpainting.from_pipe(pipe)
    inpainter.set_progress_bar_config(disable=True)
    assert loaded_adapters(restyler) == loaded_adapters(inpainter) == {"style-a", "style-b"}
    inpainted_base = run(inpainter, image=image, mask_image=mask, strength=0.9)

    activate(pipe, [("style-b", 1.0)])
    assert not np.array_equal(run(restyler, image=image, strength=0.9), restyled_base)
    assert not np.array_equal(run(inpainter, image=image, mask_image=mask), inpainted_base)
    activate(pipe, [])
    assert np.array_equal(run(restyler, image=image, strength=0.9), restyled_base)
    assert np.array_equal(
        run(inpainter, image=image, mask_image=mask, strength=0.9), inpainted_base
    )

    # Activating through a derived pipeline acts on the shared modules, the base's too.
    activate(restyler, [("style-a", 1.0)])
    with_a = run(pipe)
    activate(pipe, [("style-a", 1.0)])
    assert np.array_equal(run(pipe), with_a)
    activate(inpainter, [])
    assert np.array_equal(run(restyler, image=image, strength=0.9), restyled_base)


def test_adapters_load_once(
    sd1: Path, sd1_loras: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = load(sd1)
    loads: list[str] = []
    original = pipe.load_lora_weights

    def counting(*args: Any, **kwargs: Any) -> Any:
        loads.append(kwargs["adapter_name"])
        return original(*args, **kwargs)

    monkeypatch.setattr(pipe, "load_lora_weights", counting)
    load_adapters(pipe, list(sd1_loras.items()))
    for _ in range(3):
        activate(pipe, [("style-a", 1.0), ("style-b", 0.5)])
        run(pipe)
        activate(pipe, [])
    assert loads == ["style-a", "style-b"]


def test_an_unknown_adapter_is_refused_and_changes_nothing(
    pipe: Any, base_image: np.ndarray[Any, Any]
) -> None:
    activate(pipe, [("style-a", 1.0)])
    with_a = run(pipe)
    with pytest.raises(UnknownAdapter, match="nope") as caught:
        activate(pipe, [("style-b", 1.0), ("nope", 1.0)])
    assert isinstance(caught.value, ValueError)
    assert np.array_equal(run(pipe), with_a)
    with pytest.raises(ValueError, match="twice"):
        activate(pipe, [("style-a", 1.0), ("style-a", 0.5)])
    with pytest.raises(ValueError, match="finite"):
        activate(pipe, [("style-a", float("nan"))])
    activate(pipe, [])
    assert np.array_equal(run(pipe), base_image)


def test_a_model_without_adapters_runs_as_before(
    sd1: Path, base_image: np.ndarray[Any, Any]
) -> None:
    pipe = load(sd1)
    load_adapters(pipe, [])
    activate(pipe, [])
    assert np.array_equal(run(pipe), base_image)
    with pytest.raises(UnknownAdapter, match="none"):
        activate(pipe, [("style-a", 1.0)])


def _broken_adapters(tmp: Path, sd1: Path, sd1_lora_file: Path) -> list[tuple[str, Path, str]]:
    from safetensors.torch import load_file, save_file

    garbage = tmp / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    not_lora = tmp / "not-lora.safetensors"
    save_file({"unet.conv_in.weight": torch.zeros(2, 2)}, str(not_lora))
    no_match = tmp / "no-match.safetensors"
    save_file(
        {
            "unet.no.such.layer.lora_A.weight": torch.zeros(4, 8),
            "unet.no.such.layer.lora_B.weight": torch.zeros(8, 4),
        },
        str(no_match),
    )
    crowded = tmp / "crowded"
    crowded.mkdir()
    for name in ("one", "two"):
        build_tiny_lora(sd1, crowded / f"{name}.safetensors")
    pickled = tmp / "weights.bin"
    pickled.write_bytes(b"")
    # The UNet half loads, the text-encoder half does not fit.
    partial = tmp / "partial.safetensors"
    weights = load_file(str(build_tiny_lora(sd1, tmp / "whole.safetensors", text_encoders=True)))
    for key, tensor in weights.items():
        if key.startswith("text_encoder.") and key.endswith("down.weight"):
            weights[key] = torch.zeros(tensor.shape[0], tensor.shape[1] + 3)
    save_file(weights, str(partial))
    return [
        ("garbage", garbage, "not a readable safetensors file"),
        ("not-lora", not_lora, "lora"),
        ("no-match", no_match, "not found in the base model"),
        ("missing", tmp / "missing.safetensors", "no such file"),
        ("crowded", crowded, "2 .safetensors files"),
        ("pickled", pickled, "only .safetensors"),
        ("partial", partial, "size"),
        ("half", sd1_lora_file, "torch modules already use"),
    ]


def test_a_broken_adapter_names_itself_and_leaves_the_rest_working(
    pipe: Any,
    sd1: Path,
    sd1_loras: dict[str, Path],
    base_image: np.ndarray[Any, Any],
    tmp_path: Path,
) -> None:
    for adapter_id, path, reason in _broken_adapters(tmp_path, sd1, sd1_loras["style-a"]):
        with pytest.raises(AdapterLoadError, match=reason) as caught:
            load_adapters(pipe, [(adapter_id, path)])
        assert f"adapter {adapter_id!r}" in str(caught.value)
        assert caught.value.adapter_id == adapter_id
    with pytest.raises(AdapterLoadError, match="already loaded"):
        load_adapters(pipe, [("style-a", sd1_loras["style-a"])])
    with pytest.raises(AdapterLoadError, match="no dots"):
        load_adapters(pipe, [("style.v2", sd1_loras["style-a"])])

    assert loaded_adapters(pipe) == {"style-a", "style-b"}
    assert pipe.get_list_adapters() == {"unet": ["style-a", "style-b"], "text_encoder": ["style-b"]}
    assert np.array_equal(run(pipe), base_image)
    activate(pipe, [("style-a", 1.0)])
    assert not np.array_equal(run(pipe), base_image)


def test_a_lora_of_another_family_is_refused(
    pipe: Any, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    # Flux has a CLIP text encoder like SD 1.x: diffusers alone would load that part and
    # drop the transformer's weights with a warning.
    flux_lora = build_tiny_lora(
        model_dir("flux", tmp_path_factory), tmp_path / "flux.safetensors", text_encoders=True
    )
    with pytest.raises(AdapterLoadError, match="transformer.*another model family"):
        load_adapters(pipe, [("flux-style", flux_lora)])
    assert "flux-style" not in loaded_adapters(pipe)


def test_build_tiny_lora_is_deterministic_and_leaves_the_pipeline_alone(
    sd1: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    pipe = load(sd1)
    first = load_file(str(build_tiny_lora(pipe, tmp_path / "a.safetensors", seed=3)))
    again = load_file(str(build_tiny_lora(sd1, tmp_path / "b.safetensors", seed=3)))
    other = load_file(str(build_tiny_lora(pipe, tmp_path / "c.safetensors", seed=4, rank=2)))
    assert loaded_adapters(pipe) == frozenset()
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    assert all(key.startswith("unet.") for key in first)
    assert all(tensor.abs().sum() > 0 for tensor in first.values())
    down = next(key for key in first if key.endswith("lora.down.weight"))
    assert first[down].shape[0] == 4 and other[down].shape[0] == 2


# -- other families -----------------------------------------------------------------------


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_other_families(
    family: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """Denoiser LoRA and a LoRA on the text encoders too: each changes the image, and the
    base comes back exactly, through an img2img pipeline derived from the base as well."""
    from diffusers import AutoPipelineForImage2Image

    path = model_dir(family, tmp_path_factory)
    pipe = load(path)
    restyler = AutoPipelineForImage2Image.from_pipe(pipe)
    restyler.set_progress_bar_config(disable=True)
    image = Image.new("RGB", (64, 64), (30, 160, 90))
    base = run(pipe)
    restyled = run(restyler, image=image, strength=0.9)
    denoiser = build_tiny_lora(pipe, tmp_path / "denoiser.safetensors", seed=1)
    everything = build_tiny_lora(pipe, tmp_path / "all.safetensors", seed=2, text_encoders=True)
    load_adapters(pipe, [("denoiser", denoiser), ("everything", everything)])
    text_encoders = [name for name in pipe.get_list_adapters() if name.startswith("text_encoder")]
    assert text_encoders, "no text-encoder layers were adapted"

    images = []
    for loras in ([("denoiser", 1.0)], [("everything", 1.0)], [("denoiser", 0.5)]):
        activate(pipe, loras)
        images.append(run(pipe))
        assert not np.array_equal(run(restyler, image=image, strength=0.9), restyled)
        activate(pipe, [])
        assert np.array_equal(run(pipe), base)
        assert np.array_equal(run(restyler, image=image, strength=0.9), restyled)
    for i, first in enumerate(images):
        for second in images[i + 1 :]:
            assert not np.array_equal(first, second)
