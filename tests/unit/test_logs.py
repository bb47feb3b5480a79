"""What the logs may not hold: the passwords in connection URLs."""

from __future__ import annotations

import pytest

from jobs.logs import mask_url


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
        (
            "rediss://default:s3cret@cache.example.com:6380/1",
            "rediss://default:***@cache.example.com:6380/1",
        ),
        ("redis://user@redis:6379/0", "redis://user@redis:6379/0"),
        ("redis://redis:6379/0", "redis://redis:6379/0"),
        ("unix:///var/run/redis.sock", "unix:///var/run/redis.sock"),
        ("unix://:s3cret@/var/run/redis.sock?db=2", "unix://:***@/var/run/redis.sock?db=2"),
        ("redis://redis:6379/0?password=s3cret&db=1", "redis://redis:6379/0?password=***&db=1"),
        ("redis://:p%40ss:w@rd@redis:6379", "redis://:***@redis:6379"),
        ("not a url at all", "not a url at all"),
    ],
)
def test_passwords_in_urls_are_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert "s3cret" not in mask_url(url)
