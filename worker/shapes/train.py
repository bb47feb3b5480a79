"""Train the shapes demo model on the CPU, end to end, resumably.

    python -m worker.shapes.train OUT [--work DIR] [--vae-steps N] [--steps N] ...

Five stages, each saved under ``--work`` (kept out of git) so that a run stopped at any
moment picks up where it was:

1. the VAE (``AutoencoderKL``, 64x64 → 16x16x4) on freshly rendered scenes: pixel L1 + MSE
   and a small KL term;
2. the training scenes' latents, encoded once (posterior mean and standard deviation, so that
   each step still samples from the posterior), and the latent scale;
3. the CLIP text encoder alone, taught to read captions: small heads on its output predict the
   scene's label (background; each shape's colour, kind, position and size) from a caption,
   minutes of work that spare the UNet stage from learning words and pictures at once (SD
   starts from a trained text encoder too);
4. the UNet, with the text encoder fine-tuned beside it: epsilon prediction, min-SNR-5 loss
   weighting, the latent cells under a shape weighted up (they are a small share of the cells
   but all of the meaning), one caption in ten left empty (classifier-free guidance), captions
   written afresh from each scene's label every time it is drawn, EMA weights; every
   ``--eval-every`` steps the EMA model draws held-out prompts and the judge scores them;
5. the VAE's decoder alone, the encoder (and so the UNet's latents) frozen, with the shapes'
   pixels weighted up (``--only-decoder`` runs this stage by itself, beside stage 4).

The EMA weights are then saved to OUT as an fp16 ``StableDiffusionPipeline`` folder.

A run resumed with a larger ``--steps`` continues stage 4 on a cosine schedule over the new
total, at the learning rates given now: the committed model is 8,000 steps at the defaults,
then resumed to 14,000 with ``--lr 2.5e-4 --text-lr 1e-4`` (``make demo-model``).

One file of about 600 lines, on purpose: it is a script read top to bottom, its stages in
the order they run, sharing the run's arguments and work folder; the scene renderer, the
judge and the model's parts are modules of their own beside it.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from worker.shapes import model as parts
from worker.shapes.scenes import (
    COLOURS,
    KINDS,
    POSITIONS,
    SIZE,
    SIZES,
    Scene,
    caption,
    prompt,
    random_scene,
    render,
    scenes,
    shape_box,
)

SEED = 20261201
EMPTY_CAPTIONS = 0.1
MIN_SNR_GAMMA = 5.0
SHAPE_WEIGHT = 3.0
"""How much more a latent cell under a shape (or next to one) weighs in the UNet's loss."""


def _torch() -> Any:
    import torch

    return torch


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _atomic_save(obj: Any, path: Path) -> None:
    torch = _torch()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _images(batch: list[Scene]) -> Any:
    torch = _torch()
    pixels = np.stack([render(scene) for scene in batch]).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()


# -- stage 1: the VAE -----------------------------------------------------------------------


def train_vae(work: Path, steps: int, batch: int = 16, lr: float = 1e-3, full: int = 300) -> Any:
    """All but the last ``full`` steps see half-side crops around a shape (a quarter of the work
    per image: the VAE is convolutional), the last ones whole scenes; the shapes' pixels
    weigh five times the background's, or the small shapes' colours are lost."""
    torch = _torch()
    path = work / "vae.pt"
    vae = parts.new_vae()
    state: dict[str, Any] = {"step": 0}
    if path.exists():
        state = torch.load(path, weights_only=False)
        vae.load_state_dict(state["model"])
    if state["step"] >= steps:
        return vae.eval()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    if "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    vae.train()
    started, step = time.monotonic(), state["step"]
    while step < steps:
        rng = random.Random(SEED * 7 + step)
        labels = [random_scene(rng, two_shapes=0.4) for _ in range(batch)]
        x = _images(labels)
        weights = _shape_weights(x, labels)
        if step < steps - full:
            x, weights = _around_shapes(labels, x, weights)
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * (1 - step / steps))
        posterior = vae.encode(x).latent_dist
        y = vae.decode(posterior.sample()).sample
        recon = (weights * ((y - x).abs() + (y - x).pow(2))).mean()
        kl = posterior.kl().mean() / (x.shape[1] * x.shape[2] * x.shape[3])
        loss = recon + 1e-4 * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        step += 1
        if step % 25 == 0 or step == steps:
            rate = (time.monotonic() - started) / max(1, step - state["step"])
            log(
                f"vae {step}/{steps} recon {recon.item():.4f} kl {kl.item():.4f} "
                f"({rate:.2f} s/step)"
            )
        if step % 200 == 0 or step == steps:
            _atomic_save(
                {"step": step, "model": vae.state_dict(), "optimizer": optimizer.state_dict()},
                path,
            )
    return vae.eval()


