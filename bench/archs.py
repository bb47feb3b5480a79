"""The real checkpoints' architectures, written out as constructor arguments, and builders
that make pipelines of those shapes with random weights, without downloading anything.

The configs follow the published `config.json` files of Stable Diffusion 1.5, SDXL base 1.0
and FLUX.1-dev (UNet or transformer, text encoders, VAE). Built with random weights they have
the real parameter counts, memory footprint and arithmetic, so their speed and memory are the
real models' (their images are noise). Each architecture also has a tiny variant with the same
layout, for a smoke run on the CPU.

Usage: ``python -m bench.archs [--flux-layers N]`` prints each component's parameter count
next to the published one (the models are built on the `meta` device: nothing is allocated).
"""

from __future__ import annotations

import argparse
import string
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch

SD_TEXT_LENGTH = 77

# -- Stable Diffusion 1.5 ---------------------------------------------------------------------

SD15_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "up_block_types": (
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ),
    "cross_attention_dim": 768,
    # diffusers reads SD 1.x's attention_head_dim as the number of heads (8 heads of 40..160).
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "act_fn": "silu",
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}

# OpenAI CLIP ViT-L/14's text tower: SD 1.x's only encoder, SDXL's first, Flux's pooled one.
CLIP_L_TEXT: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": SD_TEXT_LENGTH,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 768,
}

SD_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "sample_size": 512,
    "scaling_factor": 0.18215,
}

SD_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "prediction_type": "epsilon",
}

# -- SDXL base 1.0 ----------------------------------------------------------------------------

SDXL_UNET: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10),
    # Heads per level (64-wide heads); the first level has no attention.
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,  # 768 (CLIP-L) + 1280 (OpenCLIP bigG), concatenated
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    # 6 size/crop conditioning numbers x 256 + bigG's 1280-wide pooled projection.
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "act_fn": "silu",
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}

CLIP_BIGG_TEXT: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "max_position_embeddings": SD_TEXT_LENGTH,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 1280,
}

# force_upcast: the published SDXL VAE overflows in fp16, so its pipeline decodes in fp32.
SDXL_VAE: dict[str, Any] = {
    **SD_VAE,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
    "force_upcast": True,
}

# -- FLUX.1-dev -------------------------------------------------------------------------------

FLUX_DOUBLE_BLOCKS = 19
FLUX_SINGLE_BLOCKS = 38

FLUX_TRANSFORMER: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 64,  # 16 latent channels in 2x2 patches
    "num_layers": FLUX_DOUBLE_BLOCKS,
    "num_single_layers": FLUX_SINGLE_BLOCKS,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,  # T5-XXL's d_model
    "pooled_projection_dim": 768,  # CLIP-L's pooled output
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}

# google/t5-v1_1-xxl, encoder only.
T5_XXL: dict[str, Any] = {
    "vocab_size": 32128,
    "d_model": 4096,
    "d_ff": 10240,
    "d_kv": 64,
    "num_heads": 64,
    "num_layers": 24,
    "feed_forward_proj": "gated-gelu",
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "layer_norm_epsilon": 1e-6,
    "dropout_rate": 0.0,
    "tie_word_embeddings": False,
}

FLUX_VAE: dict[str, Any] = {
    **SD_VAE,
    "latent_channels": 16,
    "sample_size": 1024,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "force_upcast": True,
}

FLUX_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}

FLUX_TEXT_LENGTH = 512

# -- tiny variants: the same layouts, a million parameters or fewer each ---------------------

TINY_CLIP_TEXT: dict[str, Any] = {
    "vocab_size": 0,  # the tokenizer's size
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": SD_TEXT_LENGTH,
    "hidden_act": "quick_gelu",
    "projection_dim": 32,
}

TINY_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,  # four blocks: the real scale factor 8
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (16, 16, 32, 32),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": 64,
    "scaling_factor": 0.18215,
}

TINY_SD1_UNET: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": (32, 64),
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 2,
    "norm_num_groups": 32,
}

TINY_SDXL_UNET: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": (32, 64),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2),
    "attention_head_dim": (2, 4),
    "cross_attention_dim": 64,  # 32 + 32
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 80,  # 6 x 8 + 32
    "norm_num_groups": 32,
}

TINY_T5: dict[str, Any] = {
    "vocab_size": 0,  # the tokenizer's size
    "d_model": 32,
    "d_ff": 37,
    "d_kv": 8,
    "num_heads": 4,
    "num_layers": 2,
    "feed_forward_proj": "gated-gelu",
    "relative_attention_num_buckets": 8,
    "dropout_rate": 0.0,
    "tie_word_embeddings": False,
}

