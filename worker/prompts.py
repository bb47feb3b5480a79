"""Long prompts for the CLIP-only families (SD 1.x, SDXL): encoded in chunks, never cut at 77.

A CLIP text encoder reads 77 tokens: a start token, 75 of text, an end token. diffusers'
SD 1.x and SDXL pipelines cut longer prompts there (with a log line, nothing else). The
encoders here instead split the prompt's tokens into chunks of 75, wrap each in start/end
tokens, pad it to 77, encode every chunk and join the results along the sequence axis: a
200-token prompt becomes 3 chunks, 231 embedding positions. The UNet's cross-attention takes
any length. Positive and negative prompts, and every prompt of a batch, are padded with empty
chunks to the same count (the embeddings of a batch are one tensor). A prompt of up to 75
tokens gives exactly the embeddings of the pipeline's own ``encode_prompt``.

`encode` (with one CLIP encoder, SD 1.x, or two, SDXL: the family says which) returns
keyword arguments that replace ``prompt`` / ``negative_prompt`` in the pipeline call
(text-to-image, img2img and inpainting pipelines take the same ones).

With ``weighting=True``, the emphasis syntax of the A1111 web UI is read: ``(red:1.3)``
scales the tokens of "red" by 1.3, ``(red)`` by 1.1, ``[red]`` by 1/1.1, brackets nest, and
``\\(`` is a literal parenthesis. The weighted token embeddings are rescaled so each chunk
keeps its mean. Off by default: without it, parentheses are plain text, as in diffusers.
compel 2.5 was not used for this: it reads its own syntax (``(red)1.3``, ``red++``) and turns
``(red:1.3)`` into the text "red:1 . 3" without a word; its long-prompt mode splits at
sentences rather than at 75 tokens; with transformers 5 its normalised-penultimate mode
(clip skip) fails (CLIPTextModel no longer has ``text_model``), and its multi-encoder form
is deprecated. Its default SD 1.x and SDXL modes do match ``encode_prompt`` for short prompts.

Families with a T5 encoder need no chunking: SD3 and Flux pass the prompt to T5 with
``max_sequence_length`` tokens (diffusers' defaults: 256 for SD3, 512 for Flux; 512 at most)
and to their CLIP encoders cut at 77, which only give the pooled vector (and, in SD3, the
first 77 positions). Wan video reads 512 UMT5 tokens. A family's ``token_limit`` says which
limit holds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import torch

CHUNK_TOKENS = 75
"""Text tokens per CLIP chunk: the encoder's 77 positions less the start and end tokens."""

EMPHASIS = 1.1
"""The factor of one pair of ``()`` (and the divisor of ``[]``) with ``weighting=True``."""


def chunk_count(pipe: Any, prompt: str, *, weighting: bool = False) -> int:
    """Chunks of 75 tokens `prompt` takes with `pipe`'s tokenizers (at least 1).

    Prompts of a batch are padded to the largest count, which changes the images of the
    shorter ones: a micro-batcher keeps this equal among the prompts and negative prompts
    it puts together if batched images must match the same jobs run alone.
    """
    return max(_chunks_for(len(_tokens(tok, prompt, weighting)[0])) for tok in _tokenizers(pipe))


def encode(
    pipe: Any,
    prompts: Sequence[str],
    negatives: Sequence[str | None],
    device: torch.device | str,
    *,
    guidance_scale: float,
    weighting: bool = False,
    pair: bool = False,
) -> dict[str, torch.Tensor]:
    """Encode one prompt per batch row, chunked: ``prompt_embeds`` (and
    ``negative_prompt_embeds``) from a pipeline's CLIP encoder (SD 1.x), or with `pair` from
    its two encoders side by side (SDXL), then also ``pooled_prompt_embeds`` (and
    ``negative_pooled_prompt_embeds``), taken from the first chunk of the second encoder.

    `negatives` has one entry per prompt; None is "no negative prompt", encoded as the
    pipeline would: the empty prompt, or zeros for SDXL models that ask for them
    (``force_zeros_for_empty_prompt``). When the pipeline runs without classifier-free
    guidance (``guidance_scale <= 1``, or a guidance-distilled UNet) no negative embeddings
    are made. The pipeline repeats the embeddings for ``num_images_per_prompt``.

    Call it after the job's adapters are activated: text-encoder LoRA layers act here.
    """
    use_negatives, chunks = _plan(pipe, prompts, negatives, guidance_scale, weighting)
    with torch.no_grad():
        if pair:
            return _encode_pair(pipe, prompts, negatives, device, chunks, use_negatives, weighting)
        return _encode_one(pipe, prompts, negatives, device, chunks, use_negatives, weighting)


