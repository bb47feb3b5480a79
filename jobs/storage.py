"""Image storage on the local filesystem, with HMAC-signed, expiring URLs.

Keys are relative paths such as `jobs/j_…/0.png`. A URL carries the key, an expiry
(unix seconds) and `sig = HMAC-SHA256(secret, key + "\\n" + expiry)`, so an API replica can
check it without a lookup and a URL cannot be turned into another file's.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import shutil
import time
from pathlib import Path
from urllib.parse import quote

from jobs.errors import FileNotFound, Forbidden

_KEY = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$")

FILES_ROUTE = "/v1/files/"

CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
}


def check_key(key: str) -> str:
    """A key is relative, made of plain segments, none of them starting with a dot."""
    if len(key) > 512 or not _KEY.fullmatch(key):
        raise FileNotFound(f"no file {key!r}")
    return key


def job_key(job_id: str, name: str) -> str:
    return check_key(f"jobs/{job_id}/{name}")


class LocalStorage:
    def __init__(self, root: Path, secret: bytes) -> None:
        self.root = root.resolve()
        self._secret = secret

    # -- bytes ---------------------------------------------------------------------------

    def path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        # The key pattern already forbids `..`; this keeps it so even through symlinks.
        if not path.is_relative_to(self.root):
            raise FileNotFound(f"no file {key!r}")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees half a file, and a job that runs twice
        # replaces its result whole.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise FileNotFound(f"no file {key!r}") from None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def purge_jobs(self, older_than_s: float, now: float | None = None) -> int:
        """Delete the files of jobs last written more than `older_than_s` ago; returns how many
        jobs' files went. Safe to run from several processes at once."""
        cutoff = (now if now is not None else time.time()) - older_than_s
        removed = 0
        try:
            folders = list((self.root / "jobs").iterdir())
        except FileNotFoundError:
            return 0
        for folder in folders:
            try:
                if folder.is_dir() and folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder)
                    removed += 1
            except FileNotFoundError:  # another process got there first
                continue
        return removed

    # -- signed URLs ---------------------------------------------------------------------

    def _signature(self, key: str, expires: int) -> str:
        message = f"{key}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def signed_path(self, key: str, ttl_s: int, now: float | None = None) -> str:
        """`/v1/files/<key>?expires=…&sig=…`, to be put behind the service's base URL."""
        expires = int((now if now is not None else time.time()) + ttl_s)
        query = f"expires={expires}&sig={self._signature(key, expires)}"
        return f"{FILES_ROUTE}{quote(check_key(key))}?{query}"

    def verify(self, key: str, expires: str, sig: str, now: float | None = None) -> None:
        """Raise unless `sig` signs `key` until `expires` and that time has not passed."""
        check_key(key)
        if not expires.isdigit() or not hmac.compare_digest(
            self._signature(key, int(expires)).encode(), sig.encode()
        ):
            raise Forbidden("this file URL's signature is not valid", code="invalid_signature")
        if int(expires) < (now if now is not None else time.time()):
            raise Forbidden(
                "this file URL has expired; fetch the job again for fresh URLs", code="url_expired"
            )


def content_type(key: str) -> str:
    return CONTENT_TYPES.get(Path(key).suffix.lower(), "application/octet-stream")
