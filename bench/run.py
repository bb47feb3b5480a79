"""`make bench`: latentq against the floor (the pipeline called directly) and against the
naive server, in one run, on the same model and parameters.

    python -m bench.run                      # the full run (about ten minutes on 2 CPU cores)
    python -m bench.run --quick              # a short check of the harness
    python -m bench.run --model sd15 --shapes 512x512:30 --concurrency 1,8,32 --workers 1

It starts a private Redis, the API and N workers exactly as `make run` does (the same
commands; the settings are listed under `parameters.service_env` in the results), measures,
stops everything it started (also on Ctrl-C or an error), then writes
`bench/results/<date>-<host>.json` and a PNG plot beside it and prints a table. See
bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis

from bench import load, report
from bench.floor import PROMPT
from bench.procs import (
    PYTHON,
    ROOT,
    Fleet,
    Proc,
    cpu_seconds,
    free_port,
    machine,
    memory_mb,
    own_cpu_seconds,
    read_line,
    wait_for,
    workers_serving,
)
from bench.stats import Figures, Sample, compare, figures, same_image, summarize
from jobs.catalog import Catalog, ModelEntry, load_catalog


@dataclass(frozen=True)
class Shape:
    width: int
    height: int
    steps: int

    @property
    def label(self) -> str:
        return f"{self.width}x{self.height}/{self.steps}"

    @classmethod
    def parse(cls, text: str) -> Shape:
        """`WxH:STEPS`, or `S:STEPS` for a square."""
        size, _, steps = text.partition(":")
        width, _, height = size.partition("x")
        if not steps:
            raise argparse.ArgumentTypeError(f"{text!r}: give a shape as WxH:STEPS (64x64:4)")
        try:
            return cls(int(width), int(height or width), int(steps))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: give a shape as WxH:STEPS") from None


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated integers") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give integers of at least 1")
    return values


def _shapes(text: str) -> list[Shape]:
    return [Shape.parse(part) for part in text.split(",") if part.strip()]


def _jobs(text: str) -> int | None:
    return None if text == "auto" else _ints(text)[0]


PARTS = ("api", "naive", "latentq", "batching")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--catalog", type=Path, default=Path("models.toml"))
    parser.add_argument("--model", help="a model id of the catalogue (default: its default)")
    parser.add_argument(
        "--shapes",
        type=_shapes,
        default=_shapes("64x64:4,256x256:10"),
        help="WxH:STEPS,… (default 64x64:4,256x256:10); the first one is summarised",
    )
    parser.add_argument("--concurrency", type=_ints, default=[1, 8, 32], help="default 1,8,32")
    parser.add_argument("--workers", type=_ints, default=[1, 2], help="default 1,2")
    parser.add_argument(
        "--modes",
        type=lambda t: [m for m in t.split(",") if m],
        default=["wait", "poll"],
        help="how clients learn a job ended: wait (Prefer: wait=60), poll; default both",
    )
    parser.add_argument(
        "--jobs",
        type=_jobs,
        default=None,
        help="measured jobs per configuration, or auto (default): --seconds of the floor's "
        "work, at least twice the concurrency and 16",
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="auto jobs: target seconds")
    parser.add_argument(
        "--config-max-s",
        type=float,
        default=90.0,
        help="no new request after this many seconds of one configuration (default 90)",
    )
    parser.add_argument("--poll-ms", type=float, default=15.0, help="poll interval (default 15)")
    parser.add_argument(
        "--cores",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="CPU cores to share: workers get cores/W torch threads each",
    )
    parser.add_argument(
        "--device", help="auto, cpu, cuda or cuda:N (default: LATENTQ_DEVICE, else auto)"
    )
    parser.add_argument(
        "--tolerance",
        type=int,
        default=2,
        help="largest per-channel difference (of 255) of a right image from the floor's",
    )
    parser.add_argument("--batch-shape", type=Shape.parse, default=Shape.parse("64x64:4"))
    parser.add_argument("--batch-concurrency", type=int, default=16)
    parser.add_argument("--batch-jobs", type=_jobs, default=None, help="default: auto")
    parser.add_argument(
        "--batch-max",
        type=int,
        default=1,
        help="LATENTQ_BATCH_MAX of the main latentq runs (default 1: one image per pipeline "
        "call, the floor's work; 0: the service's default)",
    )
    parser.add_argument("--api-jobs", type=int, default=600, help="submits of the API-alone run")
    parser.add_argument("--api-concurrency", type=int, default=32)
    parser.add_argument(
        "--skip",
        type=lambda t: [p for p in t.split(",") if p],
        default=[],
        help=f"parts to leave out: {', '.join(PARTS)}",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--workdir", type=Path, default=ROOT / "var" / "bench")
    parser.add_argument("--seed-base", type=int, default=1000)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short check: 64x64:4 only, concurrency 1,8, few jobs",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.shapes = [Shape.parse("64x64:4")]
        args.concurrency = [1, 8]
        args.jobs = args.jobs or 24
        args.batch_jobs = args.batch_jobs or 48
        args.api_jobs = min(args.api_jobs, 200)
    unknown = [p for p in args.skip if p not in PARTS]
    if unknown:
        parser.error(f"--skip {unknown}: choose from {', '.join(PARTS)}")
    bad_modes = [m for m in args.modes if m not in ("wait", "poll")]
    if bad_modes:
        parser.error(f"--modes {bad_modes}: choose from wait, poll")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the floor ---------------------------------------------------------------------------------


@dataclass
class Floor:
    shape: Shape
    processes: int
    threads: int
    images: int
    wall_s: float
    images_per_s: float
    per_image_ms: dict[str, float]
    encode_ms_p50: float | None
    info: dict[str, Any] = field(default_factory=dict)
    times_ms: list[float] = field(default_factory=list, repr=False)


def run_floor(
    fleet: Fleet,
    args: argparse.Namespace,
    env: dict[str, str],
    entry: ModelEntry,
    shape: Shape,
    processes: int,
    refs: Path | None,
) -> Floor:
    """`processes` floor processes started together, each making images for `--seconds`
    (or `--jobs / processes` images when --jobs is set), with the workers' settings (`env`)."""
    from bench.stats import percentile

    threads = max(1, args.cores // processes)
    if args.jobs:
        each = max(4, args.jobs // processes)
        limits = [f"--count={each}", f"--min-count={each}"]
    else:
        each = 2000
        limits = [f"--count={each}", "--min-count=8", f"--seconds={args.seconds}"]
    procs: list[Proc] = []
    try:
        for index in range(processes):
            command = [
                PYTHON,
                "-m",
                "bench.floor",
                f"--catalog={args.catalog}",
                f"--model={entry.id}",
                f"--width={shape.width}",
                f"--height={shape.height}",
                f"--steps={shape.steps}",
                *limits,
                f"--seed-base={args.seed_base + index * each}",
                f"--threads={threads}",
            ]
            if refs is not None and index == 0:
                command.append(f"--refs={refs}")
            procs.append(fleet.spawn(f"floor-{processes}-{index}", command, env, pipes=True))
        for proc in procs:
            if read_line(proc.popen.stdout, proc, "floor") != "ready":
                raise RuntimeError(f"{proc.name} did not say ready\n{proc.tail()}")
        for proc in procs:
            assert proc.popen.stdin is not None
            proc.popen.stdin.write(b"go\n")
            proc.popen.stdin.flush()
        results = [json.loads(read_line(p.popen.stdout, p, "floor")) for p in procs]
    finally:
        for proc in procs:
            fleet.stop(proc)
    times = [t for r in results for t in r["times_ms"]]
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    encode = [t for r in results for t in r["encode_ms"]]
    floor = Floor(
        shape=shape,
        processes=processes,
        threads=results[0]["threads"],
        images=len(times),
        wall_s=round(wall, 4),
        images_per_s=len(times) / wall,
        per_image_ms={
            "p50": round(percentile(times, 50), 2),
            "p95": round(percentile(times, 95), 2),
            "p99": round(percentile(times, 99), 2),
            "mean": round(sum(times) / len(times), 2),
        },
        encode_ms_p50=round(percentile(encode, 50), 3) if encode else None,
        info={
            k: results[0][k]
            for k in ("device", "device_name", "dtype", "runtime", "load_s", "versions")
        },
    )
    floor.times_ms = times
    return floor


def load_refs(folder: Path) -> dict[int, np.ndarray]:
    from PIL import Image

    refs = {}
    for path in folder.glob("*.png"):
        with Image.open(path) as image:
            refs[int(path.stem)] = np.asarray(image.convert("RGB"))
    return refs


# -- the service -------------------------------------------------------------------------------


class Service:
    """Redis, the API and the workers, started as `make run` starts them."""

    def __init__(self, fleet: Fleet, args: argparse.Namespace, entry: ModelEntry) -> None:
        self.fleet = fleet
        self.args = args
        self.entry = entry
        self.workdir: Path = args.workdir
        self.redis_proc: Proc | None = None
        self.api: Proc | None = None
        self.workers: list[Proc] = []
        self.generation = 0
        self.base_url = ""
        self.redis_url = ""
        self.worker_env: dict[str, str] = {}

    def start_redis(self) -> None:
        folder = self.workdir / "redis"
        folder.mkdir(parents=True, exist_ok=True)
        socket_path = folder / "redis.sock"
        options = [str(ROOT / "deploy" / "local" / "redis.conf"), "--dir", str(folder)]
        if len(str(socket_path)) < 100:  # the limit of a unix socket's path
            options += ["--unixsocket", str(socket_path)]
            self.redis_url = f"unix://{socket_path}"
        else:
            port = free_port()
            options += ["--port", str(port), "--bind", "127.0.0.1"]
            self.redis_url = f"redis://127.0.0.1:{port}/0"
        self.redis_proc = self.fleet.start_redis(self.redis_url, *options)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def env(self) -> dict[str, str]:
        env = {
            "LATENTQ_REDIS_URL": self.redis_url,
            "LATENTQ_DATA_DIR": str(self.workdir / "data"),
            "LATENTQ_CATALOG": str(self.args.catalog.resolve()),
            "LATENTQ_LOG_FORMAT": "text",
            # One client makes every request: a per-key rate limit would measure itself.
            "LATENTQ_RATE_LIMIT_PER_MIN": "0",
            # The API-alone run leaves thousands of jobs queued.
            "LATENTQ_QUEUE_MAX": "1000000",
            "LATENTQ_METRICS_PORT": "0",
            "LATENTQ_DRAIN_GRACE_S": "10",
            "LATENTQ_MODELS": self.entry.id,
            "LATENTQ_STORAGE": "local",
            # Open mode (loopback only): the bench's client holds no key.
            "LATENTQ_API_KEYS": "",
        }
        if self.args.device:
            env["LATENTQ_DEVICE"] = self.args.device
        return env

    def start_api(self) -> None:
        # The command of deploy/local/run.sh.
        self.api, self.base_url = self.fleet.start_api(
            "--proxy-headers",
            "--timeout-graceful-shutdown",
            "20",
            env=self.env(),
            ready="/readyz",
            timeout=60,
        )

    def workers_up(self) -> int:
        return workers_serving(self.base_url, self.entry.id)

    def start_workers(self, count: int, extra: dict[str, str] | None = None) -> None:
        self.stop_workers()
        self.generation += 1
        threads = max(1, self.args.cores // count)
        self.worker_env = {"LATENTQ_TORCH_THREADS": str(threads), **(extra or {})}
        for index in range(count):
            env = {
                **self.env(),
                **self.worker_env,
                "LATENTQ_WORKER_NAME": f"bench-{self.generation}-{index}",
            }
            self.workers.append(self.fleet.start_worker(f"worker-{self.generation}-{index}", env))
        wait_for(lambda: self.workers_up() >= count, 180, f"{count} worker(s)", self.workers[-1])

    def stop_workers(self) -> None:
        for proc in self.workers:
            proc.popen.send_signal(signal.SIGTERM)
        for proc in self.workers:
            self.fleet.stop(proc)
        self.workers = []
        if self.api is not None:
            wait_for(lambda: self.workers_up() == 0, 30, "workers gone")

    def pids(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {"workers": [p.pid for p in self.workers]}
        if self.api is not None:
            out["api"] = [self.api.pid]
        if self.redis_proc is not None:
            out["redis"] = [self.redis_proc.pid]
        return out


@contextmanager
def cpu_meter(pids: dict[str, list[int]], jobs: int, into: dict[str, Any]) -> Iterator[None]:
    """CPU milliseconds per job of each group of processes (and of this client) over the
    block, stored in `into["cpu_ms_per_job"]`."""

    def read() -> dict[str, float]:
        out = {"client": own_cpu_seconds()}
        for name, group in pids.items():
            out[name] = sum(cpu_seconds(pid) or 0.0 for pid in group)
        return out

    before = read()
    yield
    after = read()
    into["cpu_ms_per_job"] = {
        name: round((after[name] - before[name]) * 1000 / max(1, jobs), 3) for name in after
    }


# -- the runs ----------------------------------------------------------------------------------


def body(entry: ModelEntry, shape: Shape, seed: int) -> dict[str, Any]:
    return {
        "type": "txt2img",
        "model": entry.id,
        "prompt": PROMPT,
        "width": shape.width,
        "height": shape.height,
        "steps": shape.steps,
        "seed": seed,
        "guidance_scale": entry.default_guidance,
    }


def auto_jobs(fixed: int | None, seconds: float, ips: float, concurrency: int) -> int:
    if fixed is not None:
        return max(fixed, concurrency)
    return min(2000, max(16, 2 * concurrency, math.ceil(seconds * ips)))


def check_images(samples: Sequence[Sample], refs: dict[int, np.ndarray], tolerance: int) -> None:
    for sample in samples:
        if not sample.ok:
            continue
        reference = refs.get(sample.seed)
        if sample.image is None:
            sample.ok, sample.error = False, "image not fetchable"
        elif reference is not None:
            sample.correct = same_image(sample.image, reference, tolerance)
        sample.image = None


def latentq_run(
    service: Service,
    shape: Shape,
    *,
    mode: str,
    concurrency: int,
    jobs: int,
    seeds: Callable[[int], int],
    poll_s: float,
    max_s: float | None = None,
) -> list[Sample]:
    async def go() -> list[Sample]:
        async with load.client(concurrency, service.base_url) as http:

            async def one(index: int) -> Sample:
                return await load.latentq_job(
                    http, body(service.entry, shape, seeds(index)), mode=mode, poll_s=poll_s
                )

            return await load.closed_loop(concurrency, jobs, one, max_s)

    return asyncio.run(go())


def note_cap(extra: dict[str, Any], samples: Sequence[Sample], jobs: int, max_s: float) -> None:
    if len(samples) < jobs:
        extra["stopped_after_s"] = max_s
        extra["planned_jobs"] = jobs


def fetch(base_url: str, samples: Sequence[Sample]) -> None:
    asyncio.run(load.fetch_images(base_url, samples))


@dataclass
class Run:
    """Everything one bench run collects."""

    rows: list[Figures] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    floors: list[Floor] = field(default_factory=list)
    api_alone: dict[str, Any] | None = None
    api_memory: dict[str, Any] = field(default_factory=dict)
    threads: dict[str, Any] = field(default_factory=dict)

    def add(self, row: Figures, samples: Sequence[Sample]) -> None:
        self.rows.append(row)
        self.latencies[report.latency_key(row)] = [s.latency_ms for s in samples if s.ok]
        log(
            f"  {row.shape} {row.label}: {row.good_per_s:.1f} img/s, "
            f"p50 {row.p50_ms or 0:.0f} ms, p99 {row.p99_ms or 0:.0f} ms, "
            f"{row.failed} failed, {row.wrong} wrong"
        )

    def floor_ips(self, shape: Shape) -> dict[int, float]:
        return {f.processes: f.images_per_s for f in self.floors if f.shape == shape}


def api_alone(service: Service, args: argparse.Namespace, run: Run) -> None:
    """Submit → 202 with no worker consuming: the API's own cost per accepted job."""
    assert service.api is not None
    concurrency, jobs = args.api_concurrency, args.api_jobs
    shape = args.shapes[0]

    async def go() -> list[Sample]:
        async with load.client(concurrency, service.base_url) as http:

            async def one(index: int) -> Sample:
                return await load.submit_only(
                    http, body(service.entry, shape, args.seed_base + index)
                )

            await load.closed_loop(concurrency, min(jobs, 2 * concurrency), one)  # warm-up
            return await load.closed_loop(concurrency, jobs, one)

    measured: dict[str, Any] = {}
    with cpu_meter({"api": [service.api.pid]}, jobs, measured):
        samples = asyncio.run(go())
    row = figures(
        samples,
        system="api",
        shape=shape.label,
        mode="submit",
        workers=0,
        concurrency=concurrency,
        floor_ips=None,
    )
    run.api_memory["after_api_alone"] = memory_mb(service.api.pid)
    run.api_alone = {
        "concurrency": concurrency,
        "jobs": jobs,
        "failed": row.failed,
        "submits_per_s": round(row.images_per_s, 1),
        "p50_ms": row.p50_ms,
        "p95_ms": row.p95_ms,
        "p99_ms": row.p99_ms,
        "api_cpu_ms_per_submit": measured["cpu_ms_per_job"]["api"],
        "rss_mb": (run.api_memory["after_api_alone"] or {}).get("rss"),
        "errors": row.extra.get("errors"),
    }
    run.latencies["api alone"] = [s.latency_ms for s in samples if s.ok]
    log(
        f"  api alone: p50 {row.p50_ms or 0:.1f} ms, p99 {row.p99_ms or 0:.1f} ms, "
        f"{row.images_per_s:.0f} submits/s, {row.failed} failed"
    )
    # Nobody will ever run these: start the measured runs from an empty Redis.
    service.redis().flushdb()


def naive_runs(
    fleet: Fleet,
    args: argparse.Namespace,
    entry: ModelEntry,
    run: Run,
    refs: dict[Shape, dict[int, np.ndarray]],
) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [
        PYTHON,
        "-m",
        "bench.naive_server",
        f"--catalog={args.catalog}",
        f"--model={entry.id}",
        f"--device={args.device or os.environ.get('LATENTQ_DEVICE', 'auto')}",
        f"--port={port}",
    ]
    proc = fleet.spawn("naive", command)
    try:
        wait_for(
            lambda: httpx.get(f"{base_url}/healthz").json()["ok"] is True,
            120,
            "the naive server",
            proc,
        )
        run.threads["naive"] = httpx.get(f"{base_url}/healthz").json()["threads"]
        for shape in args.shapes:
            floor = run.floor_ips(shape).get(1)
            seeds = _seeds(args, refs[shape])

            async def go(
                concurrency: int,
                jobs: int,
                shape: Shape = shape,
                seeds: Callable[[int], int] = seeds,
            ) -> list[Sample]:
                async with load.client(concurrency, base_url) as http:

                    async def one(index: int) -> Sample:
                        return await load.naive_request(http, body(entry, shape, seeds(index)))

                    await load.closed_loop(1, 2, one)  # warm-up at this size
                    return await load.closed_loop(concurrency, jobs, one, args.config_max_s)

            for concurrency in args.concurrency:
                jobs = auto_jobs(args.jobs, args.seconds, floor or 1.0, concurrency)
                extra: dict[str, Any] = {}
                with cpu_meter({"naive": [proc.pid]}, jobs, extra):
                    samples = asyncio.run(go(concurrency, jobs))
                note_cap(extra, samples, jobs, args.config_max_s)
                check_images(samples, refs[shape], args.tolerance)
                row = figures(
                    samples,
                    system="naive",
                    shape=shape.label,
                    mode="-",
                    workers=1,
                    concurrency=concurrency,
                    floor_ips=floor,
                    extra=extra,
                )
                run.add(row, samples)
                if not proc.alive():
                    raise RuntimeError(f"the naive server died\n{proc.tail()}")
    finally:
        fleet.stop(proc)


def _seeds(args: argparse.Namespace, refs: dict[int, np.ndarray]) -> Callable[[int], int]:
    known = sorted(refs) or [args.seed_base]

    def seed(index: int) -> int:
        return known[index % len(known)]

    return seed


def latentq_runs(
    service: Service,
    args: argparse.Namespace,
    run: Run,
    refs: dict[Shape, dict[int, np.ndarray]],
) -> None:
    extra_env = {"LATENTQ_BATCH_MAX": str(args.batch_max)} if args.batch_max else {}
    for workers in args.workers:
        log(f"latentq with {workers} worker(s)")
        service.start_workers(workers, extra_env)
        run.threads[f"latentq_workers_{workers}"] = int(service.worker_env["LATENTQ_TORCH_THREADS"])
        for shape in args.shapes:
            floor = run.floor_ips(shape).get(workers)
            seeds = _seeds(args, refs[shape])
            # Untimed: the workers' first call at a new size allocates.
            latentq_run(
                service,
                shape,
                mode="wait",
                concurrency=workers,
                jobs=2 * workers,
                seeds=seeds,
                poll_s=args.poll_ms / 1000,
            )
            for mode in args.modes:
                for concurrency in args.concurrency:
                    jobs = auto_jobs(args.jobs, args.seconds, floor or 1.0, concurrency)
                    extra: dict[str, Any] = {}
                    with cpu_meter(service.pids(), jobs, extra):
                        samples = latentq_run(
                            service,
                            shape,
                            mode=mode,
                            concurrency=concurrency,
                            jobs=jobs,
                            seeds=seeds,
                            poll_s=args.poll_ms / 1000,
                            max_s=args.config_max_s,
                        )
                    note_cap(extra, samples, jobs, args.config_max_s)
                    fetch(service.base_url, samples)
                    check_images(samples, refs[shape], args.tolerance)
                    row = figures(
                        samples,
                        system="latentq",
                        shape=shape.label,
                        mode=mode,
                        workers=workers,
                        concurrency=concurrency,
                        floor_ips=floor,
                        extra=extra,
                    )
                    run.add(row, samples)
    service.stop_workers()


def batching_runs(
    service: Service,
    args: argparse.Namespace,
    run: Run,
    refs: dict[int, np.ndarray],
) -> None:
    shape = args.batch_shape
    concurrency = args.batch_concurrency
    floor = run.floor_ips(shape).get(1)
    seeds = _seeds(args, refs)
    jobs = auto_jobs(args.batch_jobs, 2 * args.seconds, floor or 1.0, concurrency)
    for batch_max in (1, 8):
        log(f"batching: LATENTQ_BATCH_MAX={batch_max}")
        service.start_workers(
            1, {"LATENTQ_BATCH_MAX": str(batch_max), "LATENTQ_BATCH_WAIT_MS": "0"}
        )
        latentq_run(service, shape, mode="wait", concurrency=2, jobs=4, seeds=seeds, poll_s=0.015)
        extra: dict[str, Any] = {"batch_max": batch_max, "batch_wait_ms": 0}
        with cpu_meter(service.pids(), jobs, extra):
            samples = latentq_run(
                service,
                shape,
                mode="wait",
                concurrency=concurrency,
                jobs=jobs,
                seeds=seeds,
                poll_s=0.015,
                max_s=args.config_max_s,
            )
        note_cap(extra, samples, jobs, args.config_max_s)
        fetch(service.base_url, samples)
        check_images(samples, refs, args.tolerance)
        row = figures(
            samples,
            system="batching",
            shape=shape.label,
            mode="wait",
            workers=1,
            concurrency=concurrency,
            floor_ips=floor,
            extra=extra,
        )
        run.add(row, samples)
    service.stop_workers()


# -- putting it together -------------------------------------------------------------------


def ensure_model(catalog: Catalog, entry: ModelEntry) -> str:
    """The model's folder; a missing demo model is built first (`python -m worker.demo_model`)."""
    path = catalog.local_path(entry)
    if path is None:
        return entry.source
    if entry.demo and not (path / "model_index.json").exists():
        log(f"building the demo model at {path}")
        subprocess.run(
            [PYTHON, "-m", "worker.demo_model", str(path), f"--family={entry.family}"],
            cwd=ROOT,
            check=True,
        )
    return str(path)


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for package in ("fastapi", "uvicorn", "redis", "rq", "httpx", "pydantic", "numpy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    try:
        text = subprocess.run(
            [shutil.which("redis-server") or "redis-server", "--version"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        out["redis-server"] = next(
            (p.split("=", 1)[1] for p in text.split() if p.startswith("v=")), None
        )
    except OSError:
        out["redis-server"] = None
    return out


def _setting_default(name: str) -> Any:
    """A worker setting's default, as this checkout defines it (None: no such setting)."""
    from worker.settings import WorkerSettings

    found = WorkerSettings.model_fields.get(name)
    return None if found is None else found.default


def git_commit() -> str | None:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return None
    return f"{commit}{'+changes' if dirty else ''}" if commit else None


def measure(args: argparse.Namespace, fleet: Fleet, entry: ModelEntry, run: Run) -> Service:
    service = Service(fleet, args, entry)
    log("starting redis and the API")
    service.start_redis()
    service.start_api()
    assert service.api is not None
    run.api_memory["idle"] = memory_mb(service.api.pid)
    if "api" not in args.skip:
        log("the API alone (no worker)")
        api_alone(service, args, run)

    refs: dict[Shape, dict[int, np.ndarray]] = {}
    shapes = list(dict.fromkeys([*args.shapes, args.batch_shape]))
    if "batching" in args.skip:
        shapes = list(args.shapes)
    processes = sorted(set(args.workers) | {1})
    for shape in shapes:
        folder = args.workdir / "refs" / shape.label.replace("/", "-")
        for count in processes:
            log(f"floor {shape.label}: {count} process(es)")
            floor = run_floor(
                fleet, args, service.env(), entry, shape, count, folder if count == 1 else None
            )
            run.floors.append(floor)
            run.threads[f"floor_{count}_processes"] = floor.threads
            log(
                f"  {floor.images_per_s:.1f} img/s, per image p50 "
                f"{floor.per_image_ms['p50']:.1f} ms ({floor.threads} thread(s) each)"
            )
        refs[shape] = load_refs(folder)

    if "naive" not in args.skip:
        log("the naive server")
        naive_runs(fleet, args, entry, run, refs)
    if "latentq" not in args.skip:
        latentq_runs(service, args, run, refs)
    if "batching" not in args.skip:
        batching_runs(service, args, run, refs[args.batch_shape])
    run.api_memory["end"] = memory_mb(service.api.pid)
    return service


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    catalog = load_catalog(args.catalog)
    entry = catalog.get(args.model)
    if entry is None:
        log(f"model {args.model!r} is not in {args.catalog}; known: {', '.join(catalog.by_id)}")
        return 2
    args.catalog = args.catalog.resolve()
    source = ensure_model(catalog, entry)

    for sub in ("data", "refs", "redis", "log"):
        shutil.rmtree(args.workdir / sub, ignore_errors=True)
    # The caller's LATENTQ_* settings (LATENTQ_COMPILE, LATENTQ_ATTENTION, …) reach the workers
    # and the floor alike; `Service.env` overrides those the bench itself must set.
    base_env = dict(os.environ)
    base_env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    fleet = Fleet(args.workdir / "log", base_env)

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    started = datetime.now().astimezone()
    t0 = time.monotonic()
    run = Run()
    service: Service | None = None
    host_info = machine()
    try:
        service = measure(args, fleet, entry, run)
    except KeyboardInterrupt:
        log("interrupted: stopping everything the bench started")
        return 130
    finally:
        fleet.stop_all()
    duration = time.monotonic() - t0

    primary = args.shapes[0].label
    floor_ips = {s.label: run.floor_ips(s) for s in dict.fromkeys([*args.shapes, args.batch_shape])}
    comparisons = compare(run.rows, floor_ips.get(primary, {}), shape=primary)
    summary = summarize(comparisons)
    first_floor = run.floors[0].info if run.floors else {}
    document = {
        "summary": summary,
        "machine": {
            **host_info,
            "device": first_floor.get("device"),
            "device_name": first_floor.get("device_name"),
            "dtype": first_floor.get("dtype"),
            "runtime": first_floor.get("runtime"),
            "torch_threads": run.threads,
            "versions": {**versions(), **first_floor.get("versions", {})},
        },
        "parameters": {
            "model": entry.id,
            "source": source,
            "prompt": PROMPT,
            "guidance_scale": entry.default_guidance,
            "scheduler": entry.scheduler,
            "shapes": [s.label for s in args.shapes],
            "summary_shape": primary,
            "concurrency": args.concurrency,
            "workers": args.workers,
            "modes": args.modes,
            "jobs": args.jobs or "auto",
            "seconds": args.seconds,
            "poll_ms": args.poll_ms,
            "cores": args.cores,
            "device": args.device,
            "tolerance": args.tolerance,
            "batch": {
                "shape": args.batch_shape.label,
                "concurrency": args.batch_concurrency,
                "max": [1, 8],
                "wait_ms": 0,
            },
            "main_batch_max": args.batch_max
            or f"service default ({_setting_default('batch_max')})",
            "api_alone": {"concurrency": args.api_concurrency, "jobs": args.api_jobs},
            "skip": args.skip,
            "quick": args.quick,
            "commit": git_commit(),
            "service_env": service.env() if service is not None else None,
            "caller_settings": {
                k: v
                for k, v in os.environ.items()
                if k.startswith("LATENTQ_") and not any(w in k for w in ("SECRET", "KEY"))
            },
        },
        "started_at": started.isoformat(timespec="seconds"),
        "duration_s": round(duration, 1),
        "comparisons": comparisons,
        "floor": run.floors,
        "configs": run.rows,
        "api_alone": run.api_alone,
        "api_memory_mb": run.api_memory,
    }
    stamp = started.strftime("%Y-%m-%dT%H%M%S")
    path = args.out / f"{stamp}-{host_info['host']}.json"
    floors_doc = [
        {**{k: v for k, v in f.__dict__.items() if k != "times_ms"}, "shape": f.shape.label}
        for f in run.floors
    ]
    document["floor"] = floors_doc
    report.write_json(path, document)

    floor_rows = [
        Figures(
            system="floor",
            shape=f.shape.label,
            mode="-",
            workers=f.processes,
            concurrency=f.processes,
            jobs=f.images,
            ok=f.images,
            failed=0,
            wrong=0,
            wall_s=f.wall_s,
            images_per_s=f.images_per_s,
            good_per_s=f.images_per_s,
            p50_ms=f.per_image_ms["p50"],
            p95_ms=f.per_image_ms["p95"],
            p99_ms=f.per_image_ms["p99"],
            ratio_vs_floor=1.0,
        )
        for f in run.floors
    ]
    order = list(floor_ips)
    ordered = sorted(
        [*floor_rows, *run.rows],
        key=lambda r: order.index(r.shape) if r.shape in order else len(order),
    )
    latencies = dict(run.latencies)
    for floor, row in zip(run.floors, floor_rows, strict=True):
        latencies[report.latency_key(row)] = floor.times_ms
    report.plot(path.with_suffix(".png"), ordered, latencies, floor_ips)
    print(report.table(ordered))
    print(report.summary_text(summary, comparisons, run.api_alone))
    print(f"\nresults: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    print(f"plot:    {path.with_suffix('.png').name}  ({duration:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
