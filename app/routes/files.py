"""`/v1/files/...`: stored images behind signed, expiring URLs."""

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.auth import CallerDep
from app.deps import StateDep
from jobs.errors import FileNotFound, Forbidden, JobNotFound
from jobs.storage import content_type

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.get("/{key:path}")
def get_file(
    key: str, state: StateDep, caller: CallerDep, expires: str = "", sig: str = ""
) -> FileResponse:
    """The file's bytes, if the URL's signature is valid and has not expired (and, with API
    keys, if the caller owns the job the file belongs to)."""
    if not expires or not sig:
        raise Forbidden(
            "file URLs must carry expires and sig; use the URL from the job",
            code="invalid_signature",
        )
    state.storage.verify(key, expires, sig)
    if state.keys.enabled:
        parts = key.split("/")
        if len(parts) < 3 or parts[0] != "jobs":
            raise FileNotFound("no such file")
        try:
            state.jobs.get(parts[1], caller)
        except JobNotFound:
            raise FileNotFound("no such file") from None
    path = state.storage.path(key)
    if not path.is_file():
        raise FileNotFound("this file no longer exists (files are kept for a limited time)")
    return FileResponse(
        path,
        media_type=content_type(key),
        headers={"Cache-Control": "private, max-age=3600, immutable"},
    )
