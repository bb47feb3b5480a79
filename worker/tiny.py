"""The parts the tiny random-weight pipelines are built from, entirely offline.

Each family builds its tiny pipeline (`Family.tiny`) from these: a toy CLIP byte-level BPE
tokenizer and a toy T5 Unigram tokenizer written from their pieces (no files to download),
small CLIP and T5 text encoders, and an image VAE with the scale factor of the real ones.
`worker.demo_model` saves the pipelines in diffusers format.
"""

from __future__ import annotations

import json
import string
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import CLIPTokenizer, PreTrainedTokenizerBase

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

T5_PIECES_WORDS = ("the", "a", "an", "and", "of", "in", "on", "at", "with", "cat", "dog")


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


def build_vocab(merges: Sequence[tuple[str, str]] = MERGES) -> dict[str, int]:
    """Return a toy CLIP vocabulary: bytes, end-of-word bytes, merged tokens, specials."""
    symbols = list(bytes_to_unicode().values())
    tokens = [*symbols, *(s + "</w>" for s in symbols)]
    for left, right in merges:
        merged = left + right
        if merged not in tokens:
            tokens.append(merged)
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}


def build_tokenizer(merges: Sequence[tuple[str, str]] = MERGES) -> CLIPTokenizer:
    """A CLIP byte-level BPE tokenizer of `merges` (the toy vocabulary's by default): its
    vocab.json / merges.txt written to a temporary folder and loaded from there."""
    from transformers import CLIPTokenizer

    vocab = build_vocab(merges)
    for left, right in merges:
        if left not in vocab or right not in vocab:
            raise ValueError(f"merge {left!r} {right!r} uses a token missing from the vocab")
    with tempfile.TemporaryDirectory(prefix="latentq-tok-") as tmp:
        vocab_file = Path(tmp, "vocab.json")
        merges_file = Path(tmp, "merges.txt")
        vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        lines = ["#version: 0.2", *(f"{left} {right}" for left, right in merges)]
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


def build_t5_tokenizer() -> PreTrainedTokenizerBase:
    """A tiny Unigram (SentencePiece-style) T5 tokenizer: specials, single characters with and
    without the word-start marker, and a few whole words. Built from the pieces, no file."""
    from transformers import T5Tokenizer

    chars = [c for c in string.printable if not c.isspace()]
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("▁", -2.0)]
    pieces += [(c, -5.0) for c in chars] + [("▁" + c, -4.0) for c in chars]
    pieces += [("▁" + word, -1.0) for word in T5_PIECES_WORDS]
    tokenizer: PreTrainedTokenizerBase = T5Tokenizer(vocab=pieces, extra_ids=0)
    return tokenizer


def clip_text_encoder(
    vocab: dict[str, int], *, with_projection: bool, projection_dim: int = 32
) -> Any:
    """A two-layer CLIP text encoder, 32 wide, over the toy vocabulary."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH,
        projection_dim=projection_dim,
        bos_token_id=vocab[BOS_TOKEN],
        eos_token_id=vocab[EOS_TOKEN],
        pad_token_id=vocab[EOS_TOKEN],
    )
    if with_projection:
        return CLIPTextModelWithProjection(config)
    return CLIPTextModel(config)


def t5_encoder(tokenizer: PreTrainedTokenizerBase, d_model: int, *, umt5: bool = False) -> Any:
    """A two-layer T5 (or UMT5) encoder, `d_model` wide, over the toy T5 vocabulary."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    fields = {
        "vocab_size": len(tokenizer),
        "d_model": d_model,
        "d_kv": 8,
        "d_ff": 37,
        "num_layers": 2,
        "num_heads": 4,
        "relative_attention_num_buckets": 8,
        "feed_forward_proj": "gated-gelu",
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "decoder_start_token_id": tokenizer.pad_token_id,
    }
    if umt5:
        return UMT5EncoderModel(UMT5Config(**fields))
    return T5EncoderModel(T5Config(**fields))


def image_vae(latent_channels: int, *, sample_size: int = 512, **config: Any) -> Any:
    """An `AutoencoderKL` with four blocks: three 2x downsamplings, the scale factor (8) of
    every real latent-diffusion VAE. `sample_size` only sets the tile size of a tiled decode
    (512: that of the real VAEs)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(  # type: ignore[no-untyped-call]
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=8,
        sample_size=sample_size,
        **config,
    )


SD_NOISE_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
}
"""The noise schedule of Stable Diffusion 1.x and XL (and of the models trained like them)."""
