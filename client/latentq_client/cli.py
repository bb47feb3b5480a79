"""`latentq`: the command line of the SDK.

Exit codes: 0 success, 1 the job failed or was canceled, 2 a usage or API error, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from latentq_client._version import __version__
from latentq_client.client import DEFAULT_URL, Client
from latentq_client.errors import JobError, LatentqError
from latentq_client.job import Job

_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


def _connection_options(parser: argparse.ArgumentParser, top: bool) -> None:
    # Subcommands repeat these with SUPPRESS so that they may also come after the command
    # without resetting what was given before it.
    url_default = (os.environ.get("LATENTQ_URL") or DEFAULT_URL) if top else argparse.SUPPRESS
    key_default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--url",
        default=url_default,
        help=f"base URL of the service (env LATENTQ_URL; default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--api-key",
        default=key_default,
        help="API key, sent as a Bearer token (env LATENTQ_API_KEY)",
    )


def _generation_options(parser: argparse.ArgumentParser, video: bool = False) -> None:
    parser.add_argument("prompt", help="what to paint")
    if video:
        output_help = (
            "output file (n > 1: name-1.mp4, name-2.mp4, ...) or directory (default: .); "
            "a .webp name saves the animated WebP instead of the MP4"
        )
    else:
        output_help = "output file (n > 1: name-1.png, name-2.png, ...) or directory (default: .)"
    parser.add_argument("-o", "--output", default=".", help=output_help)
    parser.add_argument("-m", "--model", help="model id (default: the service's default)")
    parser.add_argument("--steps", type=int, help="denoising steps")
    parser.add_argument(
        "--seed", type=int, help=f"seed of the first {'video' if video else 'image'}"
    )
    parser.add_argument(
        "-n", type=int, help="number of videos (1-4)" if video else "number of images (1-8)"
    )
    parser.add_argument("--scheduler", help="scheduler name, one the model lists")
    parser.add_argument("--guidance", type=float, help="guidance scale (0-30)")
    parser.add_argument("--negative", help="negative prompt")
    if not video:
        parser.add_argument(
            "--format",
            choices=["png", "jpeg", "webp"],
            help="output format (default: from the output's suffix, else png)",
        )
    parser.add_argument(
        "--lora",
        action="append",
        type=_lora,
        metavar="ID[:SCALE]",
        help="apply a LoRA adapter of the catalogue at SCALE (default 1); repeatable",
    )
    parser.add_argument("--priority", choices=["high", "normal", "low"], help="queue priority")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--no-wait", action="store_true", help="print the job id and return without waiting"
    )


def _lora(value: str) -> tuple[str, float]:
    """`ID[:SCALE]` as `(id, scale)`; adapter ids hold no colon, scales may be negative."""
    adapter_id, colon, scale = value.rpartition(":")
    if not colon:
        adapter_id, scale = value, "1"
    try:
        number = float(scale)
    except ValueError:
        number = math.nan
    if not adapter_id or not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"{value!r} is not ID or ID:SCALE (e.g. pixel-art:0.8)")
    return adapter_id, number


def _image_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strength", type=float, help="how much to change the painted area (0-1)")
    parser.add_argument("--mask-blur", type=int, help="feather radius of the mask in pixels")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latentq",
        description="Make images (generate, img2img, inpaint, outpaint) and videos with latentq.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _connection_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        _connection_options(sub, top=False)
        return sub

    generate = command("generate", "text to image")
    _generation_options(generate)
    generate.add_argument("--width", type=int, help="width in pixels, a multiple of 8")
    generate.add_argument("--height", type=int, help="height in pixels, a multiple of 8")

    img2img = command("img2img", "restyle an image")
    _generation_options(img2img)
    img2img.add_argument("--image", required=True, type=Path, help="the image to restyle")
    img2img.add_argument("--strength", type=float, help="how far from the image to go (0-1)")

    inpaint = command("inpaint", "repaint the white areas of a mask")
    _generation_options(inpaint)
    inpaint.add_argument("--image", required=True, type=Path, help="the image to change")
    inpaint.add_argument("--mask", required=True, type=Path, help="white = repaint, black = keep")
    _image_options(inpaint)

    outpaint = command("outpaint", "extend an image beyond its borders")
    _generation_options(outpaint)
    outpaint.add_argument("--image", required=True, type=Path, help="the image to extend")
    for side in ("left", "right", "top", "bottom"):
        outpaint.add_argument(f"--{side}", type=int, default=0, help=f"pixels to add {side}")
    _image_options(outpaint)

    video = command("video", "text to video (MP4, with an animated WebP beside it)")
    _generation_options(video, video=True)
    video.add_argument("--frames", type=int, help="frames per video (default: the model's)")
    video.add_argument("--fps", type=int, help="frames per second (default: the model's)")
    video.add_argument("--width", type=int, help="width in pixels, a multiple of 8")
    video.add_argument("--height", type=int, help="height in pixels, a multiple of 8")

    get = command("get", "show a job as JSON")
    get.add_argument("job_id")
    cancel = command("cancel", "cancel a job and show it as JSON")
    cancel.add_argument("job_id")
    models = command("models", "list the models of the service")
    models.add_argument("--json", action="store_true", help="print the JSON list")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        with Client(args.url, api_key=args.api_key) as client:
            return _run(client, args)
    except JobError as exc:
        print(f"latentq: job {exc.job.id} {exc.job.status}: {_describe(exc)}", file=sys.stderr)
        return 1
    except LatentqError as exc:
        print(f"latentq: error: {_describe(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"latentq: error: {exc}", file=sys.stderr)
        return 2


def _describe(exc: LatentqError) -> str:
    details = [f"code={exc.code}"]
    if exc.status is not None:
        details.insert(0, f"HTTP {exc.status}")
    if exc.param:
        details.append(f"param={exc.param}")
    return f"{exc.message} ({', '.join(details)})"


def _run(client: Client, args: argparse.Namespace) -> int:
    if args.command == "get":
        _print_json(client.get(args.job_id).raw)
        return 0
    if args.command == "cancel":
        _print_json(client.cancel(args.job_id).raw)
        return 0
    if args.command == "models":
        _print_models(client.models(), as_json=args.json)
        return 0
    job = _submit(client, args)
    if args.no_wait:
        print(job.id)
        return 0
    try:
        job.wait(progress=False if args.quiet else None)
    except KeyboardInterrupt:
        print(
            f"\nlatentq: stopped waiting; job {job.id} goes on (latentq cancel {job.id})",
            file=sys.stderr,
        )
        return 130
    webp = args.command == "video" and Path(args.output).suffix.lower() == ".webp"
    paths = job.save(args.output, webp=webp)
    for path, seed in zip(paths, job.seeds, strict=False):
        print(f"{path}\tseed={seed}")
    return 0


def _submit(client: Client, args: argparse.Namespace) -> Job:
    common: dict[str, Any] = {
        "model": args.model,
        "steps": args.steps,
        "seed": args.seed,
        "n": args.n,
        "scheduler": args.scheduler,
        "guidance_scale": args.guidance,
        "negative_prompt": args.negative,
        "priority": args.priority,
        "loras": args.lora,
    }
    if args.command == "video":
        return client.video(
            args.prompt,
            num_frames=args.frames,
            fps=args.fps,
            width=args.width,
            height=args.height,
            **common,
        )
    common["output_format"] = args.format or _FORMATS.get(Path(args.output).suffix.lower())
    if args.command == "generate":
        return client.generate(args.prompt, width=args.width, height=args.height, **common)
    if args.command == "img2img":
        return client.img2img(args.prompt, args.image, strength=args.strength, **common)
    image_options = {"strength": args.strength, "mask_blur": args.mask_blur}
    if args.command == "inpaint":
        return client.inpaint(args.prompt, args.image, args.mask, **image_options, **common)
    return client.outpaint(
        args.prompt,
        args.image,
        left=args.left,
        right=args.right,
        top=args.top,
        bottom=args.bottom,
        **image_options,
        **common,
    )


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2))


def _print_models(models: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        _print_json(models)
        return
    # Columns that only some services fill appear only when a model has them.
    videos = any("default_frames" in model for model in models)
    adapters = any(model.get("adapters") for model in models)
    header = ["MODEL", "TASKS", "SIZE"]
    header += ["FRAMES", "FPS"] if videos else []
    header += ["ADAPTERS"] if adapters else []
    rows = [[*header, "WORKERS"]]
    for model in models:
        size = model.get("native_size") or []
        row = [
            str(model.get("id", "")) + (" (default)" if model.get("default") else ""),
            ",".join(str(t) for t in model.get("tasks") or []),
            "x".join(str(s) for s in size),
        ]
        if videos:
            row += _frames_and_fps(model)
        if adapters:
            row.append(",".join(str(a) for a in model.get("adapters") or []))
        rows.append([*row, str(model.get("workers", ""))])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _frames_and_fps(model: dict[str, Any]) -> list[str]:
    if "default_frames" not in model:
        return ["", ""]
    frames = str(model["default_frames"])
    if model.get("max_frames") is not None:
        frames += f" (max {model['max_frames']})"
    return [frames, str(model.get("default_fps", ""))]


if __name__ == "__main__":
    sys.exit(main())