def _shape_weights(x: Any, batch: list[Scene], boost: float = 4.0) -> Any:
    """1 on the background, 1 + ``boost`` on the shapes and their edges: the shapes are a
    small share of the pixels but all of the meaning."""
    torch = _torch()
    background = torch.tensor(
        [[c / 127.5 - 1.0 for c in COLOURS[scene.background]] for scene in batch]
    ).view(-1, 3, 1, 1)
    on_shape = ((x - background).abs().amax(dim=1, keepdim=True) > 0.05).float()
    on_shape = torch.nn.functional.max_pool2d(on_shape, 5, stride=1, padding=2)
    return 1.0 + boost * on_shape


def _around_shapes(labels: list[Scene], *tensors: Any) -> tuple[Any, ...]:
    """Half-side windows (4x4 latents, aligned to them) around each scene's first shape, cut
    from each of ``tensors`` (images at full size, or their latents)."""
    torch = _torch()
    factor = SIZE // parts.LATENT_SIDE
    window = SIZE // 2
    cut: list[list[Any]] = [[] for _ in tensors]
    for i, scene in enumerate(labels):
        cx, cy, _ = shape_box(scene.shapes[0], scene.offsets[0])
        left = min(SIZE - window, max(0, round((cx - window / 2) / factor) * factor))
        top = min(SIZE - window, max(0, round((cy - window / 2) / factor) * factor))
        for out, tensor in zip(cut, tensors, strict=True):
            if tensor.shape[-1] == SIZE:
                out.append(tensor[i, :, top : top + window, left : left + window])
            else:
                z_top, z_left, z_side = top // factor, left // factor, window // factor
                out.append(tensor[i, :, z_top : z_top + z_side, z_left : z_left + z_side])
    return tuple(torch.stack(out) for out in cut)


def finetune_decoder(work: Path, vae: Any, steps: int, batch: int = 8, lr: float = 3e-4) -> Any:
    """Train the decoder alone, the encoder (and so the latents the UNet learns) frozen, with
    the shapes' pixels weighted up, on half-side crops around a shape and on whole scenes."""
    torch = _torch()
    path = work / "decoder.pt"
    start = 0
    if path.exists():
        state = torch.load(path, weights_only=False)
        vae.decoder.load_state_dict(state["decoder"])
        vae.post_quant_conv.load_state_dict(state["post_quant_conv"])
        start = state["step"]
    if start >= steps:
        return vae.eval()
    trained = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=0.0)
    if start:
        optimizer.load_state_dict(state["optimizer"])
    vae.eval()
    vae.decoder.train()
    started = time.monotonic()
    for step in range(start, steps):
        rng = random.Random(SEED * 11 + step)
        labels = [random_scene(rng, two_shapes=0.4) for _ in range(batch)]
        x = _images(labels)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean
        weights = _shape_weights(x, labels)
        if step % 2:
            x, z, weights = _around_shapes(labels, x, z, weights)
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 50)
        y = vae.decode(z).sample
        loss = (weights * ((y - x).abs() + (y - x).pow(2))).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 25 == 0:
            rate = (time.monotonic() - started) / (step + 1 - start)
            log(f"decoder {step + 1}/{steps} loss {loss.item():.4f} ({rate:.2f} s/step)")
        if (step + 1) % 100 == 0 or step + 1 == steps:
            _atomic_save(
                {
                    "step": step + 1,
                    "decoder": vae.decoder.state_dict(),
                    "post_quant_conv": vae.post_quant_conv.state_dict(),
                    "optimizer": optimizer.state_dict(),
                },
                path,
            )
    return vae.eval()


# -- stage 2: the latents -------------------------------------------------------------------


def encode_scenes(work: Path, vae: Any, count: int) -> dict[str, Any]:
    torch = _torch()
    path = work / "latents.pt"
    if path.exists():
        cached = torch.load(path, weights_only=False)
        if cached["count"] == count:
            return dict(cached)
    labels = list(scenes(SEED, count, two_shapes=0.3))
    means, stds = [], []
    with torch.no_grad():
        for start in range(0, count, 64):
            posterior = vae.encode(_images(labels[start : start + 64])).latent_dist
            means.append(posterior.mean)
            stds.append(posterior.std)
            if start % 2048 == 0:
                log(f"encoded {start}/{count} scenes")
    mean, std = torch.cat(means), torch.cat(stds)
    scale = float(1.0 / mean.std())
    cached = {"count": count, "labels": labels, "mean": mean, "std": std, "scale": scale}
    _atomic_save(cached, path)
    log(f"latents {tuple(mean.shape)}, scale {scale:.4f}")
    return cached