TINY_FLUX_TRANSFORMER: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 16,  # 4 latent channels in 2x2 patches
    "num_layers": 1,
    "num_single_layers": 2,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,
    "pooled_projection_dim": 32,
    "guidance_embeds": True,
    "axes_dims_rope": (4, 6, 6),
}


# -- architectures ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    """One model of a pipeline: what to construct, its arguments, its published size."""

    kind: str  # unet | vae | clip | clip_projection | t5 | flux
    config: Mapping[str, Any]
    published_params: int | None = None


@dataclass(frozen=True)
class Architecture:
    name: str
    title: str
    pipeline: str  # diffusers class name
    components: Mapping[str, Component]  # keyed by the pipeline's argument name
    scheduler: str
    scheduler_config: Mapping[str, Any]
    size: int  # the native square resolution in pixels
    half_dtype: torch.dtype  # the dtype it is served in on a GPU
    steps: int  # the benchmark's default step count
    guidance_scale: float
    denoiser: str  # the pipeline attribute that runs every step: unet | transformer
    call_kwargs: Mapping[str, Any] = field(default_factory=dict)
    tiny: bool = False
    note: str = ""


NAMES = ("sd1", "sdxl", "flux")


def architecture(name: str, *, tiny: bool = False, flux_layers: int | None = None) -> Architecture:
    """The architecture called `name` (sd1, sdxl, flux), real-sized unless `tiny`.

    `flux_layers` keeps that many of Flux's 19 double-stream blocks and twice as many of its 38
    single-stream blocks (the published ratio), to fit a smaller GPU or a shorter run.
    """
    if name == "sd1":
        arch = Architecture(
            name="sd1",
            title="Stable Diffusion 1.5",
            pipeline="StableDiffusionPipeline",
            components={
                "unet": Component("unet", SD15_UNET, 859_520_964),
                "text_encoder": Component("clip", CLIP_L_TEXT, 123_060_480),
                "vae": Component("vae", SD_VAE, 83_653_863),
            },
            scheduler="EulerDiscreteScheduler",
            scheduler_config=SD_SCHEDULER,
            size=512,
            half_dtype=torch.float16,
            steps=20,
            guidance_scale=7.5,
            denoiser="unet",
        )
        if tiny:
            arch = replace(
                arch,
                components={
                    "unet": Component("unet", TINY_SD1_UNET),
                    "text_encoder": Component("clip", TINY_CLIP_TEXT),
                    "vae": Component("vae", TINY_VAE),
                },
            )
    elif name == "sdxl":
        arch = Architecture(
            name="sdxl",
            title="SDXL base 1.0",
            pipeline="StableDiffusionXLPipeline",
            components={
                "unet": Component("unet", SDXL_UNET, 2_567_463_684),
                "text_encoder": Component("clip", CLIP_L_TEXT, 123_060_480),
                "text_encoder_2": Component("clip_projection", CLIP_BIGG_TEXT, 694_659_840),
                "vae": Component("vae", SDXL_VAE, 83_653_863),
            },
            scheduler="EulerDiscreteScheduler",
            scheduler_config=SD_SCHEDULER,
            size=1024,
            half_dtype=torch.float16,
            steps=20,
            guidance_scale=5.0,
            denoiser="unet",
            note="the VAE decodes in fp32 (force_upcast, as the published config asks)",
        )
        if tiny:
            arch = replace(
                arch,
                components={
                    "unet": Component("unet", TINY_SDXL_UNET),
                    "text_encoder": Component("clip", TINY_CLIP_TEXT),
                    "text_encoder_2": Component("clip_projection", TINY_CLIP_TEXT),
                    "vae": Component("vae", {**TINY_VAE, "force_upcast": True}),
                },
            )
    elif name == "flux":
        transformer = dict(FLUX_TRANSFORMER)
        note = ""
        if flux_layers is not None and not tiny:
            if not 1 <= flux_layers <= FLUX_DOUBLE_BLOCKS:
                raise ValueError(f"flux_layers must be 1..{FLUX_DOUBLE_BLOCKS}, not {flux_layers}")
            if flux_layers < FLUX_DOUBLE_BLOCKS:
                transformer.update(num_layers=flux_layers, num_single_layers=2 * flux_layers)
                note = (
                    f"reduced depth: {flux_layers}+{2 * flux_layers} of "
                    f"{FLUX_DOUBLE_BLOCKS}+{FLUX_SINGLE_BLOCKS} transformer blocks"
                )
        full_depth = transformer["num_layers"] == FLUX_DOUBLE_BLOCKS
        arch = Architecture(
            name="flux",
            title="FLUX.1-dev",
            pipeline="FluxPipeline",
            components={
                "transformer": Component(
                    "flux", transformer, 11_901_408_320 if full_depth else None
                ),
                "text_encoder": Component("clip", CLIP_L_TEXT, 123_060_480),
                "text_encoder_2": Component("t5", T5_XXL, 4_762_310_656),
                "vae": Component("vae", FLUX_VAE, 83_819_683),
            },
            scheduler="FlowMatchEulerDiscreteScheduler",
            scheduler_config=FLUX_SCHEDULER,
            size=1024,
            half_dtype=torch.bfloat16,
            steps=4,
            guidance_scale=3.5,
            denoiser="transformer",
            call_kwargs={"max_sequence_length": FLUX_TEXT_LENGTH},
            note=note,
        )
        if tiny:
            arch = replace(
                arch,
                components={
                    "transformer": Component("flux", TINY_FLUX_TRANSFORMER),
                    "text_encoder": Component("clip", TINY_CLIP_TEXT),
                    "text_encoder_2": Component("t5", TINY_T5),
                    "vae": Component(
                        "vae", {**TINY_VAE, "shift_factor": 0.1159, "force_upcast": True}
                    ),
                },
                # The toy T5 tokenizer spells most words letter by letter.
                call_kwargs={"max_sequence_length": 128},
            )
    else:
        raise ValueError(f"unknown architecture {name!r}; choose from {', '.join(NAMES)}")
    if tiny:
        arch = replace(arch, tiny=True, size=64, note="tiny: same layout, toy widths")
    return arch


