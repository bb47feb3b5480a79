"""What the worker's fast paths are worth on a CUDA GPU, at the real models' sizes.

For Stable Diffusion 1.5 (512², fp16), SDXL base (1024², fp16) and optionally FLUX.1-dev
(1024², bf16), built with random weights by `bench.archs` (nothing is downloaded), it measures
seconds per image and peak GPU memory for:

- ``sdpa``: eager PyTorch with scaled-dot-product attention, as the worker runs by default
  (UNet in channels-last);
- ``vae``: one latent decoded by the VAE in fp16, bf16 and fp32: time, memory, and whether
  fp16 overflowed into NaN/inf (the published SDXL VAE does; random weights may not);
- ``sdpa-b4``: four prompts in one call against one at a time: what micro-batching wins;
- ``xformers``: the pipeline's xformers attention, when xformers is installed;
- ``compile``: ``torch.compile`` of the UNet or transformer, its compile time apart.

Each configuration is guarded: a failure is reported and the next one runs. Timings are the
median of ``--runs`` calls after a short warm-up, between ``torch.cuda.synchronize`` calls;
peak memory is ``torch.cuda.max_memory_allocated`` after a reset, weights included. No new
configuration starts once ``--time-budget-s`` is spent (or would be, by an estimate from what
was measured); what was skipped is listed. Results go to a table and to JSON (``--out``),
rewritten after each configuration, so an interrupted run keeps what it measured.

Usage (repository root, no network; needs torch with CUDA, diffusers and transformers):
    bench/gpu_check.sh [--models sd1,sdxl,flux] [--flux-layers N] [--out FILE]
    python -m bench.gpu_check --tiny --device cpu --steps 1 --runs 1 --skip-compile
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from bench.archs import (
    FLUX_DOUBLE_BLOCKS,
    NAMES,
    Architecture,
    BuiltPipeline,
    architecture,
    build_pipeline,
    format_params,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PROMPTS = (
    "a photograph of an astronaut riding a horse on the moon",
    "a watercolor painting of a lighthouse at dawn",
    "a close-up of a red fox in the snow, 85mm",
    "an isometric illustration of a tiny city on a floating island",
)
WARMUP_STEPS = 2
CONFIGS = ("sdpa", "vae", "sdpa-b4", "xformers", "compile")
# Rough compile times on a recent data-centre GPU, only to decide whether a compile still fits
# the time budget: a whole UNet, or one compile per repeated transformer block.
COMPILE_GUESS_S = {"full": 90.0, "regional": 45.0}


@dataclass
class Row:
    """One configuration of one model: what ran and what it measured."""

    model: str
    config: str
    status: str = "ok"  # ok | error | unavailable | skipped
    batch: int = 1
    steps: int = 0
    size: int = 0
    dtype: str = ""
    attention: str = ""
    runs_s: list[float] = field(default_factory=list)
    s_per_image: float | None = None
    images_per_s: float | None = None
    peak_gb: float | None = None
    warmup_s: float | None = None
    compile_s: float | None = None
    note: str = ""
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Budget:
    """Wall-clock allowance for starting new configurations."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def refuses(self, estimate_s: float = 0.0) -> str:
        """Why a configuration expected to take `estimate_s` must not start ('' if it may)."""
        left = self.seconds - self.elapsed()
        if left <= 0:
            return f"time budget of {self.seconds:.0f}s spent"
        if estimate_s > left:
            return f"time budget: ~{estimate_s:.0f}s needed, {left:.0f}s left"
        return ""


