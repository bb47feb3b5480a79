"""LoRA adapters per request: loaded into a warm pipeline once, switched on and off per job.

A worker loads every adapter that fits its model when it starts (`load_adapters`), each under
its catalogue id. Before each job, `activate` turns on the adapters the job asks for at the
weights it asks for, or restores the base model when it asks for none. Nothing is fused into
the weights, so switching costs a walk over the LoRA layers, not a reload.

The LoRA layers live inside the shared modules (UNet or transformer, text encoders), so
pipelines derived with ``from_pipe`` see the same adapters, in the same state, whichever
pipeline loaded or activated them, and whether they were derived before or after the load.

Base restored exactly: with no adapters, `activate` calls diffusers' ``disable_lora``, which
makes every LoRA layer call its wrapped layer alone, so outputs are bit-identical to the model
before any adapter was loaded. ``set_adapters([])`` is not an alternative: diffusers 0.42
raises ``KeyError`` on an empty list. And ``set_adapters`` alone does not undo ``disable_lora``
(the layers stay off), so `activate` enables the layers before choosing adapters.

One process, one thread: like the pipeline itself, the adapter state is shared by every job
of the process and must not be switched while another thread runs the pipeline.
"""

from __future__ import annotations

import copy
import logging
import math
import re
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ADAPTER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""What an adapter id may look like. peft keeps adapters in ``ModuleDict``s, whose keys may not
contain a dot; ids are also part of log lines and error messages, so they stay plain."""

DEFAULT_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
"""The file diffusers' ``save_lora_weights`` writes into a folder, and looks for in one."""

DENOISER_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
"""Attention projections of diffusers' UNets and transformers (SD 1.x, SDXL, SD3, Flux)."""

CLIP_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
"""Attention projections of CLIP text encoders, the ones diffusers' LoRA loaders adapt."""


LORA_COMPONENTS = frozenset(
    {"unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3"}
)
"""Key prefixes of diffusers-format LoRA files: the pipeline component each weight is for."""


class AdapterLoadError(RuntimeError):
    """An adapter could not be loaded into a pipeline; the message names it and its path."""

    def __init__(self, adapter_id: str, path: Path | None, reason: str) -> None:
        where = f" ({path})" if path is not None else ""
        super().__init__(f"adapter {adapter_id!r}{where}: {reason}")
        self.adapter_id = adapter_id
        self.path = path


class UnknownAdapter(ValueError):
    """A job asked for an adapter this pipeline has not loaded."""


def loaded_adapters(pipe: Any) -> frozenset[str]:
    """Ids of the adapters loaded into `pipe` (or into the pipeline it was derived from)."""
    if not hasattr(pipe, "get_list_adapters"):
        return frozenset()
    by_component: dict[str, list[str]] = pipe.get_list_adapters()
    return frozenset(name for names in by_component.values() for name in names)


def load_adapters(pipe: Any, adapters: Sequence[tuple[str, Path]]) -> None:
    """Load each ``(id, path)`` LoRA into `pipe` under its id, then leave the base model on.

    `path` is a LoRA in diffusers' format (what ``save_lora_weights`` writes; diffusers also
    converts the common kohya / A1111 files): a ``.safetensors`` file, or a folder holding
    ``pytorch_lora_weights.safetensors`` or a single ``.safetensors`` file.

    Raises `AdapterLoadError` naming the adapter when one cannot be loaded: no such file, not a
    LoRA, made for another model (no layer matched, or shapes differ), an id already loaded or
    not of the `ADAPTER_ID` form. A failed adapter leaves nothing behind, and the adapters
    loaded before it stay loaded, so a caller may log the error and go on with the rest.
    """
    if not hasattr(pipe, "load_lora_weights"):
        names = ", ".join(adapter_id for adapter_id, _ in adapters)
        if names:
            raise AdapterLoadError(names, None, f"{type(pipe).__name__} takes no LoRA adapters")
        return
    try:
        for adapter_id, path in adapters:
            _load_one(pipe, adapter_id, Path(path))
    finally:
        # diffusers leaves the adapter it loaded last switched on.
        _restore_base(pipe)


