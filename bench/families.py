"""Seconds per job of every task of every catalogue model, in-process on the CPU.

Each model is loaded as a worker loads it (demo models are built when missing); each task runs
at 512x512 (outpaint: 512 -> 768x512; txt2video: the model's native size and default frames)
with 20 steps, twice, and the faster run is printed. One torch thread unless `--threads`.

Usage: ``python -m bench.families [--catalog models.toml] [--threads 1] [--models a,b]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from jobs.catalog import ModelEntry, load_catalog
from jobs.protocol import Padding, parse_params
from worker.imaging import inpaint_canvas, outpaint_canvas
from worker.main import model_source
from worker.pipelines import load_model

STEPS = 20


def _jobs(entry: ModelEntry, model: Any) -> dict[str, Callable[[], Any]]:
    image = Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    )
    mask = Image.new("L", image.size)
    mask.paste(255, (128, 128, 384, 384))
    common = {
        "model": entry.id,
        "prompt": "a lighthouse on a cliff",
        "negative_prompt": "",
        "steps": STEPS,
        "seed": 1,
        "scheduler": entry.scheduler,
        "guidance_scale": entry.default_guidance,
    }

    def params(task: str, **fields: Any) -> Any:
        return parse_params({**common, "type": task, **fields})

    def nothing(step: int, total: int) -> None:
        pass

    width, height = entry.native_size
    runs: dict[str, Callable[[], Any]] = {
        "txt2img": lambda: model.txt2img(params("txt2img", width=512, height=512), nothing),
        "img2img": lambda: model.img2img(params("img2img"), image, nothing),
        "inpaint": lambda: model.inpaint(
            params("inpaint"), inpaint_canvas(image, mask, 8), nothing
        ),
        "outpaint": lambda: model.inpaint(
            params("outpaint", outpaint={"left": 128, "right": 128}),
            outpaint_canvas(image, Padding(left=128, right=128), 8),
            nothing,
        ),
        "txt2video": lambda: model.txt2video(
            params(
                "txt2video",
                width=width,
                height=height,
                num_frames=entry.default_frames,
                fps=entry.default_fps,
            ),
            nothing,
        ),
    }
    return {task.value: runs[task.value] for task in entry.tasks}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.families", description=__doc__)
    parser.add_argument("--catalog", type=Path, default=Path("models.toml"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", help="comma-separated model ids (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    catalog = load_catalog(args.catalog)
    wanted = args.models.split(",") if args.models else [m.id for m in catalog.models]
    for entry in (catalog.by_id[model_id] for model_id in wanted):
        model = load_model(entry, model_source(catalog, entry), "cpu")
        row = [entry.id]
        for task, run in _jobs(entry, model).items():
            times = []
            for _ in range(2):
                started = time.perf_counter()
                run()
                times.append(time.perf_counter() - started)
            row.append(f"{task} {min(times):.2f} s")
        print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