# -- the device -------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release(device: torch.device) -> None:
    """Give back the GPU memory that finished work left cached (and held by cycles)."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None  # the CPU has no allocator statistics worth reporting
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)


def allocated_gb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.memory_allocated(device) / 2**30, 3)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    # Kernels run asynchronously: synchronize on both sides so the clock sees the GPU's work.
    synchronize(device)
    started = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - started, result


def _version(package: str) -> str:
    try:
        return str(metadata.version(package))
    except metadata.PackageNotFoundError:
        return "not installed"


def _driver_version() -> str:
    try:
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        done = subprocess.run(query, capture_output=True, text=True, timeout=20, check=True)
        return done.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def environment(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "diffusers": _version("diffusers"),
        "transformers": _version("transformers"),
        "xformers": _version("xformers"),
        "triton": _version("triton"),
        "device": str(device),
        "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE", ""),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name,
            gpu_memory_gb=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
            cudnn=torch.backends.cudnn.version(),  # type: ignore[no-untyped-call]
            matmul_tf32=torch.backends.cuda.matmul.allow_tf32,
            cudnn_tf32=torch.backends.cudnn.allow_tf32,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            driver=_driver_version(),
        )
    return info


# -- one pipeline call ------------------------------------------------------------------------


def generate(
    built: BuiltPipeline, *, batch: int, steps: int, size: int, seed: int = 0
) -> list[Any]:
    """One text-to-image call of `batch` different prompts, as a worker would make it."""
    arch = built.arch
    # CPU generators, one per image: the same noise on any device (the worker does the same);
    # the pipeline draws the latents on the CPU and moves them.
    generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(batch)]
    result = built.pipe(
        prompt=[PROMPTS[i % len(PROMPTS)] for i in range(batch)],
        height=size,
        width=size,
        num_inference_steps=steps,
        guidance_scale=arch.guidance_scale,
        generator=generators,
        output_type="pil",
        **arch.call_kwargs,
    )
    images: list[Any] = result.images
    if len(images) != batch:
        raise RuntimeError(f"asked for {batch} images, got {len(images)}")
    return images


def attention_in_use(built: BuiltPipeline) -> list[str]:
    """The denoiser's attention processors, with any dispatch backend set on them."""
    denoiser = getattr(built.pipe, built.arch.denoiser)
    kinds = set()
    for processor in denoiser.attn_processors.values():
        backend = getattr(processor, "_attention_backend", None)
        kinds.add(type(processor).__name__ + (f"[{backend}]" if backend else ""))
    return sorted(kinds)


def measure(built: BuiltPipeline, device: torch.device, row: Row, runs: int) -> None:
    """Warm up, then time `runs` calls; fills the row's timings and peak memory."""
    row.extra["processors"] = attention_in_use(built)
    warm = partial(
        generate, built, batch=row.batch, steps=min(row.steps, WARMUP_STEPS), size=row.size
    )
    seconds, _ = timed(warm, device)
    row.warmup_s = round(seconds, 3)
    # Peak memory of the steady state: after the warm-up (compile's autotuning, cuDNN/cuBLAS
    # workspaces) and with the weights, which stay resident.
    reset_peak(device)
    for run in range(runs):
        call = partial(generate, built, batch=row.batch, steps=row.steps, size=row.size, seed=run)
        seconds, _ = timed(call, device)
        row.runs_s.append(round(seconds, 4))
    median = statistics.median(row.runs_s)
    row.s_per_image = round(median / row.batch, 4)
    row.images_per_s = round(row.batch / median, 3)
    row.peak_gb = peak_gb(device)


# -- configurations ---------------------------------------------------------------------------


@dataclass
class Plan:
    steps: int
    size: int
    runs: int
    dtype: torch.dtype
    channels_last: bool
    compile_mode: str
    compile_backend: str
    compile_scope: str  # full | regional | auto


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def run_sdpa(built: BuiltPipeline, device: torch.device, plan: Plan, batch: int) -> Row:
    row = _row(built, plan, "sdpa" if batch == 1 else f"sdpa-b{batch}", batch)
    measure(built, device, row, plan.runs)
    return row