def activate(pipe: Any, loras: Sequence[tuple[str, float]]) -> None:
    """Switch `pipe` to exactly the ``(id, weight)`` adapters of one job; none: the base model.

    Call it before the job's pipeline call, and before encoding its prompt (the text-encoder
    parts of a LoRA act there). Weights scale each adapter's effect (1.0 as trained; negative
    weights invert it). Raises `UnknownAdapter` (a ValueError) for an id not loaded, and
    ValueError for an id given twice or a weight that is not a finite number; the pipeline is
    left as it was.
    """
    if not loras:
        _restore_base(pipe)
        return
    ids = [adapter_id for adapter_id, _ in loras]
    weights = [float(weight) for _, weight in loras]
    loaded = loaded_adapters(pipe)
    unknown = [adapter_id for adapter_id in ids if adapter_id not in loaded]
    if unknown:
        have = ", ".join(sorted(loaded)) or "none"
        raise UnknownAdapter(f"adapter(s) {', '.join(unknown)} not loaded for this model ({have})")
    if len(set(ids)) != len(ids):
        raise ValueError(f"an adapter is listed twice: {', '.join(ids)}")
    if not all(math.isfinite(weight) for weight in weights):
        raise ValueError(f"adapter weights must be finite numbers, got {weights}")
    pipe.enable_lora()
    pipe.set_adapters(ids, adapter_weights=weights)


def _load_one(pipe: Any, adapter_id: str, path: Path) -> None:
    if not ADAPTER_ID.fullmatch(adapter_id):
        raise AdapterLoadError(
            adapter_id, path, "ids are 1-64 letters, digits, '-' or '_' (no dots: peft keys)"
        )
    if _taken_by_torch(adapter_id):
        # peft adds each adapter as a ModuleDict entry, which may not shadow an attribute.
        reason = "the id is a name torch modules already use (half, cuda, keys, ...)"
        raise AdapterLoadError(adapter_id, path, reason)
    if adapter_id in loaded_adapters(pipe):
        raise AdapterLoadError(adapter_id, path, "an adapter with this id is already loaded")
    weights_file = _weights_file(adapter_id, path)
    _check_components(pipe, adapter_id, path, weights_file)
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # peft warns that a model holds several adapters: that is the point here.
            warnings.filterwarnings("ignore", category=UserWarning, module="peft")
            # transformers 5 prints a "LOAD REPORT" listing a CLIP text encoder's own weights
            # as missing and newly initialised: the report is wrong, they are untouched (the
            # tests compare images before and after loading).
            pipe.load_lora_weights(str(weights_file), adapter_name=adapter_id)
    except Exception as exc:
        _forget(pipe, adapter_id)
        raise AdapterLoadError(adapter_id, path, f"{type(exc).__name__}: {exc}") from exc
    if adapter_id not in loaded_adapters(pipe):
        # diffusers only warns when none of the file's keys name a module of this pipeline.
        raise AdapterLoadError(adapter_id, path, "no layer of this model matched its weights")
    log.info("adapter %s loaded from %s in %.3fs", adapter_id, path, time.perf_counter() - started)


def _taken_by_torch(adapter_id: str) -> bool:
    import torch

    return hasattr(torch.nn.ModuleDict(), adapter_id)


def _weights_file(adapter_id: str, path: Path) -> Path:
    if path.is_file():
        if path.suffix != ".safetensors":
            # Pickled weights can run code when loaded.
            raise AdapterLoadError(adapter_id, path, "only .safetensors files are loaded")
        return path
    if path.is_dir():
        if (path / DEFAULT_WEIGHTS_NAME).is_file():
            return path / DEFAULT_WEIGHTS_NAME
        found = sorted(path.glob("*.safetensors"))
        if len(found) == 1:
            return found[0]
        reason = f"the folder holds {len(found)} .safetensors files and no {DEFAULT_WEIGHTS_NAME}"
        raise AdapterLoadError(adapter_id, path, reason)
    raise AdapterLoadError(adapter_id, path, "no such file or folder")


