// The public HTTP API of latentq, from the browser: JSON and multipart requests, the error
// envelope, the API key (sessionStorage, sent as a Bearer header), the job event stream read
// with fetch(), and signed file URLs fetched as blobs.

import { SseParser } from "./sse.js";

const KEY_STORAGE = "latentq.apiKey";
const FINAL_EVENTS = new Set(["succeeded", "failed", "canceled"]);

export class ApiError extends Error {
  constructor(status, code, message, param = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.param = param;
  }
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const error = body && typeof body === "object" ? body.error : null;
  if (error && typeof error.message === "string") {
    return new ApiError(response.status, error.code || "error", error.message, error.param ?? null);
  }
  const text = response.statusText ? ` ${response.statusText}` : "";
  return new ApiError(response.status, "http_error", `The service answered ${response.status}${text}.`);
}

function networkError(error) {
  if (error?.name === "AbortError") {
    return error;
  }
  return new ApiError(0, "network_error", `Could not reach the service (${error?.message || error}).`);
}

export class Api {
  constructor(base = document.baseURI) {
    this.base = new URL(".", base);
    this.listeners = new Set();
  }

  get key() {
    try {
      return sessionStorage.getItem(KEY_STORAGE) || "";
    } catch {
      return "";
    }
  }

  set key(value) {
    try {
      if (value) {
        sessionStorage.setItem(KEY_STORAGE, value);
      } else {
        sessionStorage.removeItem(KEY_STORAGE);
      }
    } catch {
      // Storage may be disabled; the key then lasts until the page is left.
    }
  }

  onUnauthorized(listener) {
    this.listeners.add(listener);
  }

  url(path) {
    return new URL(path.replace(/^\//, ""), this.base);
  }

  headers(extra = {}) {
    const headers = new Headers(extra);
    const key = this.key;
    if (key) {
      headers.set("Authorization", `Bearer ${key}`);
    }
    return headers;
  }

  async request(method, path, { json, form, headers, signal } = {}) {
    const init = { method, headers: this.headers(headers), signal, cache: "no-store" };
    if (json !== undefined) {
      init.headers.set("Content-Type", "application/json");
      init.body = JSON.stringify(json);
    } else if (form !== undefined) {
      init.body = form;
    }
    let response;
    try {
      response = await fetch(this.url(path), init);
    } catch (error) {
      throw networkError(error);
    }
    if (!response.ok) {
      const error = await errorFrom(response);
      if (response.status === 401) {
        this.listeners.forEach((listener) => listener(error));
      }
      throw error;
    }
    if (response.status === 204) {
      return null;
    }
    return response.json();
  }

  models() {
    return this.request("GET", "v1/models");
  }

  submit(params, files = {}) {
    const entries = Object.entries(files).filter(([, blob]) => blob);
    if (entries.length === 0) {
      return this.request("POST", "v1/jobs", { json: params });
    }
    const form = new FormData();
    form.append("params", JSON.stringify(params));
    for (const [name, blob] of entries) {
      form.append(name, blob, `${name}.png`);
    }
    return this.request("POST", "v1/jobs", { form });
  }

  job(id, signal) {
    return this.request("GET", `v1/jobs/${encodeURIComponent(id)}`, { signal });
  }

  cancel(id) {
    return this.request("DELETE", `v1/jobs/${encodeURIComponent(id)}`);
  }

  // Follows a job's event stream, calling onEvent({event, data}) with data parsed from JSON,
  // until its final event. Reconnects (the service then sends the job's state again) when the
  // connection drops; rejects on an API error or after too many failed reconnects.
  async follow(id, onEvent, { signal, maxRetries = 8 } = {}) {
    let failures = 0;
    for (;;) {
      let finished = false;
      try {
        const response = await fetch(this.url(`v1/jobs/${encodeURIComponent(id)}/events`), {
          headers: this.headers({ Accept: "text/event-stream" }),
          cache: "no-store",
          signal,
        });
        if (!response.ok) {
          const error = await errorFrom(response);
          if (response.status === 401) {
            this.listeners.forEach((listener) => listener(error));
          }
          throw error;
        }
        const parser = new SseParser((event) => {
          let data = null;
          try {
            data = JSON.parse(event.data);
          } catch {
            return;
          }
          failures = 0;
          if (FINAL_EVENTS.has(event.event)) {
            finished = true;
          }
          onEvent({ event: event.event, data });
        });
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        try {
          while (!finished) {
            const { value, done } = await reader.read();
            if (done) {
              break;
            }
            parser.feed(value);
          }
        } finally {
          reader.cancel().catch(() => {});
        }
        if (finished) {
          return;
        }
      } catch (error) {
        if (error instanceof ApiError || signal?.aborted) {
          throw error;
        }
      }
      failures += 1;
      if (failures > maxRetries) {
        throw new ApiError(0, "stream_lost", "Lost the connection to the job's event stream.");
      }
      await sleep(Math.min(500 * 2 ** (failures - 1), 5000), signal);
    }
  }

  // A signed file URL as a Blob. The URL carries its own signature; with an API key the
  // service also wants the Authorization header, which an <img src> cannot send. A URL whose
  // origin is not this page's (a public URL behind a proxy) is read through this origin.
  async blob(fileUrl, signal) {
    let url = new URL(fileUrl, this.base);
    if (url.origin !== location.origin) {
      const at = url.pathname.indexOf("/v1/files/");
      if (at !== -1) {
        url = new URL(url.pathname.slice(at + 1) + url.search, this.base);
      }
    }
    let response;
    try {
      response = await fetch(url, { headers: this.headers(), signal });
    } catch (error) {
      throw networkError(error);
    }
    if (!response.ok) {
      throw await errorFrom(response);
    }
    return response.blob();
  }
}
