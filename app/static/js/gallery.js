// The gallery of finished images: each with its seed and parameters, a download link, and
// buttons that send it to inpaint or outpaint, or reuse its seed. Images are fetched as blobs
// (the service may want the API key for them) and shown through object URLs.

import { typeLabel } from "./jobs.js";

const EXTENSIONS = { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp" };

function paramRows(job, image) {
  const p = job.params || {};
  const rows = [
    ["Mode", typeLabel(job.type)],
    ["Model", job.model],
    ["Size", `${image.width}×${image.height}`],
    ["Steps", p.steps],
    ["Guidance", p.guidance_scale],
    ["Scheduler", p.scheduler],
  ];
  if (job.type !== "txt2img") {
    rows.push(["Strength", p.strength], ["Mask blur", p.mask_blur]);
  }
  if (p.outpaint) {
    const o = p.outpaint;
    rows.push(["Padding", `left ${o.left}, right ${o.right}, top ${o.top}, bottom ${o.bottom}`]);
  }
  if (p.negative_prompt) {
    rows.push(["Negative", p.negative_prompt]);
  }
  rows.push(["Format", p.output_format], ["Job", job.id]);
  return rows.filter(([, value]) => value !== undefined && value !== null && value !== "");
}

export class Gallery {
  constructor({ list, empty, template, clearButton, api, onSend, onUseSeed }) {
    Object.assign(this, { list, empty, template, api, onSend, onUseSeed });
    this.urls = new Map();
    clearButton.addEventListener("click", () => this.clear());
  }

  add(job) {
    const images = job.result?.images || [];
    const fragment = document.createDocumentFragment();
    images.forEach((image, index) => fragment.append(this.card(job, image, index, images.length)));
    this.list.prepend(fragment);
    this.empty.hidden = this.list.children.length > 0;
  }

  card(job, image, index, count) {
    const element = this.template.content.firstElementChild.cloneNode(true);
    const part = (name) => element.querySelector(`.card-${name}`);
    const prompt = job.params?.prompt || "";
    element.dataset.jobId = job.id;
    element.dataset.index = String(index);
    element.dataset.seed = String(image.seed);
    element.dataset.state = "loading";
    const img = element.querySelector("img");
    img.alt = `Image ${index + 1} of ${count}, seed ${image.seed}: ${prompt}`;
    img.width = image.width;
    img.height = image.height;
    part("seed").textContent = `Seed ${image.seed}`;
    part("prompt").textContent = prompt;
    const list = part("params");
    for (const [name, value] of paramRows(job, image)) {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = String(value);
      list.append(dt, dd);
    }
    const download = part("download");
    const sendInpaint = part("inpaint");
    const sendOutpaint = part("outpaint");
    const useSeed = part("seed-use");
    const label = `image ${index + 1} (seed ${image.seed})`;
    download.setAttribute("aria-label", `Download ${label}`);
    sendInpaint.setAttribute("aria-label", `Send ${label} to inpaint`);
    sendOutpaint.setAttribute("aria-label", `Send ${label} to outpaint`);
    useSeed.setAttribute("aria-label", `Use seed ${image.seed}`);
    useSeed.addEventListener("click", () => this.onUseSeed(image.seed));
    for (const button of [sendInpaint, sendOutpaint]) {
      button.disabled = true;
    }
    download.removeAttribute("href");
    this.load(element, img, image, job, index, { download, sendInpaint, sendOutpaint });
    return element;
  }

  async load(element, img, image, job, index, { download, sendInpaint, sendOutpaint }) {
    let blob;
    try {
      blob = await this.api.blob(image.url);
    } catch (error) {
      element.dataset.state = "error";
      const note = document.createElement("p");
      note.className = "job-error";
      note.textContent = `Could not load the image: ${error.message}`;
      element.querySelector("figcaption").append(note);
      return;
    }
    const url = URL.createObjectURL(blob);
    this.urls.set(element, url);
    img.addEventListener("load", () => {
      element.dataset.state = "loaded";
    }, { once: true });
    img.src = url;
    const extension = EXTENSIONS[blob.type] || EXTENSIONS[image.content_type] || "png";
    download.href = url;
    download.download = `latentq-${job.id}-${index}-seed${image.seed}.${extension}`;
    sendInpaint.disabled = false;
    sendOutpaint.disabled = false;
    sendInpaint.addEventListener("click", () => this.onSend("inpaint", blob));
    sendOutpaint.addEventListener("click", () => this.onSend("outpaint", blob));
  }

  clear() {
    for (const url of this.urls.values()) {
      URL.revokeObjectURL(url);
    }
    this.urls.clear();
    this.list.replaceChildren();
    this.empty.hidden = false;
  }
}
