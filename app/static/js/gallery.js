// The gallery of finished images and videos: each with its seed and parameters and download
// links; an image can be sent to img2img, inpaint or outpaint, any seed reused. Files are
// fetched as blobs (the service may want the API key for them) and shown through object URLs.

import { typeLabel } from "./jobs.js";

const EXTENSIONS = { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp" };
const SEND_MODES = ["img2img", "inpaint", "outpaint"];
const FROM_IMAGE = new Set(["img2img", "inpaint", "outpaint"]);
const MASKED = new Set(["inpaint", "outpaint"]);

function paramRows(job, item) {
  const p = job.params || {};
  const rows = [
    ["Mode", typeLabel(job.type)],
    ["Model", job.model],
    ["Size", `${item.width}×${item.height}`],
  ];
  if (item.num_frames !== undefined) {
    const length = item.fps ? ` (${(item.num_frames / item.fps).toFixed(2)} s)` : "";
    rows.push(["Frames", `${item.num_frames} at ${item.fps} fps${length}`]);
  }
  rows.push(["Steps", p.steps], ["Guidance", p.guidance_scale], ["Scheduler", p.scheduler]);
  if (FROM_IMAGE.has(job.type)) {
    rows.push(["Strength", p.strength]);
  }
  if (MASKED.has(job.type)) {
    rows.push(["Mask blur", p.mask_blur]);
  }
  if (p.outpaint) {
    const o = p.outpaint;
    rows.push(["Padding", `left ${o.left}, right ${o.right}, top ${o.top}, bottom ${o.bottom}`]);
  }
  if (p.loras?.length) {
    rows.push(["LoRA", p.loras.map((lora) => `${lora.id} × ${lora.scale}`).join(", ")]);
  }
  if (p.negative_prompt) {
    rows.push(["Negative", p.negative_prompt]);
  }
  rows.push(["Format", p.output_format], ["Job", job.id]);
  return rows.filter(([, value]) => value !== undefined && value !== null && value !== "");
}

export class Gallery {
  // options: list, empty, template, videoTemplate, api, onSend(mode, blob), canSend(mode),
  // onUseSeed(seed).
  constructor({ clearButton, ...options }) {
    Object.assign(this, options);
    this.urls = [];
    clearButton.addEventListener("click", () => this.clear());
  }

  add(job) {
    const videos = job.result?.videos;
    const items = videos || job.result?.images || [];
    const fragment = document.createDocumentFragment();
    items.forEach((item, index) => {
      fragment.append(videos
        ? this.videoCard(job, item, index, items.length)
        : this.imageCard(job, item, index, items.length));
    });
    this.list.prepend(fragment);
    this.empty.hidden = this.list.children.length > 0;
  }

  // The parts every card has: seed, prompt, parameters, "Use seed".
  card(template, job, item, index) {
    const element = template.content.firstElementChild.cloneNode(true);
    const part = (name) => element.querySelector(`.card-${name}`);
    element.dataset.jobId = job.id;
    element.dataset.index = String(index);
    element.dataset.seed = String(item.seed);
    element.dataset.state = "loading";
    part("seed").textContent = `Seed ${item.seed}`;
    part("prompt").textContent = job.params?.prompt || "";
    const list = part("params");
    for (const [name, value] of paramRows(job, item)) {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = String(value);
      list.append(dt, dd);
    }
    const useSeed = part("seed-use");
    useSeed.setAttribute("aria-label", `Use seed ${item.seed}`);
    useSeed.addEventListener("click", () => this.onUseSeed(item.seed));
    return { element, part };
  }

  imageCard(job, image, index, count) {
    const { element, part } = this.card(this.template, job, image, index);
    const img = element.querySelector("img");
    img.alt = `Image ${index + 1} of ${count}, seed ${image.seed}: ${job.params?.prompt || ""}`;
    img.width = image.width;
    img.height = image.height;
    const label = `image ${index + 1} (seed ${image.seed})`;
    const download = part("download");
    download.setAttribute("aria-label", `Download ${label}`);
    download.removeAttribute("href");
    const send = {};
    for (const mode of SEND_MODES) {
      const button = part(mode);
      button.setAttribute("aria-label", `Send ${label} to ${mode}`);
      button.disabled = true;
      button.hidden = this.canSend ? !this.canSend(mode) : false;
      send[mode] = button;
    }
    this.loadImage(element, img, image, job, index, download, send);
    return element;
  }

  async loadImage(element, img, image, job, index, download, send) {
    const blob = await this.fetch(element, image.url, "image");
    if (!blob) {
      return;
    }
    const url = this.objectUrl(blob);
    img.addEventListener("load", () => {
      element.dataset.state = "loaded";
    }, { once: true });
    img.src = url;
    const extension = EXTENSIONS[blob.type] || EXTENSIONS[image.content_type] || "png";
    download.href = url;
    download.download = `latentq-${job.id}-${index}-seed${image.seed}.${extension}`;
    for (const [mode, button] of Object.entries(send)) {
      button.disabled = false;
      button.addEventListener("click", () => this.onSend(mode, blob));
    }
  }

  videoCard(job, video, index, count) {
    const { element, part } = this.card(this.videoTemplate, job, video, index);
    const player = element.querySelector("video");
    // The attribute alone does not mute a cloned element, and browsers autoplay muted only.
    player.muted = true;
    player.setAttribute(
      "aria-label",
      `Video ${index + 1} of ${count}, seed ${video.seed}: ${job.params?.prompt || ""}`,
    );
    player.width = video.width;
    player.height = video.height;
    const label = `video ${index + 1} (seed ${video.seed})`;
    const mp4 = part("mp4");
    const webp = part("webp");
    mp4.setAttribute("aria-label", `Download ${label} as MP4`);
    webp.setAttribute("aria-label", `Download ${label} as an animated WebP`);
    mp4.removeAttribute("href");
    webp.removeAttribute("href");
    webp.hidden = !video.webp_url;
    this.loadVideo(element, player, video, job, index, mp4, webp);
    return element;
  }

  async loadVideo(element, player, video, job, index, mp4, webp) {
    const name = `latentq-${job.id}-${index}-seed${video.seed}`;
    const blob = await this.fetch(element, video.url, "video");
    if (!blob) {
      return;
    }
    const url = this.objectUrl(blob);
    const webpBlob = video.webp_url ? this.api.blob(video.webp_url).catch(() => null) : null;
    player.addEventListener("loadeddata", () => {
      element.dataset.state = "loaded";
    }, { once: true });
    // A browser without an H.264 decoder shows the same clip as an animated WebP.
    player.addEventListener("error", async () => {
      const clip = await webpBlob;
      if (!clip) {
        element.dataset.state = "error";
        return;
      }
      const img = document.createElement("img");
      img.alt = player.getAttribute("aria-label");
      img.addEventListener("load", () => {
        element.dataset.state = "webp";
      }, { once: true });
      img.src = this.objectUrl(clip);
      player.replaceWith(img);
    }, { once: true });
    player.src = url;
    mp4.href = url;
    mp4.download = `${name}.mp4`;
    const clip = await webpBlob;
    if (clip) {
      webp.href = this.objectUrl(clip);
      webp.download = `${name}.webp`;
    } else {
      webp.hidden = true;
    }
  }

  async fetch(element, url, what) {
    try {
      return await this.api.blob(url);
    } catch (error) {
      element.dataset.state = "error";
      const note = document.createElement("p");
      note.className = "job-error";
      note.textContent = `Could not load the ${what}: ${error.message}`;
      element.querySelector("figcaption").append(note);
      return null;
    }
  }

  objectUrl(blob) {
    const url = URL.createObjectURL(blob);
    this.urls.push(url);
    return url;
  }

  clear() {
    for (const url of this.urls) {
      URL.revokeObjectURL(url);
    }
    this.urls = [];
    this.list.replaceChildren();
    this.empty.hidden = false;
  }
}
