"""The SDK's Server-Sent Events parser."""

from __future__ import annotations

import json

import pytest

from latentq_client.sse import Event, SSEDecoder


def parse(*chunks: bytes | str) -> list[Event]:
    decoder = SSEDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)]


def test_named_events_with_json_data() -> None:
    events = parse(b'event: progress\ndata: {"step": 1, "total_steps": 4}\n\n')
    assert events == [
        Event("progress", {"step": 1, "total_steps": 4}, '{"step": 1, "total_steps": 4}')
    ]


def test_multi_line_data_is_joined_with_newlines() -> None:
    (event,) = parse(b'event: state\ndata: {"id": "j_1",\ndata:  "status": "queued"}\n\n')
    assert event.text == '{"id": "j_1",\n "status": "queued"}'
    assert event.data == {"id": "j_1", "status": "queued"}


def test_comments_and_unknown_fields_are_ignored() -> None:
    events = parse(
        b": keep-alive\n\n"
        b": another\nevent: progress\n: in the middle\nfoo: bar\ndata: {}\n\n"
        b": keep-alive\n\n"
    )
    assert [(e.name, e.data) for e in events] == [("progress", {})]


def test_id_and_retry_are_tolerated() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"retry: 2500\nid: 41\nevent: progress\ndata: {}\n\nretry: soon\n\n")
    assert [(e.name, e.id) for e in events] == [("progress", "41")]
    assert decoder.retry_ms == 2500
    assert decoder.last_event_id == "41"


def test_an_event_split_across_every_byte() -> None:
    job = {"id": "j_1", "status": "succeeded", "prompt": "café ☕"}
    raw = f"event: succeeded\r\ndata: {json.dumps(job, ensure_ascii=False)}\r\n\r\n".encode()
    decoder = SSEDecoder()
    events = [event for i in range(len(raw)) for event in decoder.feed(raw[i : i + 1])]
    assert events == [Event("succeeded", job, json.dumps(job, ensure_ascii=False))]


@pytest.mark.parametrize("newline", ["\n", "\r", "\r\n"])
def test_every_line_ending(newline: str) -> None:
    text = f"event: a{newline}data: 1{newline}{newline}data: 2{newline}{newline}"
    events = parse(text[:9], text[9:])
    assert [(e.name, e.text) for e in events] == [("a", "1"), ("message", "2")]


def test_crlf_split_between_chunks_is_one_line_ending() -> None:
    events = parse("data: 1\r", "\n\r", "\ndata: 2\r\n\r\n")
    assert [e.text for e in events] == ["1", "2"]


def test_event_name_resets_after_dispatch_and_blank_events_are_dropped() -> None:
    events = parse('event: progress\n\ndata: x\n\nevent: state\ndata: {"a": 1}\n\n')
    assert [(e.name, e.text, e.data) for e in events] == [
        ("message", "x", {}),
        ("state", '{"a": 1}', {"a": 1}),
    ]


def test_field_without_colon_or_space() -> None:
    (event,) = parse("event:progress\ndata\ndata:no-space\n\n")
    assert (event.name, event.text) == ("progress", "\nno-space")


def test_a_leading_byte_order_mark_is_skipped() -> None:
    (event,) = parse(b"\xef\xbb\xbfevent: x\ndata: {}\n\n")
    assert event.name == "x"


def test_an_unterminated_event_is_not_dispatched() -> None:
    decoder = SSEDecoder()
    assert decoder.feed("event: succeeded\ndata: {}\n") == []
    assert decoder.flush() == []
    assert decoder.feed("\n") == []


def test_non_object_data_keeps_the_text() -> None:
    (event,) = parse("data: [1, 2]\n\n")
    assert (event.data, event.text) == ({}, "[1, 2]")


def test_a_cr_inside_a_chunk_does_not_eat_the_next_chunks_lf() -> None:
    events = parse("data: 1\rdata: 2", "\n\n")
    assert [e.text for e in events] == ["1\n2"]