def run_vae(built: BuiltPipeline, device: torch.device, plan: Plan) -> Row:
    """Decode one latent with the VAE in fp16, bf16 and fp32; report NaN/inf, time, memory."""
    row = _row(built, plan, "vae", 1)
    row.attention = ""
    vae = built.pipe.vae
    config = vae.config
    factor = 2 ** (len(config.block_out_channels) - 1)
    side = plan.size // factor
    generator = torch.Generator("cpu").manual_seed(0)
    latent = torch.randn((1, config.latent_channels, side, side), generator=generator)
    # What the pipelines hand the decoder: latents unscaled (and unshifted, for Flux).
    latent = latent / config.scaling_factor
    if getattr(config, "shift_factor", None) is not None:
        latent = latent + config.shift_factor
    original = vae.dtype
    decoded: dict[str, torch.Tensor] = {}
    try:
        for dtype in (torch.float16, torch.bfloat16, torch.float32):
            name = _dtype_name(dtype)
            vae.to(dtype)
            z = latent.to(device=device, dtype=dtype)
            decode = partial(vae.decode, z, return_dict=False)
            if device.type == "cuda":
                # The first call at a shape loads kernels and picks cuDNN algorithms. (On the
                # CPU, a smoke run, half-precision convolutions are slow: decode once only.)
                timed(decode, device)
            reset_peak(device)
            seconds, output = timed(decode, device)
            image = output[0].float().cpu()
            del output, decode, z  # off the device before the next dtype's peak is read
            decoded[name] = image
            row.extra[name] = {
                "s": round(seconds, 4),
                "peak_gb": peak_gb(device),
                "nan": int(torch.isnan(image).sum()),
                "inf": int(torch.isinf(image).sum()),
            }
    finally:
        vae.to(original)
    reference = decoded["float32"]
    for name in ("float16", "bfloat16"):
        finite = torch.isfinite(decoded[name]) & torch.isfinite(reference)
        diff = (decoded[name] - reference).abs()[finite]
        largest = round(float(diff.max()), 5) if diff.numel() else None
        row.extra[name]["max_abs_diff_vs_fp32"] = largest
    fp16, bf16, fp32 = (row.extra[n] for n in ("float16", "bfloat16", "float32"))
    overflowed = bool(fp16["nan"] or fp16["inf"])
    row.extra["fp16_nan_or_inf"] = overflowed
    row.s_per_image = fp16["s"]
    row.peak_gb = fp16["peak_gb"]
    verdict = f"OVERFLOWED ({fp16['nan']} NaN, {fp16['inf']} inf)" if overflowed else "finite"
    row.note = (
        f"fp16 decode {verdict}; decode s fp16/bf16/fp32 "
        f"{fp16['s']:.3f}/{bf16['s']:.3f}/{fp32['s']:.3f}"
    )
    return row


def attention_state(pipe: Any) -> list[tuple[Any, dict[str, Any], dict[int, Any]]]:
    """Every model's attention processors (and their dispatch backend), to restore later."""
    state = []
    for module in pipe.components.values():
        processors = getattr(module, "attn_processors", None)
        if isinstance(processors, dict) and processors:
            backends = {id(p): getattr(p, "_attention_backend", None) for p in processors.values()}
            state.append((module, dict(processors), backends))
    return state


def restore_attention(state: list[tuple[Any, dict[str, Any], dict[int, Any]]]) -> None:
    # xformers replaces the UNet's and VAE's processors, and sets a dispatch backend on the
    # processors of newer models (Flux) in place: undo both.
    for module, processors, backends in state:
        module.set_attn_processor(dict(processors))
        for processor in processors.values():
            if hasattr(processor, "_attention_backend"):
                processor._attention_backend = backends[id(processor)]


def run_xformers(built: BuiltPipeline, device: torch.device, plan: Plan) -> Row:
    row = _row(built, plan, "xformers", 1)
    row.attention = "xformers"
    if importlib.util.find_spec("xformers") is None:
        row.status, row.note = "unavailable", "xformers not installed"
        return row
    if device.type != "cuda":
        row.status, row.note = "unavailable", "xformers needs a CUDA device"
        return row
    state = attention_state(built.pipe)
    try:
        # The worker's call; it raises when xformers has no kernel for this GPU or build.
        built.pipe.enable_xformers_memory_efficient_attention()
        measure(built, device, row, plan.runs)
        row.note = f"xformers {_version('xformers')}"
    finally:
        restore_attention(state)
    return row


def compile_scope(built: BuiltPipeline, plan: Plan) -> str:
    if plan.compile_scope != "auto":
        return plan.compile_scope
    # Flux is 57 near-identical blocks: compiling one of each kind is much quicker than the
    # whole model and loses little. A UNet's convolutions and norms sit outside its repeated
    # transformer blocks, so it is compiled whole.
    return "regional" if built.arch.denoiser == "transformer" else "full"


