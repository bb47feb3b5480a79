"""How well the shapes model follows prompts, measured by the judge through the worker's path.

    python -m bench.quality [--catalog models.toml] [--model shapes] [--count 200]
                                    [--sweep-count 48] [--no-sweep] [--out bench/results]

The model is loaded as a worker loads it (``load_model`` with the catalogue entry and its
adapters) and every image comes from the same calls a job makes, with fixed seeds:

- txt2img over held-out prompts (combinations never seen in training) at the model's
  defaults, and at guidance 1.0: colour, shape, position, size and background accuracy;
- inpaint: a scene, a mask over its shape, a prompt naming another shape or colour there →
  the judge finds the asked shape in the mask; pixels outside the feathered mask unchanged;
- outpaint: the new border continues the background colour;
- img2img at strength 0.6: the prompt names another colour → position and shape kept, colour
  changed;
- the ``outline`` adapter: with it the judge finds rings of the asked shape, without it filled
  shapes;
- accuracy and seconds per image against steps for every scheduler the model lists.

It prints tables and writes ``quality-<model>.json`` (and the sweep's plot,
``quality-<model>.png``) under ``--out``; the shapes model's are committed.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from jobs.catalog import load_catalog
from jobs.protocol import Padding, parse_params
from worker.imaging import composite, inpaint_canvas, outpaint_canvas
from worker.shapes.judge import Verdict, classify, judge, score
from worker.shapes.scenes import (
    COLOURS,
    KINDS,
    SIZE,
    Scene,
    Shape,
    prompt,
    random_scene,
    render,
    shape_box,
)
from worker.shapes.train import held_out_prompts

SWEEP_STEPS = (2, 4, 8, 16, 30)

SECTIONS = {
    "txt2img": "txt2img",
    "guidance_1": "txt2img_guidance_1",
    "inpaint": "inpaint",
    "outpaint": "outpaint",
    "img2img": "img2img",
    "lora": "lora",
    "sweep": "sweep",
}
"""What `--only` may name, and each one's key in the report."""
INPAINT_BLUR = 4
_COLOURS = list(COLOURS)


def _nothing(step: int, total: int) -> None:
    pass


class Model:
    """A catalogue model loaded the way a worker loads it, run the way a job runs it."""

    def __init__(self, catalog_path: Path, model_id: str) -> None:
        from worker.main import adapter_files, model_source
        from worker.pipelines import load_model

        catalog = load_catalog(catalog_path)
        self.entry = catalog.by_id[model_id]
        source = model_source(catalog, self.entry)
        self.adapters = [a.id for a in catalog.adapters_for(self.entry)]
        self.warm: Any = load_model(
            self.entry,
            source,
            "cpu",
            adapters=adapter_files(catalog, self.entry, source),
        )

    def params(self, task: str, text: str, seed: int, **fields: Any) -> Any:
        body = {
            "type": task,
            "model": self.entry.id,
            "prompt": text,
            "negative_prompt": "",
            "seed": seed,
            "steps": self.entry.default_steps,
            "scheduler": self.entry.scheduler,
            "guidance_scale": self.entry.default_guidance,
            **fields,
        }
        return parse_params(body)

    def txt2img(self, text: str, seed: int, **fields: Any) -> Image.Image:
        width, height = self.entry.native_size
        params = self.params("txt2img", text, seed, width=width, height=height, **fields)
        image: Image.Image = self.warm.txt2img(params, _nothing)[0]
        return image


def _rate(hits: list[dict[str, bool]]) -> dict[str, float]:
    return {key: round(sum(h[key] for h in hits) / len(hits), 4) for key in hits[0]} if hits else {}


def txt2img_accuracy(model: Model, count: int, **fields: Any) -> tuple[dict[str, float], float]:
    """Accuracy over ``count`` held-out prompts, and seconds per image."""
    hits = []
    started = time.perf_counter()
    for seed, (scene, text) in enumerate(held_out_prompts(count)):
        verdict = judge(model.txt2img(text, seed, **fields))
        s = score(scene.shapes[0], scene.background, verdict)
        hits.append({**asdict(s), "all": s.all})
    return _rate(hits), (time.perf_counter() - started) / count


def one_shape_scenes(seed: int, count: int) -> list[Scene]:
    rng = random.Random(seed)
    return [random_scene(rng, two_shapes=0.0) for _ in range(count)]