# -- tokenizers -------------------------------------------------------------------------------


def build_clip_tokenizer() -> Any:
    """The project's offline toy CLIP tokenizer (a few hundred tokens, not 49,408)."""
    from worker.tiny import build_tokenizer

    return build_tokenizer()


def build_t5_tokenizer() -> Any:
    """An offline T5 (Unigram) tokenizer: T5's special tokens, characters and a few words."""
    from transformers import T5Tokenizer

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)]
    for i, char in enumerate(string.ascii_letters + string.digits + string.punctuation):
        pieces += [(char, -2.0 - i / 100), ("▁" + char, -3.0 - i / 100)]
    for word in ("a", "an", "the", "of", "in", "on", "with", "photo", "cat", "astronaut"):
        pieces.append(("▁" + word, -1.5))
    return T5Tokenizer(vocab=pieces, extra_ids=0)


# -- building ---------------------------------------------------------------------------------


def _classes() -> dict[str, Any]:
    import diffusers
    import transformers

    return {
        "unet": diffusers.UNet2DConditionModel,
        "vae": diffusers.AutoencoderKL,
        "flux": diffusers.FluxTransformer2DModel,
        "clip": transformers.CLIPTextModel,
        "clip_projection": transformers.CLIPTextModelWithProjection,
        "t5": transformers.T5EncoderModel,
    }