def run_compile(built: BuiltPipeline, device: torch.device, plan: Plan) -> Row:
    """torch.compile the denoiser in place; the pipeline stays compiled (run this last)."""
    row = _row(built, plan, "compile", 1)
    scope = compile_scope(built, plan)
    module = getattr(built.pipe, built.arch.denoiser)
    options: dict[str, Any] = {"backend": plan.compile_backend}
    if plan.compile_backend == "inductor":
        options["mode"] = plan.compile_mode  # torch.compile refuses a mode for other backends
    if scope == "regional":
        module.compile_repeated_blocks(**options)
    else:
        module.compile(**options)
    # Two warm-ups: the first compiles (its time is reported apart), the second catches any
    # recompilation before the timed runs.
    warm_steps = min(plan.steps, WARMUP_STEPS)
    compile_s, _ = timed(
        partial(generate, built, batch=1, steps=warm_steps, size=plan.size), device
    )
    row.compile_s = round(compile_s, 2)
    measure(built, device, row, plan.runs)
    mode = options.get("mode", "-")
    row.note = (
        f"{scope}, backend {plan.compile_backend}, mode {mode}; "
        f"compile s = first call ({warm_steps} steps)"
    )
    return row


def _row(built: BuiltPipeline, plan: Plan, config: str, batch: int) -> Row:
    return Row(
        model=built.arch.name,
        config=config,
        batch=batch,
        steps=plan.steps,
        size=plan.size,
        dtype=_dtype_name(plan.dtype),
        attention="sdpa",
        extra={"channels_last": plan.channels_last and built.arch.denoiser == "unet"},
    )


# -- the run ----------------------------------------------------------------------------------


def guarded(model: str, config: str, fn: Callable[[], Row], device: torch.device) -> Row:
    """Run one configuration; a failure becomes an error row and the run goes on."""
    try:
        return fn()
    except Exception as exc:  # report any failure, out-of-memory included, and carry on
        traceback.print_exc(limit=6)
        message = f"{type(exc).__name__}: {exc}".strip()
        return Row(model=model, config=config, status="error", error=message[:2000])
    finally:
        release(device)


def estimate_s(config: str, base: Row | None, plan: Plan, scope: str) -> float:
    """A rough duration of `config`, from the batch-1 eager timing once there is one."""
    per_image = base.s_per_image if base and base.s_per_image else 0.0
    if config == "sdpa-b4":
        return (plan.runs * 4 + 2) * per_image  # no batching gain assumed: an upper bound
    if config == "xformers":
        return (plan.runs + 1) * per_image
    if config == "compile":
        return COMPILE_GUESS_S[scope] + (plan.runs + 1) * per_image
    return 0.0


def build_row(arch: Architecture, device: torch.device, plan: Plan) -> tuple[Row, BuiltPipeline]:
    built = build_pipeline(arch, device, plan.dtype, channels_last=plan.channels_last)
    note = ", ".join(f"{slot} {format_params(n)}" for slot, n in built.params.items())
    row = Row(
        model=arch.name,
        config="build",
        size=plan.size,
        dtype=_dtype_name(plan.dtype),
        note=note + (f"; {arch.note}" if arch.note else ""),
        extra={
            "build_s": round(built.build_s, 2),
            "params": dict(built.params),
            "published_params": {
                slot: c.published_params
                for slot, c in arch.components.items()
                if c.published_params
            },
            "weights_gb": allocated_gb(device),
        },
    )
    return row, built


def run_model(
    arch: Architecture,
    device: torch.device,
    plan: Plan,
    configs: Sequence[str],
    budget: Budget,
    emit: Callable[[Row], None],
) -> None:
    """Build one model and run its configurations; the pipeline is dropped on return."""
    refusal = budget.refuses()
    if refusal:
        for config in ("build", *configs):
            emit(Row(model=arch.name, config=config, status="skipped", note=refusal))
        return
    built: list[BuiltPipeline] = []

    def build() -> Row:
        row, pipeline = build_row(arch, device, plan)
        built.append(pipeline)
        return row

    emit(guarded(arch.name, "build", build, device))
    if not built:
        for config in configs:
            emit(Row(model=arch.name, config=config, status="skipped", note="build failed"))
        return
    run_configs(built[0], device, plan, configs, budget, emit)