def other_shape(rng: random.Random, shape: Shape, background: str) -> Shape:
    """The same place and size, another kind or another colour (or both)."""
    change = rng.choice(("kind", "colour", "both"))
    kind, colour = shape.kind, shape.colour
    if change in ("kind", "both"):
        kind = rng.choice([k for k in KINDS if k != shape.kind])
    if change in ("colour", "both"):
        colour = rng.choice([c for c in _COLOURS if c not in (shape.colour, background)])
    return Shape(colour, kind, shape.position, shape.size)


def mask_for(scene: Scene) -> Image.Image:
    cx, cy, r = shape_box(scene.shapes[0], scene.offsets[0])
    margin = r * 0.35 + 6
    mask = Image.new("L", (SIZE, SIZE), 0)
    left, top = round(cx - r - margin), round(cy - r - margin)
    right, bottom = round(cx + r + margin + 1), round(cy + r + margin + 1)
    mask.paste(255, (left, top, right, bottom))
    return mask


def inpaint_check(model: Model, count: int) -> dict[str, float]:
    """The asked shape is found inside the mask, and nothing outside the feathered mask
    changed."""
    rng = random.Random(7)
    found, kept = [], []
    for seed, scene in enumerate(one_shape_scenes(11, count)):
        asked = other_shape(rng, scene.shapes[0], scene.background)
        image = Image.fromarray(render(scene))
        canvas = inpaint_canvas(image, mask_for(scene), INPAINT_BLUR)
        params = model.params("inpaint", prompt(asked, scene.background), seed, strength=1.0)
        out = composite(model.warm.inpaint(params, canvas, _nothing)[0], canvas)
        verdict = judge(out)
        # The mask covers the asked shape's cell: a match there is a shape in the mask.
        found.append(
            any(
                (f.colour, f.kind, f.position) == (asked.colour, asked.kind, asked.position)
                for f in verdict.shapes
            )
        )
        outside = np.asarray(canvas.alpha) == 0
        kept.append(bool((np.asarray(out)[outside] == np.asarray(image)[outside]).all()))
    return {"asked_shape_in_mask": _share(found), "outside_unchanged": _share(kept)}


def _share(values: list[bool]) -> float:
    return round(sum(values) / len(values), 4) if values else 0.0


def outpaint_check(model: Model, count: int, pad: int = 32) -> dict[str, float]:
    """Share of the new border's pixels that take the background's colour (per image, then
    averaged), and the share of images where at least 90% do."""
    shares = []
    for seed, scene in enumerate(one_shape_scenes(13, count)):
        image = Image.fromarray(render(scene))
        padding = Padding(left=pad, right=pad)
        canvas = outpaint_canvas(image, padding, 8)
        params = model.params(
            "outpaint",
            prompt(scene.shapes[0], scene.background),
            seed,
            outpaint={"left": pad, "right": pad},
        )
        out = composite(model.warm.inpaint(params, canvas, _nothing)[0], canvas)
        labels = classify(out)
        border = np.concatenate([labels[:, :pad].ravel(), labels[:, -pad:].ravel()])
        shares.append(float((border == _COLOURS.index(scene.background)).mean()))
    return {
        "border_background_share": round(float(np.mean(shares)), 4),
        "images_90pct_background": _share([s >= 0.9 for s in shares]),
    }


def img2img_check(model: Model, count: int, strength: float = 0.6) -> dict[str, float]:
    """Ask for another colour: the judge finds the new colour at the same place, same kind."""
    rng = random.Random(17)
    hits = []
    for seed, scene in enumerate(one_shape_scenes(19, count)):
        shape = scene.shapes[0]
        colour = rng.choice([c for c in _COLOURS if c not in (shape.colour, scene.background)])
        asked = Shape(colour, shape.kind, shape.position, shape.size)
        params = model.params("img2img", prompt(asked, scene.background), seed, strength=strength)
        out = model.warm.img2img(params, Image.fromarray(render(scene)), _nothing)[0]
        s = score(asked, scene.background, judge(out))
        hits.append({"colour_changed": s.colour, "kind_kept": s.kind, "position_kept": s.position})
    return _rate(hits)


def lora_check(model: Model, count: int, adapter: str = "outline") -> dict[str, float]:
    """With the adapter: rings of the asked (large) shape; without it: filled shapes."""
    with_style, without_style, shape_ok = [], [], []
    for seed, (scene, text) in enumerate(held_out_prompts(count, seed=99, size="large")):
        styled = judge(model.txt2img(text, seed, loras=[{"id": adapter, "scale": 1.0}]))
        plain = judge(model.txt2img(text, seed))
        with_style.append(bool(styled.shapes) and styled.shapes[0].outline)
        without_style.append(bool(plain.shapes) and not plain.shapes[0].outline)
        shape_ok.append(_main_is(styled, scene.shapes[0]))
    return {
        "outline_with_adapter": _share(with_style),
        "filled_without_adapter": _share(without_style),
        "shape_found_with_adapter": _share(shape_ok),
    }


