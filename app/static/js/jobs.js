// Job cards: status, queue position, a progress bar with step/total and ETA, and cancel.
// Each job is followed over its event stream; past a few streams at once (browsers keep about
// six connections per host) or when a stream cannot be kept, by polling the job.

import { ApiError } from "./api.js";

const RANK = { queued: 0, running: 1, succeeded: 2, failed: 2, canceled: 2 };
const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
const MAX_STREAMS = 4;
const POLL_MS = 1500;
const TYPE_LABELS = {
  txt2img: "Text to image",
  img2img: "Image to image",
  inpaint: "Inpaint",
  outpaint: "Outpaint",
  txt2video: "Video",
};

function seconds(value) {
  return value < 10 ? value.toFixed(1) : Math.round(value).toString();
}

function duration(job) {
  if (!job.started_at || !job.finished_at) {
    return null;
  }
  const ms = Date.parse(job.finished_at) - Date.parse(job.started_at);
  return Number.isFinite(ms) && ms >= 0 ? ms / 1000 : null;
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

function describeResult(result) {
  const videos = result?.videos;
  if (videos) {
    const frames = videos[0]?.num_frames ?? 0;
    return `${videos.length} video${videos.length === 1 ? "" : "s"} of ${frames} frames`;
  }
  const images = result?.images?.length || 0;
  return `${images} image${images === 1 ? "" : "s"}`;
}

export function typeLabel(type) {
  return TYPE_LABELS[type] || type;
}

class JobCard {
  constructor(list, job) {
    this.list = list;
    this.api = list.api;
    this.job = job;
    this.progress = { ...job.progress };
    this.finished = false;
    this.canceling = false;
    this.controller = new AbortController();
    this.element = list.template.content.firstElementChild.cloneNode(true);
    this.element.dataset.jobId = job.id;
    const part = (name) => this.element.querySelector(`.job-${name}`);
    this.title = part("title");
    this.status = part("status");
    this.bar = part("progress");
    this.steps = part("steps");
    this.detail = part("detail");
    this.errorText = part("error");
    this.cancelButton = part("cancel");
    this.title.textContent = `${typeLabel(job.type)} · ${job.model}`;
    this.title.title = job.id;
    this.bar.setAttribute("aria-label", `Progress of job ${job.id}`);
    this.cancelButton.setAttribute("aria-label", `Cancel job ${job.id}`);
    this.cancelButton.addEventListener("click", () => this.cancel());
    this.render();
  }

  apply(job) {
    if (this.finished || RANK[job.status] < RANK[this.job.status]) {
      return;
    }
    this.job = job;
    if (job.progress) {
      this.setProgress(job.progress, TERMINAL.has(job.status));
    }
    if (TERMINAL.has(job.status)) {
      this.finish();
    }
    this.render();
  }

  setProgress(progress, force = false) {
    if (!force && (progress.step ?? 0) < (this.progress.step ?? 0)) {
      return;
    }
    this.progress = { ...this.progress, ...progress };
  }

  onEvent({ event, data }) {
    if (event === "progress") {
      if (this.job.status === "queued") {
        this.job = { ...this.job, status: "running", queue_position: null };
      }
      this.setProgress(data);
      this.render();
    } else if (data && typeof data === "object" && "status" in data) {
      this.apply(data);
    }
  }

  finish() {
    this.finished = true;
    this.controller.abort();
    this.list.finished(this);
  }

  render() {
    const job = this.job;
    const status = job.status;
    const total = this.progress.total_steps || 0;
    const step = Math.min(this.progress.step || 0, total || Infinity);
    this.element.dataset.status = status;
    this.bar.max = Math.max(total, 1);
    this.bar.value = status === "succeeded" ? this.bar.max : step;
    const shownStep = status === "succeeded" ? total : step;
    this.steps.textContent = total ? `${shownStep} / ${total}` : "";
    this.bar.setAttribute("aria-valuetext", total ? `step ${shownStep} of ${total}` : "");

    let text;
    let detail = "";
    if (status === "queued") {
      text = job.queue_position ? `Queued · position ${job.queue_position}` : "Queued";
      detail = "Waiting for a worker.";
    } else if (status === "running") {
      text = "Running";
      const eta = this.progress.eta_s;
      detail = typeof eta === "number" ? `About ${seconds(eta)} s left.` : "Starting…";
    } else if (status === "succeeded") {
      const took = duration(job);
      text = took === null ? "Succeeded" : `Succeeded in ${seconds(took)} s`;
      detail = `${describeResult(job.result)}, seed ${job.params?.seed ?? "?"}.`;
    } else if (status === "failed") {
      text = "Failed";
    } else if (status === "canceled") {
      text = "Canceled";
    } else {
      text = status;
    }
    if (this.canceling && !TERMINAL.has(status)) {
      text = `${text} · canceling…`;
    }
    this.status.textContent = text;
    this.detail.textContent = detail;
    const failure = status === "failed" ? job.error?.message || "The job failed." : this.error;
    this.errorText.hidden = !failure;
    this.errorText.textContent = failure || "";
    this.cancelButton.hidden = TERMINAL.has(status);
    this.cancelButton.disabled = this.canceling;
  }

  async cancel() {
    this.canceling = true;
    this.error = null;
    this.render();
    try {
      this.apply(await this.api.cancel(this.job.id));
    } catch (error) {
      this.canceling = false;
      this.error = error.message;
      this.render();
    }
  }

  async follow() {
    const signal = this.controller.signal;
    if (this.list.streams < MAX_STREAMS) {
      this.list.streams += 1;
      const poller = this.pollWhileQueued(signal);
      try {
        await this.api.follow(this.job.id, (event) => this.onEvent(event), { signal });
        return;
      } catch (error) {
        if (signal.aborted) {
          return;
        }
        if (error instanceof ApiError && error.status >= 400 && error.status < 500) {
          this.error = error.message;
          this.render();
          return;
        }
      } finally {
        this.list.streams -= 1;
        await poller;
      }
    }
    await this.poll(signal, () => true);
  }

  // The event stream says when a job starts, not how its place in the queue moves.
  pollWhileQueued(signal) {
    return this.poll(signal, () => this.job.status === "queued");
  }

  async poll(signal, keepGoing) {
    while (!signal.aborted && !this.finished && keepGoing()) {
      await sleep(POLL_MS, signal);
      if (signal.aborted || this.finished || !keepGoing()) {
        return;
      }
      try {
        this.apply(await this.api.job(this.job.id, signal));
        this.error = null;
      } catch (error) {
        if (signal.aborted) {
          return;
        }
        this.error = error.message;
        this.render();
        if (error instanceof ApiError && (error.status === 404 || error.status === 401)) {
          return;
        }
      }
    }
  }
}

export class JobList {
  constructor({ list, empty, template, clearButton, api, onFinished }) {
    Object.assign(this, { list, empty, template, api, onFinished });
    this.cards = [];
    this.streams = 0;
    clearButton.addEventListener("click", () => this.clearFinished());
  }

  track(job) {
    const card = new JobCard(this, job);
    this.cards.unshift(card);
    this.list.prepend(card.element);
    this.empty.hidden = true;
    if (TERMINAL.has(job.status)) {
      card.apply(job);
    } else {
      card.follow();
    }
    return card;
  }

  finished(card) {
    this.onFinished?.(card.job);
  }

  clearFinished() {
    this.cards = this.cards.filter((card) => {
      if (card.finished) {
        card.element.remove();
        return false;
      }
      return true;
    });
    this.empty.hidden = this.cards.length > 0;
  }
}
