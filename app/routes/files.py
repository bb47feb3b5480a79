"""`/v1/files/...`: stored images behind signed, expiring URLs."""

import time

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.auth import CallerDep
from app.deps import ScopesDep, StateDep
from app.scopes import owner_filter
from jobs.errors import FileNotFound, Forbidden
from jobs.storage import LocalStorage, content_type, job_of

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.get("/{key:path}")
def get_file(
    key: str,
    state: StateDep,
    caller: CallerDep,
    scopes: ScopesDep,
    expires: str = "",
    sig: str = "",
) -> FileResponse:
    """The file's bytes, if the URL's signature is valid and has not expired (and, with API
    keys, if the caller owns the job the file belongs to)."""
    if not expires or not sig:
        raise Forbidden(
            "file URLs must carry expires and sig; use the URL from the job",
            code="invalid_signature",
        )
    storage = state.storage
    if not isinstance(storage, LocalStorage):
        raise FileNotFound("files are served by the object store; use the URL from the job")
    expiry = storage.verify(key, expires, sig)
    owner = job_of(key)
    allowed = owner_filter(caller, scopes)
    if owner is None or allowed is not None and owner[0] != allowed:
        # Another key's file is answered like a missing one.
        raise FileNotFound("no such file")
    path = storage.path(key)
    if not path.is_file():
        raise FileNotFound("this file no longer exists (files are kept for a limited time)")
    # The bytes never change, but a cached copy may not outlive the URL that fetched it.
    max_age = max(0, int(expiry - time.time()))
    return FileResponse(
        path,
        media_type=content_type(key),
        headers={"Cache-Control": f"private, max-age={max_age}, immutable"},
    )
