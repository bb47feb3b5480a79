"""`latentq`: the command line of the SDK.

Exit codes: 0 success, 1 the job failed or was canceled, 2 a usage or API error, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, get_args, get_type_hints

from latentq_client._version import __version__
from latentq_client.client import DEFAULT_URL, Client
from latentq_client.errors import JobError, LatentqError
from latentq_client.job import Job
from latentq_client.options import JOB_KINDS, JobKind

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


def _job_command(parser: argparse.ArgumentParser, kind: JobKind) -> None:
    """The arguments of a job type's command: the prompt, the output, a flag for each option
    the type defines in `latentq_client.options` (its help, type and spelling there), the
    images it takes, and whether to wait."""
    parser.add_argument("prompt", help="what to paint")
    if kind.output == "video":
        output_help = (
            "output file (n > 1: name-1.mp4, name-2.mp4, ...) or directory (default: .); "
            "a .webp name saves the animated WebP instead of the MP4"
        )
    else:
        output_help = "output file (n > 1: name-1.png, name-2.png, ...) or directory (default: .)"
    parser.add_argument("-o", "--output", default=".", help=output_help)
    dests: dict[str, str] = {}  # argparse's name for a flag's value -> the option it sets
    types = get_type_hints(kind.options)
    for name, option in kind.specs.items():
        if option.help is None:
            continue
        flag = parser.add_argument(
            *(option.flags or ["--" + name.replace("_", "-")]),
            type=_checked(option.parse) if option.parse else _scalar(types[name]),
            action="append" if option.repeat else "store",
            choices=option.choices,
            metavar=option.metavar,
            help=option.help.format(output=kind.output, n_max=kind.n_max),
        )
        dests[flag.dest] = name
    for image, help in kind.images.items():
        parser.add_argument(f"--{image}", required=True, type=Path, help=help)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--no-wait", action="store_true", help="print the job id and return without waiting"
    )
    parser.set_defaults(job_kind=kind, job_options=dests)


def _scalar(hint: Any) -> Any:
    """The type of a flag's value: `int` for an option of type `int | None`."""
    return next(t for t in (hint, *get_args(hint)) if t in (int, float, str))


def _checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse`, its ValueError shown to the user as the reason the value is refused."""

    def convert(value: str) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


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

    for kind in JOB_KINDS:
        _job_command(command(kind.name, kind.summary), kind)
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
    webp = args.job_kind.output == "video" and Path(args.output).suffix.lower() == ".webp"
    paths = job.save(args.output, webp=webp)
    for path, seed in zip(paths, job.seeds, strict=False):
        print(f"{path}\tseed={seed}")
    return 0


def _submit(client: Client, args: argparse.Namespace) -> Job:
    kind: JobKind = args.job_kind
    options = {name: getattr(args, dest) for dest, name in args.job_options.items()}
    if "output_format" in options and options["output_format"] is None:
        options["output_format"] = _FORMATS.get(Path(args.output).suffix.lower())
    images = [getattr(args, image) for image in kind.images]
    submit: Callable[..., Job] = getattr(client, kind.name)
    return submit(args.prompt, *images, **options)


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
