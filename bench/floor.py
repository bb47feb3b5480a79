"""The floor: the model loaded as a worker loads it (`worker.pipelines.load_model`, with the
same LATENTQ_* settings: device, attention, compile, …) and its txt2img called directly in this
process, one image after another: no HTTP, no queue, no storage.

Run by `bench.run` as `python -m bench.floor ...`, one process per floor process. Each loads
the model, makes one untimed image at the measured shape, prints `ready` and waits for a line
on stdin, so that W processes start their timed loops together; then it prints one JSON line
with its timings. With `--refs DIR` it also writes each image as DIR/<seed>.png: the images the
service's answers are checked against.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

PROMPT = "a lighthouse at dusk, oil painting"


def params_for(entry: Any, width: int, height: int, steps: int, seed: int, prompt: str) -> Any:
    """The job parameters the API would resolve for the bench's request (same defaults)."""
    from jobs.protocol import parse_params

    return parse_params(
        {
            "type": "txt2img",
            "model": entry.id,
            "prompt": prompt,
            "width": width,
            "height": height,
            "steps": steps,
            "seed": seed,
            "guidance_scale": entry.default_guidance,
            "scheduler": entry.scheduler,
            "negative_prompt": "",
        }
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--catalog", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--count", type=int, required=True, help="most timed images")
    parser.add_argument("--min-count", type=int, default=1, help="fewest timed images")
    parser.add_argument(
        "--seconds", type=float, default=0.0, help="keep going this long (up to --count)"
    )
    parser.add_argument("--seed-base", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--refs", type=Path, help="write each image as REFS/<seed>.png")
    args = parser.parse_args(argv)

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import diffusers
    import torch

    from jobs.catalog import load_catalog
    from jobs.protocol import OutputFormat
    from worker.imaging import encode
    from worker.main import model_source
    from worker.pipelines import WarmModel, load_model
    from worker.settings import get_worker_settings

    diffusers.utils.logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = get_worker_settings()
    catalog = load_catalog(args.catalog)
    entry = catalog.by_id[args.model]
    model = load_model(
        entry,
        model_source(catalog, entry),
        settings.device,
        attention=settings.attention,
        compile=settings.compile,
        vae_tiling_pixels=settings.vae_tiling_pixels,
    )
    if not isinstance(model, WarmModel):
        parser.error(f"model {entry.id} makes no images from text; the bench measures txt2img")
    device = model.device

    def no_progress(step: int, total: int) -> None:
        pass

    def one(seed: int) -> Any:
        params = params_for(entry, args.width, args.height, args.steps, seed, args.prompt)
        images = model.txt2img(params, no_progress)
        if device.is_cuda:
            torch.cuda.synchronize()
        return images[0]

    one(args.seed_base)  # untimed: the first call at a new size allocates
    print("ready", flush=True)
    sys.stdin.readline()

    images = []
    times_ms = []
    started = time.monotonic()
    for index in range(args.count):
        if index >= args.min_count and time.monotonic() - started >= args.seconds:
            break
        seed = args.seed_base + index
        t0 = time.perf_counter()
        images.append((seed, one(seed)))
        times_ms.append((time.perf_counter() - t0) * 1000)
    ended = time.monotonic()

    # What the worker adds after the pipeline for each image: the PNG encode (untimed above).
    encode_ms = []
    for seed, image in images[:16]:
        t0 = time.perf_counter()
        encode(image, OutputFormat.PNG, {"seed": seed, "prompt": args.prompt})
        encode_ms.append((time.perf_counter() - t0) * 1000)
    if args.refs is not None:
        args.refs.mkdir(parents=True, exist_ok=True)
        for seed, image in images:
            image.save(args.refs / f"{seed}.png")

    result = {
        "times_ms": times_ms,
        "start": started,
        "end": ended,
        "encode_ms": encode_ms,
        "threads": torch.get_num_threads(),
        "device": str(device.torch_device),
        "device_name": torch.cuda.get_device_name(device.torch_device)
        if device.is_cuda
        else platform.processor() or platform.machine(),
        "dtype": str(device.dtype).removeprefix("torch."),
        "runtime": model.config,
        "load_s": model.load_s,
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": _version("transformers"),
        },
    }
    print(json.dumps(result), flush=True)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