# -- stage 3: the text encoder reads captions ----------------------------------------------

_ATTRIBUTES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("colour", tuple(COLOURS)),
    ("kind", KINDS),
    ("position", tuple(POSITIONS)),
    ("size", SIZES),
)
"""Each shape's attributes and their values, in the order of the heads' outputs."""


def _label_targets(scene: Scene) -> list[int]:
    """Class indices: the background, then each attribute of the first and of the second
    shape (the captions name the shapes in the label's order; a missing second shape is the
    extra last class of each of its attributes)."""
    targets = [list(COLOURS).index(scene.background)]
    for slot in range(2):
        for name, values in _ATTRIBUTES:
            if slot < len(scene.shapes):
                targets.append(values.index(getattr(scene.shapes[slot], name)))
            else:
                targets.append(len(values))
    return targets


def _label_head_sizes() -> list[int]:
    return [len(COLOURS)] + [len(values) + 1 for _ in range(2) for _, values in _ATTRIBUTES]


def pretrain_text_encoder(
    work: Path, tokenizer: Any, steps: int, batch: int = 64, lr: float = 2e-3
) -> Any:
    """The text encoder, trained alone to predict a scene's label from one of its captions,
    read at the end-of-text token and averaged over every position (the UNet attends to all
    of them). A part a caption leaves out can only be guessed: its loss teaches the prior."""
    torch = _torch()
    path = work / "text.pt"
    torch.manual_seed(SEED + 3)
    text_encoder = parts.new_text_encoder(tokenizer)
    if path.exists():
        text_encoder.load_state_dict(torch.load(path, weights_only=False)["text_encoder"])
        return text_encoder
    sizes = _label_head_sizes()
    head = torch.nn.Linear(2 * parts.TEXT_WIDTH, sum(sizes))
    trained = [*text_encoder.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=0.01)
    captions = Captions(tokenizer)
    text_encoder.train()
    started = time.monotonic()
    for step in range(steps):
        rng = random.Random(SEED * 17 + step)
        labels = [random_scene(rng, two_shapes=0.3) for _ in range(batch)]
        texts = [caption(label, rng) for label in labels]
        targets = torch.tensor([_label_targets(label) for label in labels])
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 100) * (1 - step / steps)
        output = text_encoder(captions.ids(texts))
        read = torch.cat([output.pooler_output, output.last_hidden_state.mean(dim=1)], dim=1)
        logits = head(read).split(sizes, dim=1)
        loss = sum(
            torch.nn.functional.cross_entropy(part, targets[:, i]) for i, part in enumerate(logits)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            right = sum(
                (part.argmax(dim=1) == targets[:, i]).float().mean().item()
                for i, part in enumerate(logits)
            ) / len(logits)
            rate = (time.monotonic() - started) / (step + 1)
            log(
                f"text {step + 1}/{steps} loss {loss.item():.3f} attributes right "
                f"{right:.1%} ({rate:.2f} s/step)"
            )
    _atomic_save({"text_encoder": text_encoder.state_dict()}, path)
    return text_encoder


def _shape_cells(labels: list[Scene]) -> Any:
    """For each scene, 1 + ``SHAPE_WEIGHT`` on the latent cells a shape covers (one cell of
    margin), 1 elsewhere."""
    torch = _torch()
    side = parts.LATENT_SIDE
    weights = torch.ones(len(labels), 1, side, side)
    for i, scene in enumerate(labels):
        for shape, offset in zip(scene.shapes, scene.offsets, strict=True):
            cx, cy, r = shape_box(shape, offset, side)
            left, right = max(0, math.floor(cx - r) - 1), min(side, math.ceil(cx + r) + 1)
            top, bottom = max(0, math.floor(cy - r) - 1), min(side, math.ceil(cy + r) + 1)
            weights[i, 0, top:bottom, left:right] = 1.0 + SHAPE_WEIGHT
    return weights


# -- stage 4: the UNet, the text encoder fine-tuned beside it ------------------------------


class Captions:
    """Tokenises captions once each: the same captions come back often."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.cache: dict[str, list[int]] = {}

    def ids(self, texts: list[str]) -> Any:
        torch = _torch()
        missing = [t for t in set(texts) if t not in self.cache]
        if missing:
            encoded = self.tokenizer(
                missing,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
            ).input_ids
            self.cache.update(zip(missing, encoded, strict=True))
        return torch.tensor([self.cache[t] for t in texts])


def _ema_update(ema: Any, model: Any, decay: float) -> None:
    torch = _torch()
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.lerp_(p, 1.0 - decay)


def held_out_prompts(
    count: int, seed: int = SEED + 1, size: str | None = None
) -> list[tuple[Scene, str]]:
    """One-shape held-out scenes (of one ``size`` if given) and the prompt naming every part
    of each."""
    rng = random.Random(seed)
    out: list[tuple[Scene, str]] = []
    while len(out) < count:
        scene = random_scene(rng, held_out=True)
        if size is None or scene.shapes[0].size == size:
            out.append((scene, prompt(scene.shapes[0], scene.background)))
    return out


def evaluate(pipe: Any, count: int, guidance: float = 5.0, steps: int = 20) -> dict[str, float]:
    """Share of held-out prompts whose colour, kind, position and background the judge finds."""
    torch = _torch()
    from worker.shapes.judge import judge, score

    cases = held_out_prompts(count)
    totals = {"colour": 0, "kind": 0, "position": 0, "size": 0, "background": 0, "all": 0}
    for start in range(0, count, 16):
        chunk = cases[start : start + 16]
        generator = [torch.Generator().manual_seed(start + i) for i in range(len(chunk))]
        images = pipe(
            [p for _, p in chunk],
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generator,
            output_type="np",
        ).images
        for (scene, _), image in zip(chunk, images, strict=True):
            s = score(scene.shapes[0], scene.background, judge((image * 255).round()))
            for key in totals:
                totals[key] += int(getattr(s, key))
    return {key: value / count for key, value in totals.items()}


def train_unet(
    work: Path,
    latents: dict[str, Any],
    vae: Any,
    text_encoder: Any,
    tokenizer: Any,
    *,
    steps: int,
    batch: int,
    lr: float,
    text_lr: float,
    eval_every: int,
    eval_count: int,
    deadline: float | None,
    log_every: int = 50,
) -> tuple[Any, Any]:
    torch = _torch()
    path = work / "unet.pt"
    torch.manual_seed(SEED)
    unet = parts.new_unet()
    ema_unet, ema_text = copy.deepcopy(unet), copy.deepcopy(text_encoder)
    optimizer = torch.optim.AdamW(
        [
            {"params": list(unet.parameters()), "base_lr": lr},
            {"params": list(text_encoder.parameters()), "base_lr": text_lr},
        ],
        lr=lr,
        weight_decay=0.01,
    )
    step = 0
    if path.exists():
        state = torch.load(path, weights_only=False)
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        ema_unet.load_state_dict(state["ema_unet"])
        ema_text.load_state_dict(state["ema_text"])
        optimizer.load_state_dict(state["optimizer"])
        # The checkpoint's groups carry the rates of the run that wrote it; the ones given now
        # win, so that a longer run resumed from it may continue at a lower rate.
        for group, base_lr in zip(optimizer.param_groups, (lr, text_lr), strict=True):
            group["base_lr"] = base_lr
        step = state["step"]
        log(f"resumed at step {step}")

    def save() -> None:
        _atomic_save(
            {
                "step": step,
                "unet": unet.state_dict(),
                "text_encoder": text_encoder.state_dict(),
                "ema_unet": ema_unet.state_dict(),
                "ema_text": ema_text.state_dict(),
                "optimizer": optimizer.state_dict(),
            },
            path,
        )

    scheduler = parts.new_scheduler()
    alphas_cumprod = scheduler.alphas_cumprod.float()
    snr = alphas_cumprod / (1 - alphas_cumprod)
    weights = torch.clamp(snr, max=MIN_SNR_GAMMA) / snr
    captions = Captions(tokenizer)
    labels, mean, std, scale = latents["labels"], latents["mean"], latents["std"], latents["scale"]
    cells = _shape_cells(labels)
    history = work / "loss.jsonl"
    unet.train()
    text_encoder.train()
    started, first, window = time.monotonic(), step, []
    while step < steps:
        if deadline is not None and time.time() > deadline:
            log(f"deadline reached at step {step}")
            break
        rng = random.Random(SEED * 13 + step)
        index = torch.tensor([rng.randrange(len(labels)) for _ in range(batch)])
        texts = [
            "" if rng.random() < EMPTY_CAPTIONS else caption(labels[i], rng) for i in index.tolist()
        ]
        generator = torch.Generator().manual_seed(SEED + step)
        z = (mean[index] + std[index] * torch.randn(mean[index].shape, generator=generator)) * scale
        noise = torch.randn(z.shape, generator=generator)
        t = torch.randint(0, len(alphas_cumprod), (batch,), generator=generator)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * z + (1 - a).sqrt() * noise
        for group in optimizer.param_groups:
            warm = min(1.0, (step + 1) / min(500, max(1, steps // 10)))
            decay = 0.5 * (1 + math.cos(math.pi * min(1.0, step / steps)))
            group["lr"] = group["base_lr"] * warm * (0.1 + 0.9 * decay)
        hidden = text_encoder(captions.ids(texts)).last_hidden_state
        predicted = unet(noisy, t, hidden).sample
        error = ((predicted - noise).pow(2) * cells[index]).mean(dim=(1, 2, 3))
        loss = (error * weights[t]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*unet.parameters(), *text_encoder.parameters()], 1.0)
        optimizer.step()
        step += 1
        ema_decay = min(0.999, (1 + step) / (10 + step))
        _ema_update(ema_unet, unet, ema_decay)
        _ema_update(ema_text, text_encoder, ema_decay)
        window.append(loss.item())
        if step % log_every == 0:
            rate = (time.monotonic() - started) / (step - first)
            mean_loss = sum(window) / len(window)
            window.clear()
            log(f"unet {step}/{steps} loss {mean_loss:.4f} ({rate:.2f} s/step)")
            with history.open("a") as f:
                f.write(json.dumps({"step": step, "loss": round(mean_loss, 5)}) + "\n")
        if step % 250 == 0:
            save()
        if eval_every and step % eval_every == 0:
            pipe = parts.pipeline(vae, ema_text, tokenizer, ema_unet)
            pipe.vae.config.scaling_factor = scale
            pipe.set_progress_bar_config(disable=True)
            with torch.no_grad():
                result = evaluate(pipe, eval_count)
            log(f"eval at {step}: {result}")
            with history.open("a") as f:
                f.write(json.dumps({"step": step, "eval": result}) + "\n")
    save()
    return ema_unet.eval(), ema_text.eval()


def export(out: Path, vae: Any, text_encoder: Any, tokenizer: Any, unet: Any, scale: float) -> Any:
    torch = _torch()
    vae.register_to_config(scaling_factor=scale)
    pipe = parts.pipeline(vae, text_encoder, tokenizer, unet)
    pipe.to(torch.float16)
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    pipe.to(torch.float32)
    return pipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="where to save the trained pipeline")
    parser.add_argument("--work", type=Path, default=Path("var/shapes-train"))
    parser.add_argument("--vae-steps", type=int, default=2000)
    parser.add_argument("--scenes", type=int, default=16384)
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--text-lr", type=float, default=2e-4)
    parser.add_argument("--text-steps", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--eval-count", type=int, default=48)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--decoder-steps", type=int, default=600)
    parser.add_argument(
        "--only-decoder",
        action="store_true",
        help="fine-tune the VAE's decoder alone (encoder frozen) and stop: it may run beside "
        "the UNet stage, which then finds the decoder done",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--hours", type=float, default=None, help="stop the UNet stage after this long and save"
    )
    args = parser.parse_args(argv)
    torch = _torch()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.hours * 3600 if args.hours else None
    log(f"stage 1: VAE, {args.vae_steps} steps")
    vae = train_vae(args.work, args.vae_steps)
    if args.only_decoder:
        finetune_decoder(args.work, vae, args.decoder_steps)
        return 0
    log(f"stage 2: latents of {args.scenes} scenes")
    latents = encode_scenes(args.work, vae, args.scenes)
    log(f"stage 3: the text encoder alone, {args.text_steps} steps")
    tokenizer = parts.build_tokenizer()
    text_encoder = pretrain_text_encoder(args.work, tokenizer, args.text_steps)
    log(f"stage 4: UNet and text encoder, {args.steps} steps of {args.batch}")
    unet, text_encoder = train_unet(
        args.work,
        latents,
        vae,
        text_encoder,
        tokenizer,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        text_lr=args.text_lr,
        eval_every=args.eval_every,
        eval_count=args.eval_count,
        deadline=deadline,
        log_every=args.log_every,
    )
    log(f"stage 5: the decoder alone, {args.decoder_steps} steps")
    vae = finetune_decoder(args.work, vae, args.decoder_steps)
    export(args.out, vae, text_encoder, tokenizer, unet, latents["scale"])
    log(f"saved to {args.out} ({SIZE}x{SIZE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
