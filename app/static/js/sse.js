// A Server-Sent Events parser for streams read with fetch() (EventSource cannot send headers).
// Follows the WHATWG event-stream format: CR, LF or CRLF line ends, `event`, `data`, `id`,
// `retry` fields, `:` comments, and one event per blank line.

export class SseParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.pendingCR = false;
    this.reset();
    this.lastEventId = "";
    this.retry = null;
  }

  reset() {
    this.eventName = "";
    this.dataLines = [];
  }

  feed(chunk) {
    let text = chunk;
    if (this.pendingCR && text.startsWith("\n")) {
      text = text.slice(1);
    }
    this.pendingCR = false;
    this.buffer += text;
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const ch = this.buffer[i];
      if (ch !== "\n" && ch !== "\r") {
        continue;
      }
      this.line(this.buffer.slice(start, i));
      if (ch === "\r") {
        if (i + 1 < this.buffer.length) {
          if (this.buffer[i + 1] === "\n") {
            i++;
          }
        } else {
          this.pendingCR = true;
        }
      }
      start = i + 1;
    }
    this.buffer = this.buffer.slice(start);
  }

  line(line) {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (line.startsWith(":")) {
      return;
    }
    const colon = line.indexOf(":");
    let field = line;
    let value = "";
    if (colon !== -1) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.startsWith(" ")) {
        value = value.slice(1);
      }
    }
    if (field === "event") {
      this.eventName = value;
    } else if (field === "data") {
      this.dataLines.push(value);
    } else if (field === "id" && !value.includes("\0")) {
      this.lastEventId = value;
    } else if (field === "retry" && /^\d+$/.test(value)) {
      this.retry = Number(value);
    }
  }

  dispatch() {
    if (this.dataLines.length === 0) {
      this.reset();
      return;
    }
    const event = {
      event: this.eventName || "message",
      data: this.dataLines.join("\n"),
      id: this.lastEventId,
    };
    this.reset();
    this.onEvent(event);
  }
}