def run_configs(
    built: BuiltPipeline,
    device: torch.device,
    plan: Plan,
    configs: Sequence[str],
    budget: Budget,
    emit: Callable[[Row], None],
) -> None:
    scope = compile_scope(built, plan)
    runners: dict[str, Callable[[], Row]] = {
        "sdpa": partial(run_sdpa, built, device, plan, 1),
        "vae": partial(run_vae, built, device, plan),
        "sdpa-b4": partial(run_sdpa, built, device, plan, 4),
        "xformers": partial(run_xformers, built, device, plan),
        # It leaves the denoiser compiled, so it comes last of the configurations.
        "compile": partial(run_compile, built, device, plan),
    }
    base: Row | None = None
    with torch.inference_mode():
        for config in sorted(configs, key=CONFIGS.index):
            refusal = budget.refuses(estimate_s(config, base, plan, scope))
            if refusal:
                emit(Row(model=built.arch.name, config=config, status="skipped", note=refusal))
                continue
            row = guarded(built.arch.name, config, runners[config], device)
            if config == "sdpa" and row.status == "ok":
                base = row
            emit(row)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: Sequence[Row]) -> list[str]:
    header = (
        f"{'model':<5} {'config':<9} {'status':<11} {'batch':>5} {'steps':>5} {'size':>5} "
        f"{'dtype':<8} {'s/image':>8} {'images/s':>8} {'peak GB':>8} {'warm s':>7} "
        f"{'compile s':>9}  note"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        note = r.error if r.status == "error" else r.note
        lines.append(
            f"{r.model:<5} {r.config:<9} {r.status:<11} {r.batch:>5} {r.steps:>5} {r.size:>5} "
            f"{r.dtype:<8} {_fmt(r.s_per_image):>8} {_fmt(r.images_per_s):>8} "
            f"{_fmt(r.peak_gb, 2):>8} {_fmt(r.warmup_s, 2):>7} {_fmt(r.compile_s, 1):>9}  "
            f"{note[:110]}"
        )
    return lines


def summary(rows: Sequence[Row]) -> list[str]:
    """The comparisons the run is for: batching, compile, xformers, the fp16 VAE."""
    lines = []
    by_key = {(r.model, r.config): r for r in rows if r.status == "ok"}
    for model in dict.fromkeys(r.model for r in rows):
        base = by_key.get((model, "sdpa"))
        parts = []
        if base and base.images_per_s:
            parts.append(f"eager {base.s_per_image:.3f} s/image")
            for config, label in (("sdpa-b4", "batch 4"), ("xformers", "xformers")):
                other = by_key.get((model, config))
                if other and other.images_per_s:
                    gain = other.images_per_s / base.images_per_s
                    parts.append(f"{label} {gain:.2f}x images/s")
            compiled = by_key.get((model, "compile"))
            if compiled and compiled.images_per_s:
                gain = compiled.images_per_s / base.images_per_s
                parts.append(f"compile {gain:.2f}x images/s after {compiled.compile_s:.0f}s")
        vae = by_key.get((model, "vae"))
        if vae:
            verdict = "NaN/inf" if vae.extra.get("fp16_nan_or_inf") else "finite"
            parts.append(f"fp16 VAE decode {verdict}")
        if parts:
            lines.append(f"{model}: " + "; ".join(parts))
    skipped = [f"{r.model}/{r.config} ({r.note})" for r in rows if r.status == "skipped"]
    if skipped:
        lines.append("skipped: " + ", ".join(skipped))
    return lines


def default_out() -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return RESULTS_DIR / f"gpu-{stamp}-{socket.gethostname()}.json"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gpu_check",
        description="Speed and memory of real-size SD 1.5 / SDXL / Flux pipelines on one GPU "
        "(random weights, no downloads).",
    )
    parser.add_argument("--models", default="sd1,sdxl", help="comma list of sd1, sdxl, flux")
    parser.add_argument("--steps", type=int, help="steps for every model (default: 20, 20, 4)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per configuration")
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS)}"
    )
    parser.add_argument("--skip-compile", action="store_true", help="leave torch.compile out")
    parser.add_argument(
        "--compile-mode",
        default="default",
        help="torch.compile mode (max-autotune-no-cudagraphs tunes longer, minutes per model)",
    )
    parser.add_argument(
        "--compile-backend", default="inductor", help="inductor; eager only traces (smoke test)"
    )
    parser.add_argument("--compile-scope", choices=("auto", "full", "regional"), default="auto")
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny configs (CPU smoke run)")
    parser.add_argument(
        "--flux-layers",
        type=int,
        help="keep N of Flux's 19 double-stream blocks and 2N of its 38 single ones",
    )
    parser.add_argument(
        "--time-budget-s",
        type=float,
        default=420.0,
        help="start no configuration after this many seconds (default 420)",
    )
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/gpu-...)")
    args = parser.parse_args(argv)
    args.model_names = [m.strip() for m in args.models.split(",") if m.strip()]
    args.config_names = [c.strip() for c in args.configs.split(",") if c.strip()]
    for name in args.model_names:
        if name not in NAMES:
            parser.error(f"unknown model {name!r}; choose from {', '.join(NAMES)}")
    for name in args.config_names:
        if name not in CONFIGS:
            parser.error(f"unknown configuration {name!r}; choose from {', '.join(CONFIGS)}")
    if args.skip_compile and "compile" in args.config_names:
        args.config_names.remove("compile")
    if args.runs < 1 or (args.steps is not None and args.steps < 1):
        parser.error("--runs and --steps must be at least 1")
    if args.flux_layers is not None and not 1 <= args.flux_layers <= FLUX_DOUBLE_BLOCKS:
        parser.error(f"--flux-layers must be 1..{FLUX_DOUBLE_BLOCKS}")
    return args