def _main_is(verdict: Verdict, shape: Shape) -> bool:
    if not verdict.shapes:
        return False
    main = verdict.shapes[0]
    return (main.colour, main.kind, main.position) == (shape.colour, shape.kind, shape.position)


def scheduler_sweep(model: Model, count: int) -> list[dict[str, Any]]:
    rows = []
    for scheduler in model.entry.schedulers:
        for steps in SWEEP_STEPS:
            if scheduler == "pndm" and steps < 4:
                continue  # diffusers' PNDM needs 4 steps (the API refuses fewer)
            accuracy, seconds = txt2img_accuracy(model, count, scheduler=scheduler, steps=steps)
            rows.append(
                {
                    "scheduler": scheduler,
                    "steps": steps,
                    "s_per_image": round(seconds, 4),
                    **accuracy,
                }
            )
            print(
                f"  {scheduler:16} {steps:3} steps  all {accuracy['all']:.2f}  colour "
                f"{accuracy['colour']:.2f}  kind {accuracy['kind']:.2f}  position "
                f"{accuracy['position']:.2f}  {seconds:.3f} s/img",
                flush=True,
            )
    return rows


def plot_sweep(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for scheduler in dict.fromkeys(r["scheduler"] for r in rows):
        mine = [r for r in rows if r["scheduler"] == scheduler]
        left.plot([r["steps"] for r in mine], [r["all"] for r in mine], marker="o", label=scheduler)
        right.plot(
            [r["s_per_image"] for r in mine], [r["all"] for r in mine], marker="o", label=scheduler
        )
    left.set(
        xscale="log", xlabel="steps", ylabel="prompts fully followed", title="accuracy by steps"
    )
    right.set(
        xlabel="seconds per image (CPU)", ylabel="prompts fully followed", title="accuracy by time"
    )
    left.minorticks_off()  # the log axis's own labels would crowd the ones set here
    left.set_xticks(list(SWEEP_STEPS), [str(s) for s in SWEEP_STEPS])
    left.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _section(name: str, run: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = run()
    print(f"{name}: {result}  ({time.perf_counter() - started:.0f} s)", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__)
    parser.add_argument("--catalog", type=Path, default=Path("models.toml"))
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--task-count", type=int, default=100)
    parser.add_argument("--sweep-count", type=int, default=48)
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument(
        "--only",
        help="comma-separated sections to measure again (txt2img, guidance_1, inpaint, "
        "outpaint, img2img, lora, sweep); the others are kept from the existing report",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    model = Model(args.catalog, args.model)
    entry = model.entry
    print(
        f"{entry.id}: {entry.default_steps} steps, {entry.scheduler}, guidance "
        f"{entry.default_guidance}, {args.count} held-out prompts",
        flush=True,
    )
    path = args.out / f"quality-{entry.id}.json"
    wanted = set(args.only.split(",")) if args.only else set(SECTIONS)
    unknown = wanted - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    if args.no_sweep:
        wanted.discard("sweep")
    if "lora" in wanted and "outline" not in model.adapters:
        wanted.discard("lora")
        print("lora: skipped, the catalogue lists no outline adapter for this model")
    report: dict[str, Any] = {"model": entry.id, "count": args.count}
    if args.only and path.exists():
        report = {**json.loads(path.read_text()), **report}
    runs: dict[str, Callable[[], Any]] = {
        "txt2img": lambda: txt2img_accuracy(model, args.count)[0],
        "guidance_1": lambda: txt2img_accuracy(model, args.count, guidance_scale=1.0)[0],
        "inpaint": lambda: inpaint_check(model, args.task_count),
        "outpaint": lambda: outpaint_check(model, args.task_count),
        "img2img": lambda: img2img_check(model, args.task_count),
        "lora": lambda: lora_check(model, args.task_count),
    }
    for name, run in runs.items():
        if name in wanted:
            report[SECTIONS[name]] = _section(name, run)
    args.out.mkdir(parents=True, exist_ok=True)
    if "sweep" in wanted:
        print("steps x scheduler:", flush=True)
        report["sweep"] = scheduler_sweep(model, args.sweep_count)
        plot_sweep(report["sweep"], args.out / f"quality-{entry.id}.png")
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