def _check_components(pipe: Any, adapter_id: str, path: Path, weights_file: Path) -> None:
    """Refuse a diffusers-format LoRA with weights for a component this pipeline lacks.

    diffusers loads the parts it has a place for and drops the rest with a warning: a Flux
    LoRA would load into SD 1.x as a text-encoder-only adapter (both use CLIP ViT-L).
    """
    from safetensors import safe_open

    try:
        with safe_open(str(weights_file), framework="pt") as handle:
            keys = list(handle.keys())
    except Exception as exc:
        raise AdapterLoadError(adapter_id, path, f"not a readable safetensors file: {exc}") from exc
    prefixes = {key.split(".", 1)[0] for key in keys}
    foreign = sorted((prefixes & LORA_COMPONENTS) - set(pipe._lora_loadable_modules))
    if foreign:
        takes = ", ".join(pipe._lora_loadable_modules)
        raise AdapterLoadError(
            adapter_id,
            path,
            f"has weights for {', '.join(foreign)}, which {type(pipe).__name__} lacks "
            f"(it takes {takes}): a LoRA for another model family",
        )


def _forget(pipe: Any, adapter_id: str) -> None:
    # A LoRA with UNet and text-encoder parts can fail in the second after the first went in.
    if adapter_id in loaded_adapters(pipe):
        with warnings.catch_warnings():
            # "Adapter X was active which is now deleted": it is switched off right after.
            warnings.filterwarnings("ignore", category=UserWarning, module="peft")
            pipe.delete_adapters(adapter_id)


def _restore_base(pipe: Any) -> None:
    if loaded_adapters(pipe):
        pipe.disable_lora()


# -- tiny LoRAs for tests and the demo --------------------------------------------------


def build_tiny_lora(
    pipe_or_dir: Any,
    out_path: Path,
    *,
    seed: int = 0,
    rank: int = 4,
    text_encoders: bool = False,
) -> Path:
    """Write a LoRA with random, non-zero weights for a (tiny) pipeline and return its path.

    `pipe_or_dir` is a pipeline without adapters, or the folder of one in diffusers format;
    the pipeline is not changed (its modules are copied before peft adds layers to them). The
    LoRA adapts the attention projections of the UNet or transformer, and with
    `text_encoders` those of the CLIP text encoders the pipeline's LoRA loader accepts. It is
    written to `out_path` (a ``.safetensors`` file name) in the format ``load_lora_weights``
    reads. The same pipeline, seed and rank always give the same weights.
    """
    import torch
    from diffusers.utils.state_dict_utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    pipe = _as_pipeline(pipe_or_dir)
    out_path = Path(out_path)
    if out_path.suffix != ".safetensors":
        raise ValueError(f"out_path must name a .safetensors file, got {out_path}")
    if loaded_adapters(pipe):
        raise ValueError("build_tiny_lora needs a pipeline without adapters")
    layers: dict[str, dict[str, Any]] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for component in pipe._lora_loadable_modules:
            module = getattr(pipe, component, None)
            if module is None:
                continue
            if component in ("unet", "transformer"):
                targets = DENOISER_TARGETS
            elif text_encoders and component.startswith("text_encoder"):
                targets = CLIP_TARGETS
            else:
                continue
            # init_lora_weights=False: peft's random, non-zero B (the default B is zero, a
            # LoRA that changes nothing). peft directly, not transformers' add_adapter, which
            # transformers 5 refuses below peft 0.22 (loading needs no such check).
            config = LoraConfig(
                r=rank, lora_alpha=rank, init_lora_weights=False, target_modules=list(targets)
            )
            adapted = inject_adapter_in_model(config, copy.deepcopy(module), adapter_name="tiny")
            state = get_peft_model_state_dict(adapted, adapter_name="tiny")
            diffusers_state = convert_state_dict_to_diffusers(state)  # type: ignore[no-untyped-call]
            layers[f"{component}_lora_layers"] = diffusers_state
    out_path.parent.mkdir(parents=True, exist_ok=True)
    type(pipe).save_lora_weights(
        save_directory=str(out_path.parent),
        weight_name=out_path.name,
        safe_serialization=True,
        **layers,
    )
    return out_path


def _as_pipeline(pipe_or_dir: Any) -> Any:
    if not isinstance(pipe_or_dir, str | Path):
        return pipe_or_dir
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(str(pipe_or_dir))  # type: ignore[no-untyped-call]
