"""Webhook targets, signatures and the outbox's retry policy."""

from __future__ import annotations

import ipaddress
import time

import pytest

from jobs.webhooks import WebhookRefused, check_url, resolve, signature
from latentq_client import verify_webhook


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "example.com/x",
        "http:///x",
        "https://u:p@example.com/x",
        "http://[::1",
        "javascript:alert(1)",
    ],
)
def test_only_plain_http_urls(url: str) -> None:
    with pytest.raises(WebhookRefused):
        check_url(url)


def test_ports_default_by_scheme() -> None:
    assert check_url("https://example.com/hook") == ("example.com", 443)
    assert check_url("http://example.com:8080/hook") == ("example.com", 8080)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "100.64.0.1",
        "224.0.0.1",
    ],
)
def test_private_targets_are_refused(host: str) -> None:
    with pytest.raises(WebhookRefused, match="private|resolve"):
        resolve(host, 80, allow_private=False)


@pytest.mark.parametrize(
    "host",
    [
        "64:ff9b::7f00:1",  # NAT64 (RFC 6052) of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254, the cloud metadata service
        "64:ff9b::10.1.2.3",
        "64:ff9b:1::a00:1",  # local-use NAT64 (RFC 8215): a site's own translator
        "64:ff9b:1:ffff::5db8:d822",
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::",  # 6to4 of the metadata service
        "2001:0:a00:1::80ff:fffe",  # Teredo: server 10.0.0.1, client 127.0.0.1
        "::127.0.0.1",  # IPv4-compatible
        "::a9fe:a9fe",
        "::ffff:0:127.0.0.1",  # IPv4-translated (SIIT)
        "::ffff:0:c0a8:101",
    ],
)
def test_ipv6_forms_of_private_ipv4_addresses_are_refused(host: str) -> None:
    with pytest.raises(WebhookRefused, match="private"):
        resolve(host, 80, allow_private=False)
    assert check_url(f"http://[{host}]:8080/hook") == (host, 8080)


@pytest.mark.parametrize(
    "host", ["2606:4700:4700::1111", "64:ff9b::5db8:d822", "2002:5db8:d822::1", "::ffff:5db8:d822"]
)
def test_ipv6_forms_of_public_addresses_pass(host: str) -> None:
    (address,) = resolve(host, 443, allow_private=False)
    assert ipaddress.ip_address(address) == ipaddress.ip_address(host)


def test_private_targets_when_allowed() -> None:
    assert resolve("127.0.0.1", 80, allow_private=True) == ["127.0.0.1"]


def test_public_literal_addresses_pass() -> None:
    assert resolve("93.184.216.34", 443, allow_private=False) == ["93.184.216.34"]


def test_signature_round_trip_and_tolerance() -> None:
    # What a receiver checks, with the SDK's `verify_webhook`.
    secret, body, now = b"s" * 32, b'{"event":"completed"}', int(time.time())

    def verify(timestamp: str, body: bytes, header: str) -> bool:
        sent = {"Webhook-Timestamp": timestamp, "Webhook-Signature": header}
        return verify_webhook(secret, sent, body)

    header = signature(secret, now, body)
    assert verify(str(now), body, header)
    assert verify(str(now), body, "v1=deadbeef, " + header)  # rotated secrets
    assert verify_webhook(
        secret.decode(), {"webhook-timestamp": str(now), "WEBHOOK-SIGNATURE": header}, body
    )
    assert not verify(str(now), body + b"x", header)
    assert not verify_webhook(
        b"another", {"Webhook-Timestamp": str(now), "Webhook-Signature": header}, body
    )
    assert not verify(str(now - 3600), body, signature(secret, now - 3600, body))
    assert not verify("soon", body, header)
    assert not verify("²", body, header)
    assert not verify("1" * 5000, body, header)
    assert not verify_webhook(secret, {}, body)
