"""Build a tiny, randomly initialised Stable-Diffusion-1.x pipeline entirely offline.

The result has the same component layout, latent shape and VAE scale factor (8) as a real
SD 1.x checkpoint, but weighs a few megabytes, so the service can be exercised end to end
(text-to-image, img2img, inpainting) without downloading anything. Its images are noise.

Usage: ``python -m worker.demo_model DIR [--seed N] [--force]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MAX_LENGTH = 77

# A few BPE merges so that some common words become single tokens, like in the real vocab.
# Both halves of each merge must themselves be tokens (build_tokenizer checks this).
MERGES: tuple[tuple[str, str], ...] = (
    ("t", "h"),
    ("th", "e</w>"),
    ("a", "n"),
    ("an", "d</w>"),
    ("o", "f</w>"),
    ("i", "n"),
    ("in", "g</w>"),
    ("o", "n</w>"),
    ("e", "r</w>"),
    ("a", "t</w>"),
    ("c", "at</w>"),
)


def bytes_to_unicode() -> dict[int, str]:
    """Map every byte to a printable unicode character, as GPT-2 / CLIP byte-level BPE does."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    # Control and whitespace bytes are shifted past 255 so that no symbol is invisible.
    shifted = (b for b in range(256) if b not in mapping)
    for offset, b in enumerate(shifted):
        mapping[b] = chr(256 + offset)
    return mapping


def build_vocab() -> dict[str, int]:
    """Return the toy CLIP vocabulary: bytes, end-of-word bytes, merged tokens, specials."""
    symbols = list(bytes_to_unicode().values())
    tokens = [*symbols, *(s + "</w>" for s in symbols)]
    for left, right in MERGES:
        merged = left + right
        if merged not in tokens:
            tokens.append(merged)
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}


def build_tokenizer() -> CLIPTokenizer:
    """Write vocab.json / merges.txt to a temporary folder and load a CLIPTokenizer from them."""
    from transformers import CLIPTokenizer

    vocab = build_vocab()
    for left, right in MERGES:
        if left not in vocab or right not in vocab:
            raise ValueError(f"merge {left!r} {right!r} uses a token missing from the vocab")
    with tempfile.TemporaryDirectory(prefix="latentq-tok-") as tmp:
        vocab_file = Path(tmp, "vocab.json")
        merges_file = Path(tmp, "merges.txt")
        vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        lines = ["#version: 0.2", *(f"{left} {right}" for left, right in MERGES)]
        merges_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return CLIPTokenizer(
            str(vocab_file),
            str(merges_file),
            bos_token=BOS_TOKEN,
            eos_token=EOS_TOKEN,
            unk_token=EOS_TOKEN,
            pad_token=EOS_TOKEN,
            model_max_length=MAX_LENGTH,
        )


def build_sd1(out_dir: Path, *, seed: int = 0) -> Path:
    """Build a tiny SD-1.x ``StableDiffusionPipeline`` with random weights and save it.

    The same seed always yields the same weights. Returns ``out_dir``.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer()
    vocab = tokenizer.get_vocab()

    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_LENGTH,
            bos_token_id=vocab[BOS_TOKEN],
            eos_token_id=vocab[EOS_TOKEN],
            pad_token_id=vocab[EOS_TOKEN],
        )
    )
    # diffusers' constructors are untyped (wrapped by register_to_config).
    unet = UNet2DConditionModel(  # type: ignore[no-untyped-call]
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        # diffusers reads this as the number of heads. Full-resolution self-attention over 64x64
        # latents dominates CPU time and scales with heads, not head width: 8 heads made a 512px
        # 20-step run ~4x slower than 2.
        attention_head_dim=2,
        norm_num_groups=32,
    )
    # Four blocks give three 2x downsamplings: the same scale factor (8) as the real SD VAE.
    vae = AutoencoderKL(  # type: ignore[no-untyped-call]
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )
    scheduler = EulerDiscreteScheduler(  # type: ignore[no-untyped-call]
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(  # type: ignore[no-untyped-call]
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out_dir, safe_serialization=True)  # type: ignore[attr-defined]
    return out_dir


def dir_size_mb(path: Path) -> float:
    """Total size of the files under ``path`` in megabytes (10**6 bytes)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e6


def main(argv: Sequence[str] | None = None) -> None:
    """CLI entry point: build the tiny pipeline into DIR unless one is already there."""
    parser = argparse.ArgumentParser(
        prog="python -m worker.demo_model",
        description="Build a tiny random-weight SD-1.x pipeline for offline tests and demos.",
    )
    parser.add_argument("dir", type=Path, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default: 0)")
    parser.add_argument("--force", action="store_true", help="rebuild even if DIR has a model")
    args = parser.parse_args(argv)

    out_dir: Path = args.dir
    if (out_dir / "model_index.json").exists() and not args.force:
        print(f"already there: {out_dir} ({dir_size_mb(out_dir):.2f} MB)")
        return
    build_sd1(out_dir, seed=args.seed)
    print(f"built: {out_dir} ({dir_size_mb(out_dir):.2f} MB)")


if __name__ == "__main__":
    main()