def _plan(
    pipe: Any,
    prompts: Sequence[str],
    negatives: Sequence[str | None],
    guidance_scale: float,
    weighting: bool,
) -> tuple[bool, int]:
    """Whether negative embeddings are made, and the chunk count every row is padded to."""
    if len(prompts) != len(negatives):
        raise ValueError(f"{len(prompts)} prompts but {len(negatives)} negative prompts")
    if not prompts:
        raise ValueError("no prompt to encode")
    use_negatives = guidance_scale > 1 and pipe.unet.config.time_cond_proj_dim is None
    texts = list(prompts)
    if use_negatives:
        texts += [negative for negative in negatives if negative is not None]
    return use_negatives, max(chunk_count(pipe, text, weighting=weighting) for text in texts)


def _encode_one(
    pipe: Any,
    prompts: Sequence[str],
    negatives: Sequence[str | None],
    device: torch.device | str,
    chunks: int,
    use_negatives: bool,
    weighting: bool,
) -> dict[str, torch.Tensor]:
    encoder = pipe.text_encoder
    # The pipeline's own default: no negative prompt is the empty prompt.
    rows = {"prompt_embeds": list(prompts)}
    if use_negatives:
        rows["negative_prompt_embeds"] = [n if n is not None else "" for n in negatives]
    out: dict[str, torch.Tensor] = {}
    for key, texts in rows.items():
        hidden, _ = _encode_rows(pipe.tokenizer, encoder, texts, chunks, weighting, False)
        out[key] = hidden.to(dtype=encoder.dtype, device=device)
    return out


def _encode_pair(
    pipe: Any,
    prompts: Sequence[str],
    negatives: Sequence[str | None],
    device: torch.device | str,
    chunks: int,
    use_negatives: bool,
    weighting: bool,
) -> dict[str, torch.Tensor]:
    if pipe.text_encoder is None:
        raise ValueError("SDXL models without the first text encoder (refiners) are not supported")
    dtype = pipe.text_encoder_2.dtype
    out: dict[str, torch.Tensor] = {}
    hidden, pooled = _encode_sdxl_rows(pipe, list(prompts), chunks, weighting)
    out["prompt_embeds"] = hidden.to(dtype=dtype, device=device)
    out["pooled_prompt_embeds"] = pooled.to(dtype=dtype, device=device)
    if not use_negatives:
        return out
    # The pipeline's default for no negative prompt: zeros where the model asks for them
    # (force_zeros_for_empty_prompt, SDXL base), else the empty prompt.
    zeros_for_none = bool(pipe.config.get("force_zeros_for_empty_prompt", False))
    if zeros_for_none and all(negative is None for negative in negatives):
        neg_hidden, neg_pooled = torch.zeros_like(hidden), torch.zeros_like(pooled)
    else:
        texts = [negative if negative is not None else "" for negative in negatives]
        neg_hidden, neg_pooled = _encode_sdxl_rows(pipe, texts, chunks, weighting)
        if zeros_for_none:
            given = torch.tensor([n is not None for n in negatives], device=neg_hidden.device)
            neg_hidden = torch.where(given[:, None, None], neg_hidden, 0.0)
            neg_pooled = torch.where(given[:, None], neg_pooled, 0.0)
    out["negative_prompt_embeds"] = neg_hidden.to(dtype=dtype, device=device)
    out["negative_pooled_prompt_embeds"] = neg_pooled.to(dtype=dtype, device=device)
    return out


