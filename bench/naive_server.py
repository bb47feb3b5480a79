"""The server people write first, to compare with: one FastAPI process, one pipeline loaded
at start-up and shared by every request, each request run in FastAPI's thread pool (a sync
`def` endpoint), the PNG returned inline as base64.

It is here to be measured, not used: concurrent requests run the same pipeline (its
scheduler, tokenizer and modules) from several threads at once, which returns wrong images
or fails, and every extra thread that calls torch slows the others down.

    python -m bench.naive_server --catalog models.toml --model tiny-sd --port 8100
"""

from __future__ import annotations

import argparse
import base64
import io
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel


class Generate(BaseModel):
    prompt: str
    width: int = 512
    height: int = 512
    steps: int = 20
    seed: int = 0
    guidance_scale: float = 7.5
    negative_prompt: str = ""


def create_app(catalog: Path, model_id: str, device_name: str = "auto") -> FastAPI:
    pipe: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        import torch
        from diffusers import AutoPipelineForText2Image

        from jobs.catalog import load_catalog
        from worker.main import model_source
        from worker.runtime import pick_device
        from worker.schedulers import make_scheduler

        entries = load_catalog(catalog)
        entry = entries.by_id[model_id]
        device = pick_device(device_name, entry.dtype)
        pipeline = AutoPipelineForText2Image.from_pretrained(  # type: ignore[no-untyped-call]
            model_source(entries, entry), dtype=device.dtype
        )
        pipeline.set_progress_bar_config(disable=True)
        pipeline.to(device.torch_device)
        # The same scheduler as the service's default for this model, set once and shared.
        pipeline.scheduler = make_scheduler(entry.scheduler, pipeline.scheduler.config)
        pipe["pipeline"] = pipeline
        pipe["torch"] = torch
        yield

    app = FastAPI(title="naive diffusion server", lifespan=lifespan)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        torch = pipe.get("torch")
        return {"ok": "pipeline" in pipe, "threads": torch.get_num_threads() if torch else None}

    @app.post("/generate")
    def generate(request: Generate) -> dict[str, Any]:
        torch = pipe["torch"]
        generator = torch.Generator("cpu").manual_seed(request.seed)
        image = pipe["pipeline"](
            prompt=request.prompt,
            negative_prompt=request.negative_prompt or None,
            width=request.width,
            height=request.height,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance_scale,
            generator=generator,
        ).images[0]
        out = io.BytesIO()
        image.save(out, format="PNG")
        return {"seed": request.seed, "image": base64.b64encode(out.getvalue()).decode()}

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.naive_server", description=__doc__)
    parser.add_argument("--catalog", type=Path, default=Path("models.toml"))
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args(argv)
    app = create_app(args.catalog, args.model, args.device)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