def _text_config(component: Component, tokenizer: Any) -> Any:
    import transformers

    config = dict(component.config)
    # The toy tokenizers are far smaller than the real vocabularies. The embedding keeps the
    # published row count (so the parameter count and memory are the real ones) and must be
    # at least the tokenizer's size; ids past the tokenizer's are never looked up.
    config["vocab_size"] = max(int(config.get("vocab_size") or 0), len(tokenizer))
    vocab = tokenizer.get_vocab()
    if component.kind == "t5":
        config.update(
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
        return transformers.T5Config(**config)
    config.update(
        bos_token_id=vocab[tokenizer.bos_token],
        eos_token_id=vocab[tokenizer.eos_token],
        pad_token_id=vocab[tokenizer.pad_token],
    )
    return transformers.CLIPTextConfig(**config)


def build_module(component: Component, tokenizer: Any = None) -> torch.nn.Module:
    """Construct one component on the current default device and dtype (see `materialise`)."""
    cls = _classes()[component.kind]
    if component.kind in ("clip", "clip_projection", "t5"):
        if tokenizer is None:
            raise ValueError(f"a {component.kind} text encoder needs its tokenizer")
        module: torch.nn.Module = cls(_text_config(component, tokenizer))
    else:
        module = cls(**component.config)
    return module


@contextmanager
def materialise(device: torch.device | str, dtype: torch.dtype) -> Iterator[None]:
    """Create tensors directly on `device` in `dtype` while constructing modules.

    Constructing a model inside this block allocates its weights where they will run and
    initialises them there with the layers' own random init: on a GPU a 2.6B-parameter UNet
    takes about a second, where building it on the CPU and copying it takes minutes. Unlike
    the `meta` device followed by `to_empty`, buffers computed at construction (CLIP's
    position ids) keep their values.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass
class BuiltPipeline:
    pipe: Any
    arch: Architecture
    params: dict[str, int]
    build_s: float


def build_pipeline(
    arch: Architecture,
    device: torch.device | str,
    dtype: torch.dtype,
    *,
    seed: int = 0,
    channels_last: bool = False,
) -> BuiltPipeline:
    """Build `arch`'s pipeline with random weights on `device` in `dtype`."""
    import diffusers

    started = time.perf_counter()
    clip_tokenizer = build_clip_tokenizer()
    tokenizers: dict[str, Any] = {"tokenizer": clip_tokenizer}
    if "text_encoder_2" in arch.components:
        kind = arch.components["text_encoder_2"].kind
        tokenizers["tokenizer_2"] = build_t5_tokenizer() if kind == "t5" else clip_tokenizer

    torch.manual_seed(seed)
    modules: dict[str, torch.nn.Module] = {}
    for slot, component in arch.components.items():
        tokenizer_slot = slot.replace("text_encoder", "tokenizer")
        with materialise(device, dtype):
            module = build_module(component, tokenizers.get(tokenizer_slot))
        target = torch.device(device)
        if any(p.dtype != dtype or p.device.type != target.type for p in module.parameters()):
            module.to(device=device, dtype=dtype)  # stragglers made outside the default dtype
        module.eval().requires_grad_(False)
        modules[slot] = module
    if channels_last and arch.denoiser == "unet":
        unet: Any = modules["unet"]  # torch's stubs lack Module.to(memory_format=...)
        unet.to(memory_format=torch.channels_last)

    scheduler_cls: Any = getattr(diffusers, arch.scheduler)
    scheduler = scheduler_cls(**arch.scheduler_config)
    pipeline_cls: Any = getattr(diffusers, arch.pipeline)
    extra: dict[str, Any] = {}
    if arch.pipeline == "StableDiffusionPipeline":
        extra = {"safety_checker": None, "feature_extractor": None}
        extra["requires_safety_checker"] = False
    pipe = pipeline_cls(**modules, **tokenizers, scheduler=scheduler, **extra)
    pipe.set_progress_bar_config(disable=True)
    if device != "meta" and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    params = {slot: count_parameters(m) for slot, m in modules.items()}
    return BuiltPipeline(pipe, arch, params, time.perf_counter() - started)


def meta_parameter_counts(arch: Architecture) -> dict[str, int]:
    """Each component's parameter count, built on the `meta` device (nothing allocated)."""
    counts: dict[str, int] = {}
    clip_tokenizer = build_clip_tokenizer()
    for slot, component in arch.components.items():
        tokenizer = build_t5_tokenizer() if component.kind == "t5" else clip_tokenizer
        with materialise("meta", torch.float32):
            counts[slot] = count_parameters(build_module(component, tokenizer))
    return counts


def format_params(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def parameter_table(arch: Architecture, counts: Mapping[str, int]) -> list[str]:
    lines = [f"{arch.title} ({arch.name}){': ' + arch.note if arch.note else ''}"]
    for slot, n in counts.items():
        published = arch.components[slot].published_params
        versus = ""
        if published:
            versus = f"  published {format_params(published)} ({(n / published - 1) * 100:+.2f}%)"
        kind = arch.components[slot].kind
        lines.append(f"  {slot:<15} {kind:<16} {n:>15,} = {format_params(n):>7}{versus}")
    lines.append(f"  {'total':<15} {'':<16} {sum(counts.values()):>15,}")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.archs",
        description="Print the parameter counts of the real-size architectures (meta device).",
    )
    parser.add_argument("--flux-layers", type=int, default=None, help="Flux double blocks")
    parser.add_argument("--tiny", action="store_true", help="the tiny variants instead")
    args = parser.parse_args(argv)
    for name in NAMES:
        arch = architecture(name, tiny=args.tiny, flux_layers=args.flux_layers)
        print("\n".join(parameter_table(arch, meta_parameter_counts(arch))))


if __name__ == "__main__":
    main()