def _encode_sdxl_rows(
    pipe: Any, texts: list[str], chunks: int, weighting: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    # Both encoders' penultimate hidden states side by side; the pooled vector is the second
    # encoder's projection of the first chunk, as encode_prompt makes it of its only chunk.
    first, _ = _encode_rows(pipe.tokenizer, pipe.text_encoder, texts, chunks, weighting, True)
    second, pooled = _encode_rows(
        pipe.tokenizer_2, pipe.text_encoder_2, texts, chunks, weighting, True
    )
    if pooled is None:
        raise ValueError("the second SDXL text encoder gives no projected (pooled) output")
    return torch.cat([first, second], dim=-1), pooled


# -- chunks -----------------------------------------------------------------------------


def _encode_rows(
    tokenizer: Any,
    encoder: Any,
    texts: Sequence[str],
    chunks: int,
    weighting: bool,
    penultimate: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Encode each text as `chunks` chunks: (rows, chunks * 77, width) hidden states, and the
    first chunk's projected output where the encoder has one."""
    tokenized = [_tokens(tokenizer, text, weighting) for text in texts]
    hidden_parts: list[torch.Tensor] = []
    pooled: torch.Tensor | None = None
    # One encoder pass per chunk position, over all rows: the first is then the very batch
    # encode_prompt runs (a different batch shape may change the last bits of the result).
    for index in range(chunks):
        window = slice(index * CHUNK_TOKENS, (index + 1) * CHUNK_TOKENS)
        ids: list[list[int]] = []
        masks: list[list[int]] = []
        weights: list[list[float]] = []
        for tokens, token_weights in tokenized:
            part = tokens[window]
            padding = CHUNK_TOKENS - len(part)
            ids.append(
                [tokenizer.bos_token_id, *part, tokenizer.eos_token_id]
                + [tokenizer.pad_token_id] * padding
            )
            masks.append([1] * (len(part) + 2) + [0] * padding)
            weights.append([1.0, *token_weights[window], 1.0] + [1.0] * padding)
        mask = None
        # SD 1.x's encode_prompt passes a mask only to encoders configured for one (CLIP is
        # not); SDXL's never does.
        if not penultimate and getattr(encoder.config, "use_attention_mask", False):
            mask = torch.tensor(masks, device=encoder.device)
        input_ids = torch.tensor(ids, device=encoder.device)
        output = encoder(input_ids, attention_mask=mask, output_hidden_states=penultimate)
        hidden: torch.Tensor = output.hidden_states[-2] if penultimate else output[0]
        if weighting:
            hidden = _apply_weights(hidden, torch.tensor(weights, device=hidden.device))
        hidden_parts.append(hidden)
        if index == 0:
            pooled = getattr(output, "text_embeds", None)
    return torch.cat(hidden_parts, dim=1), pooled


def _apply_weights(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Scale each token's embedding by its weight, then give each row (one chunk of one
    prompt) its mean back, as the A1111 web UI does."""
    if bool((weights == 1.0).all()):
        return hidden
    weights = weights.to(hidden.dtype)
    before = hidden.mean(dim=(1, 2), keepdim=True)
    scaled = hidden * weights[:, :, None]
    after = scaled.mean(dim=(1, 2), keepdim=True)
    # A row whose mean the weights cancel exactly keeps its scaled values.
    ratio = torch.where(after == 0, torch.ones_like(after), before / after)
    return scaled * ratio


def _chunks_for(tokens: int) -> int:
    return max(1, math.ceil(tokens / CHUNK_TOKENS))


def _tokenizers(pipe: Any) -> list[Any]:
    found = [getattr(pipe, name, None) for name in ("tokenizer", "tokenizer_2")]
    return [tokenizer for tokenizer in found if tokenizer is not None]


def _tokens(tokenizer: Any, text: str, weighting: bool) -> tuple[list[int], list[float]]:
    """The text's token ids, without start/end tokens and uncut, and a weight per token."""
    pieces = parse_emphasis(text) if weighting else [(text, 1.0)]
    ids: list[int] = []
    weights: list[float] = []
    for piece, weight in pieces:
        # verbose=False: no warning that the ids exceed the model's length; chunks fix that.
        piece_ids: list[int] = tokenizer(
            piece, add_special_tokens=False, truncation=False, verbose=False
        ).input_ids
        ids += piece_ids
        weights += [weight] * len(piece_ids)
    return ids, weights


# -- emphasis ---------------------------------------------------------------------------

_EMPHASIS_TOKEN = re.compile(
    r"""
    \\[()\[\]\\]              # an escaped bracket or backslash
    | \\                      # a lone backslash
    | \( | \[                 # an opening bracket
    | :\s*([+-]?[.\d]+)\s*\)  # ":1.3)" closes a round bracket with a weight
    | \) | \]                 # a closing bracket
    | [^\\()\[\]:]+           # plain text
    | :                       # a colon that is not a weight
    """,
    re.VERBOSE,
)


def parse_emphasis(text: str) -> list[tuple[str, float]]:
    """Split A1111-style emphasis into (text, weight) pieces: ``"a (red:1.3) cat"`` gives
    ``[("a ", 1.0), ("red", 1.3), (" cat", 1.0)]``. Unbalanced brackets apply to the end
    of the text (an unmatched closing one is kept as text); a weight that is not a number
    is kept as text."""
    pieces: list[list[Any]] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for match in _EMPHASIS_TOKEN.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\") and len(token) == 2:
            pieces.append([token[1], 1.0])
        elif token == "(":
            round_open.append(len(pieces))
        elif token == "[":
            square_open.append(len(pieces))
        elif weight is not None and round_open and _is_number(weight):
            scale(round_open.pop(), float(weight))
        elif token == ")" and round_open:
            scale(round_open.pop(), EMPHASIS)
        elif token == "]" and square_open:
            scale(square_open.pop(), 1 / EMPHASIS)
        else:
            pieces.append([token, 1.0])
    for start in round_open:
        scale(start, EMPHASIS)
    for start in square_open:
        scale(start, 1 / EMPHASIS)

    merged: list[tuple[str, float]] = []
    for piece_text, piece_weight in pieces:
        if merged and merged[-1][1] == piece_weight:
            merged[-1] = (merged[-1][0] + piece_text, piece_weight)
        else:
            merged.append((piece_text, piece_weight))
    return merged or [("", 1.0)]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
