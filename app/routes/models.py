"""`/v1/models`: what this service serves."""

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from app.auth import CallerDep, OperatorDep
from app.deps import JobsDep

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
async def list_models(jobs: JobsDep, caller: CallerDep, operator: OperatorDep) -> dict[str, object]:
    """Every model of the catalogue, with its tasks, defaults and live warm workers."""
    return {"data": await run_in_threadpool(jobs.models, operator)}
