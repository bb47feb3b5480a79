"""Where input and output images live: the local filesystem or an S3-compatible bucket.

Keys are `<owner>/<job id>/<name>` (the owner is the API key's name, `anonymous` without
keys). Local files are served by the API behind HMAC-signed, expiring URLs: a URL carries
the key, an expiry (unix seconds) and `sig = HMAC-SHA256(secret, key + "\\n" + expiry)`, so
any API replica can check it without a lookup and a URL cannot be turned into another
file's. Objects in S3 are reached by presigned URLs (or a public base URL, when configured).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from jobs.errors import FileNotFound, Forbidden
from jobs.settings import Settings

_KEY = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$")
_EXPIRES = re.compile(r"[0-9]{1,12}")
"""A signed URL's expiry: unix seconds, as signed_path writes them."""

FILES_ROUTE = "/v1/files/"

CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".mp4": "video/mp4",
}


def check_key(key: str) -> str:
    """A key is relative, made of plain segments, none of them starting with a dot."""
    if len(key) > 512 or not _KEY.fullmatch(key):
        raise FileNotFound(f"no file {key!r}")
    return key


def job_key(owner: str, job_id: str, name: str) -> str:
    return check_key(f"{owner}/{job_id}/{name}")


def job_of(key: str) -> tuple[str, str] | None:
    """The (owner, job id) a key belongs to, or None for a key of no job."""
    parts = key.split("/")
    return (parts[0], parts[1]) if len(parts) == 3 else None


class Storage(Protocol):
    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def url(self, key: str, ttl_s: int, base_url: str) -> str:
        """A URL a client can fetch the object at, for `ttl_s` seconds at least."""
        ...

    def purge_jobs(self, older_than_s: float, now: float | None = None) -> int: ...


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

    def purge_jobs(self, older_than_s: float, now: float | None = None) -> int:
        """Delete the files of jobs last written more than `older_than_s` ago; returns how many
        jobs' files went. Safe to run from several processes at once."""
        cutoff = (now if now is not None else time.time()) - older_than_s
        removed = 0
        try:
            folders = [
                job for owner in self.root.iterdir() if owner.is_dir() for job in owner.iterdir()
            ]
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

    def url(self, key: str, ttl_s: int, base_url: str) -> str:
        return base_url.rstrip("/") + self.signed_path(key, ttl_s)

    def _signature(self, key: str, expires: int) -> str:
        message = f"{key}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def signed_path(self, key: str, ttl_s: int, now: float | None = None) -> str:
        """`/v1/files/<key>?expires=…&sig=…`, to be put behind the service's base URL."""
        expires = int((now if now is not None else time.time()) + ttl_s)
        query = f"expires={expires}&sig={self._signature(key, expires)}"
        return f"{FILES_ROUTE}{quote(check_key(key))}?{query}"

    def verify(self, key: str, expires: str, sig: str, now: float | None = None) -> int:
        """Raise unless `sig` signs `key` until `expires` and that time has not passed; the
        expiry, in unix seconds."""
        check_key(key)
        # ASCII digits, bounded, before int(): str.isdigit() takes "²", int() refuses it (and
        # anything past 4,300 digits).
        if _EXPIRES.fullmatch(expires) is None or not hmac.compare_digest(
            self._signature(key, int(expires)).encode(), sig.encode()
        ):
            raise Forbidden("this file URL's signature is not valid", code="invalid_signature")
        if int(expires) < (now if now is not None else time.time()):
            raise Forbidden(
                "this file URL has expired; fetch the job again for fresh URLs", code="url_expired"
            )
        return int(expires)


def content_type(key: str) -> str:
    return CONTENT_TYPES.get(Path(key).suffix.lower(), "application/octet-stream")


class S3Storage:
    """Objects in an S3-compatible bucket (AWS S3, MinIO, …), under an optional prefix."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        public_url: str | None = None,
        presigner: Any = None,
    ) -> None:
        self.client = client
        self.presigner = presigner or client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.public_url = public_url.rstrip("/") if public_url else None

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(
            Bucket=self.bucket,
            Key=self.prefix + check_key(key),
            Body=data,
            ContentType=content_type(key),
        )

    def get(self, key: str) -> bytes:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.prefix + check_key(key))
        except self.client.exceptions.NoSuchKey:
            raise FileNotFound(f"no file {key!r}") from None
        data: bytes = answer["Body"].read()
        return data

    def url(self, key: str, ttl_s: int, base_url: str) -> str:
        if self.public_url is not None:
            return f"{self.public_url}/{quote(self.prefix + check_key(key))}"
        url: str = self.presigner.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self.prefix + key},
            ExpiresIn=ttl_s,
        )
        return url

    def purge_jobs(self, older_than_s: float, now: float | None = None) -> int:
        """Delete the objects of jobs older than `older_than_s` (a bucket lifecycle rule on
        the prefix does the same without this sweep)."""
        cutoff = (now if now is not None else time.time()) - older_than_s
        jobs, stale = set(), []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        for page in pages:
            for item in page.get("Contents", []):
                if item["LastModified"].timestamp() < cutoff:
                    stale.append({"Key": item["Key"]})
                    jobs.add(item["Key"].rsplit("/", 1)[0])
        for start in range(0, len(stale), 1000):
            self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": stale[start : start + 1000]}
            )
        return len(jobs)


def make_storage(settings: Settings) -> Storage:
    """The storage the settings name: local files (default) or an S3 bucket."""
    if settings.storage == "s3":
        import boto3
        from botocore.config import Config

        if not settings.s3_bucket:
            raise ValueError("LATENTQ_STORAGE=s3 needs LATENTQ_S3_BUCKET")
        # SigV4 presigning (what MinIO and every AWS region accept), and path-style addresses
        # for S3-compatible servers that have no per-bucket host names.
        style = "path" if settings.s3_endpoint_url else "auto"
        config = Config(signature_version="s3v4", s3={"addressing_style": style})
        client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            config=config,
        )
        presigner = None
        if settings.s3_public_endpoint_url:
            # Presigning is local arithmetic: this client never connects anywhere.
            presigner = boto3.client(
                "s3",
                endpoint_url=settings.s3_public_endpoint_url,
                region_name=settings.s3_region,
                config=config,
            )
        return S3Storage(
            client, settings.s3_bucket, settings.s3_prefix, settings.s3_public_url, presigner
        )
    return LocalStorage(settings.data_dir, settings.signing_key())