def quiet_known_warnings() -> None:
    # diffusers 0.42 warns on every ModelMixin.to(dtype) that "modules ... should be kept in
    # float32: []" (an empty list): SDXL's pipeline casts its VAE twice per image.
    def keep(record: logging.LogRecord) -> bool:
        return "should be kept in float32" not in record.getMessage()

    logging.getLogger("diffusers.models.modeling_utils").addFilter(keep)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [p for p in ("diffusers", "transformers") if importlib.util.find_spec(p) is None]
    if missing:
        print(f"not installed: {', '.join(missing)} (pip install them, from wheels offline)")
        return 2
    quiet_known_warnings()
    budget = Budget(args.time_budget_s)
    requested = args.device
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cpu" and not args.tiny:
        print("real-size models on the CPU would take hours: pass --tiny", file=sys.stderr)
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available to this torch build", file=sys.stderr)
        return 2
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)

    env = environment(device)
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    out: Path = args.out or default_out()
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    report: dict[str, Any] = {
        "started": datetime.now().isoformat(timespec="seconds"),
        "environment": env,
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }

    def write() -> None:
        document = {**report, "rows": [asdict(r) for r in rows], "elapsed_s": budget.elapsed()}
        out.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")

    def emit(row: Row) -> None:
        rows.append(row)
        print(table([row])[-1], flush=True)
        write()

    print(table([])[0], flush=True)
    for name in args.model_names:
        arch = architecture(name, tiny=args.tiny, flux_layers=args.flux_layers)
        # Half precision on the GPU; float32 on the CPU, where half kernels are slow or missing.
        dtype = arch.half_dtype if device.type == "cuda" else torch.float32
        plan = Plan(
            steps=args.steps or arch.steps,
            size=arch.size,
            runs=args.runs,
            dtype=dtype,
            # The worker's fast path: channels-last UNets on a GPU only.
            channels_last=device.type == "cuda",
            compile_mode=args.compile_mode,
            compile_backend=args.compile_backend,
            compile_scope=args.compile_scope,
        )
        run_model(arch, device, plan, args.config_names, budget, emit)
        # The pipeline is gone; compiled code still holds its graphs and memory pools.
        torch._dynamo.reset()
        release(device)

    write()
    print()
    print("\n".join(table(rows)))
    print()
    print("\n".join(summary(rows)))
    print(f"\n{len(rows)} rows in {budget.elapsed():.1f}s; JSON: {out}", flush=True)
    return 1 if any(r.status == "error" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
