"""Nothing grows without bound: job files are deleted once their records have expired.

Records, idempotency keys and worker presence expire in Redis by themselves; files on local
storage are swept here, by every API replica (the sweep is safe to run concurrently).
"""

from __future__ import annotations

import asyncio
import logging

from starlette.concurrency import run_in_threadpool

from jobs.storage import Storage

log = logging.getLogger(__name__)


async def sweep_forever(storage: Storage, keep_s: int, every_s: float) -> None:
    while True:
        try:
            removed = await run_in_threadpool(storage.purge_jobs, keep_s)
            if removed:
                log.info("retention: deleted the files of %d expired jobs", removed)
        except Exception:  # a failed sweep is retried at the next one
            log.exception("retention sweep failed")
        await asyncio.sleep(every_s)
