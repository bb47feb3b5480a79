"""`/v1/files/...`: stored images behind signed, expiring URLs."""

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.deps import StateDep
from jobs.errors import FileNotFound, Forbidden
from jobs.storage import content_type

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.get("/{key:path}")
def get_file(key: str, state: StateDep, expires: str = "", sig: str = "") -> FileResponse:
    """The file's bytes, if the URL's signature is valid and has not expired."""
    if not expires or not sig:
        raise Forbidden(
            "file URLs must carry expires and sig; use the URL from the job",
            code="invalid_signature",
        )
    state.storage.verify(key, expires, sig)
    path = state.storage.path(key)
    if not path.is_file():
        raise FileNotFound("this file no longer exists (files are kept for a limited time)")
    return FileResponse(
        path,
        media_type=content_type(key),
        headers={"Cache-Control": "private, max-age=3600, immutable"},
    )
