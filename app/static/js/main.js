// The playground: a form over the public HTTP API of latentq.

import { Api, ApiError } from "./api.js";
import { Gallery } from "./gallery.js";
import { ImagePicker } from "./image-picker.js";
import { decodeToCanvas, firstImageFile } from "./images.js";
import { JobList } from "./jobs.js";
import { MaskEditor } from "./mask-editor.js";
import { OutpaintEditor } from "./outpaint-editor.js";

const $ = (id) => document.getElementById(id);
// The modes are the job types; a model's tabs are the ones its `tasks` list.
const MODES = ["txt2img", "img2img", "inpaint", "outpaint", "txt2video"];
const IMAGE_INPUT_MODES = ["img2img", "inpaint", "outpaint"];

const api = new Api();
// loras: the adapters chosen and their scales, by id, kept while switching models.
const state = { models: [], model: null, mode: "txt2img", lastSeed: null, loras: new Map() };

const form = $("job-form");
const formError = $("form-error");
const modelSelect = $("model");
const tabs = MODES.map((mode) => $(`tab-${mode}`));
const fields = {
  prompt: $("prompt"),
  negative: $("negative-prompt"),
  width: $("width"),
  height: $("height"),
  videoWidth: $("video-width"),
  videoHeight: $("video-height"),
  frames: $("frames"),
  fps: $("fps"),
  img2imgStrength: $("img2img-strength"),
  steps: $("steps"),
  guidance: $("guidance"),
  scheduler: $("scheduler"),
  n: $("n"),
  format: $("output-format"),
  priority: $("priority"),
  seed: $("seed"),
  seedRandom: $("seed-random"),
  seedReuse: $("seed-reuse"),
};

// ---- errors next to the form ----

// The controls of a field that hold its value (not the brush size slider or a checkbox).
const CONTROLS = "input:not(#brush-size):not([type=checkbox]), select, textarea";

function isShown(element) {
  return !element.closest("[hidden]");
}

function clearErrors() {
  formError.hidden = true;
  formError.replaceChildren();
  for (const element of document.querySelectorAll(".invalid")) {
    element.classList.remove("invalid");
  }
  for (const control of document.querySelectorAll("[aria-invalid]")) {
    control.removeAttribute("aria-invalid");
    const described = (control.getAttribute("aria-describedby") || "")
      .split(" ")
      .filter((id) => id && id !== "form-error");
    if (described.length) {
      control.setAttribute("aria-describedby", described.join(" "));
    } else {
      control.removeAttribute("aria-describedby");
    }
  }
}

// The shown fields of a parameter, or of the nearest enclosing one: "loras.1.scale" is looked
// up as itself, then "loras.1", then "loras".
function fieldsFor(param) {
  const parts = param.split(".");
  const names = parts.map((_, end) => parts.slice(0, parts.length - end).join("."));
  for (const name of names) {
    const found = [...document.querySelectorAll(`[data-param="${CSS.escape(name)}"]`)]
      .filter(isShown);
    if (found.length) {
      return found;
    }
  }
  return [];
}

function showError(error) {
  clearErrors();
  const message = document.createElement("p");
  message.className = "message";
  message.style.margin = "0";
  message.textContent = error.message || String(error);
  formError.append(message);
  if (error instanceof ApiError && error.status) {
    const code = document.createElement("span");
    code.className = "code";
    code.textContent = `${error.status} ${error.code}${error.param ? ` · ${error.param}` : ""}`;
    formError.append(code);
  }
  formError.hidden = false;
  const param = error instanceof ApiError ? error.param : null;
  if (!param) {
    formError.scrollIntoView({ block: "nearest" });
    return;
  }
  let first = null;
  const found = fieldsFor(param);
  for (const field of found) {
    field.classList.add("invalid");
    const controls = field.matches("input, select, textarea")
      ? [field]
      : [...field.querySelectorAll(`${CONTROLS}, canvas[role]`)];
    for (const control of controls) {
      control.setAttribute("aria-invalid", "true");
      const described = control.getAttribute("aria-describedby");
      control.setAttribute("aria-describedby", described ? `${described} form-error` : "form-error");
      first ??= control.matches(CONTROLS) && !control.disabled ? control : null;
    }
  }
  if (first) {
    first.focus();
  } else {
    (found[0] || formError).scrollIntoView({ block: "nearest" });
  }
}

form.addEventListener("input", (event) => {
  const field = event.target.closest(".invalid");
  if (field) {
    field.classList.remove("invalid");
    for (const control of field.querySelectorAll("[aria-invalid]")) {
      control.removeAttribute("aria-invalid");
    }
  }
});

// ---- service status, API key ----

const serviceStatus = $("service-status");
const banner = $("banner");
const auth = $("auth");
const authMessage = $("auth-message");
const keyInput = $("api-key");

function setServiceStatus(text, isError = false) {
  serviceStatus.textContent = text;
  serviceStatus.classList.toggle("error", isError);
}

function showBanner(text) {
  banner.textContent = text || "";
  banner.hidden = !text;
}

function showAuth(message, focus = false) {
  auth.hidden = false;
  authMessage.textContent = message;
  keyInput.placeholder = api.key ? "a key is set for this tab" : "";
  $("key-forget").hidden = !api.key;
  if (focus) {
    keyInput.focus();
  }
}

api.onUnauthorized((error) => {
  showAuth(
    api.key
      ? `The service refused the key: ${error.message}`
      : "This service needs an API key.",
    true,
  );
  setServiceStatus("An API key is needed.", true);
});

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = keyInput.value.trim();
  if (!key) {
    keyInput.focus();
    return;
  }
  api.key = key;
  keyInput.value = "";
  loadModels();
});

$("key-forget").addEventListener("click", () => {
  api.key = "";
  keyInput.value = "";
  loadModels();
});

// ---- models ----

function describeModel(model) {
  const [width, height] = model.native_size || [];
  const parts = [model.family, `native ${width}×${height}`];
  if (model.default_steps) {
    parts.push(`${model.default_steps} steps`);
  }
  if (model.max_frames) {
    parts.push(`up to ${model.max_frames} frames`);
  }
  const workers = model.workers ?? 0;
  parts.push(`${workers} warm worker${workers === 1 ? "" : "s"}`);
  let text = parts.filter(Boolean).join(" · ");
  if (!workers) {
    text += ". No worker holds it yet: jobs wait in its queue.";
  }
  return model.description ? `${model.description}. ${text}` : text;
}

// The model's own word on what its prompts should say, under the prompt box; its example (the
// text after "e.g." up to the end of that sentence) becomes the placeholder.
const promptField = $("prompt");
const promptHint = $("prompt-hint");
const DEFAULT_PLACEHOLDER = promptField.placeholder;

function showPromptHint(model) {
  const hint = model.prompt_hint || "";
  promptHint.textContent = hint ? `${hint} Ctrl+Enter generates.` : "Ctrl+Enter generates.";
  const example = /e\.g\. "([^"]+)"/.exec(hint);
  promptField.placeholder = example ? example[1] : DEFAULT_PLACEHOLDER;
}

function applyModel(model) {
  state.model = model;
  $("model-info").textContent = describeModel(model);
  showPromptHint(model);
  const [width, height] = model.native_size || [512, 512];
  fields.width.value = String(width);
  fields.height.value = String(height);
  fields.videoWidth.value = String(width);
  fields.videoHeight.value = String(height);
  fields.frames.max = model.max_frames ? String(model.max_frames) : "";
  fields.frames.value = model.default_frames ? String(model.default_frames) : "";
  fields.fps.value = model.default_fps ? String(model.default_fps) : "";
  showVideoLength();
  renderLoras(model.adapters || []);
  fields.steps.value = model.default_steps ? String(model.default_steps) : "";
  fields.guidance.value = model.default_guidance ?? "";
  fields.scheduler.replaceChildren(
    ...(model.schedulers || []).map((name) => new Option(name, name)),
  );
  fields.scheduler.value = model.default_scheduler || model.schedulers?.[0] || "";
  for (const tab of tabs) {
    tab.hidden = !model.tasks.includes(tab.dataset.mode);
  }
  if (!model.tasks.includes(state.mode)) {
    setMode(MODES.find((mode) => model.tasks.includes(mode)) || "txt2img");
  }
}

// ---- LoRA adapters ----

const loraFieldset = $("loras");
const loraList = $("lora-list");
const loraTemplate = $("lora-template");

function loraRow(id, index) {
  const row = loraTemplate.content.firstElementChild.cloneNode(true);
  const use = row.querySelector(".lora-use");
  const name = row.querySelector(".lora-name");
  const scaleLabel = row.querySelector(".lora-scale-label");
  const scale = row.querySelector(".lora-scale");
  row.dataset.adapter = id;
  use.id = `lora-${index}-use`;
  scale.id = `lora-${index}-scale`;
  name.htmlFor = use.id;
  name.textContent = id;
  scaleLabel.htmlFor = scale.id;
  scale.setAttribute("aria-label", `Scale of ${id}`);
  const saved = state.loras.get(id);
  use.checked = saved?.use ?? false;
  scale.value = saved?.scale ?? "1";
  scale.disabled = !use.checked;
  const remember = () => {
    scale.disabled = !use.checked;
    state.loras.set(id, { use: use.checked, scale: scale.value });
  };
  use.addEventListener("change", remember);
  scale.addEventListener("input", remember);
  return row;
}

function renderLoras(adapters) {
  loraList.replaceChildren(...adapters.map(loraRow));
  loraFieldset.hidden = adapters.length === 0;
}

// The chosen adapters in the order shown; each chosen row answers for `loras.<i>` errors.
function chosenLoras() {
  const chosen = [];
  for (const row of loraList.children) {
    delete row.dataset.param;
    if (row.querySelector(".lora-use").checked) {
      row.dataset.param = `loras.${chosen.length}`;
      const scale = numberOf(row.querySelector(".lora-scale")) ?? 1;
      chosen.push({ id: row.dataset.adapter, scale });
    }
  }
  return chosen;
}

async function loadModels() {
  setServiceStatus("Loading models…");
  try {
    const { data } = await api.models();
    state.models = data;
    const previous = modelSelect.value;
    modelSelect.replaceChildren(
      ...data.map((model) => new Option(model.default ? `${model.id} (default)` : model.id, model.id)),
    );
    const chosen = data.find((m) => m.id === previous) || data.find((m) => m.default) || data[0];
    if (chosen) {
      modelSelect.value = chosen.id;
      applyModel(chosen);
    }
    const warm = data.filter((model) => model.workers > 0).length;
    setServiceStatus(`${data.length} model${data.length === 1 ? "" : "s"}, ${warm} warm.`);
    showBanner("");
    if (api.key) {
      showAuth("Using the API key kept in this tab.");
    } else {
      auth.hidden = true;
    }
  } catch (error) {
    if (error.status === 401) {
      return;
    }
    setServiceStatus("The models could not be loaded.", true);
    showBanner(error.message);
  }
}

modelSelect.addEventListener("change", () => {
  const model = state.models.find((m) => m.id === modelSelect.value);
  if (model) {
    applyModel(model);
  }
});

// ---- modes (tabs) ----

function setMode(mode, focus = false) {
  state.mode = mode;
  for (const tab of tabs) {
    const selected = tab.dataset.mode === mode;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    $(tab.getAttribute("aria-controls")).hidden = !selected;
    if (selected && focus) {
      tab.focus();
    }
  }
  for (const element of document.querySelectorAll("[data-modes]")) {
    element.hidden = !element.dataset.modes.split(" ").includes(mode);
  }
  clearErrors();
  if (mode === "inpaint") {
    maskEditor.layout();
  } else if (mode === "outpaint") {
    outpaintEditor.redraw();
  }
}

for (const tab of tabs) {
  tab.addEventListener("click", () => setMode(tab.dataset.mode));
}

$("job-form").querySelector('[role="tablist"]').addEventListener("keydown", (event) => {
  const visible = tabs.filter((tab) => !tab.hidden);
  const at = visible.indexOf(document.activeElement);
  if (at === -1) {
    return;
  }
  const moves = {
    ArrowRight: (at + 1) % visible.length,
    ArrowLeft: (at - 1 + visible.length) % visible.length,
    Home: 0,
    End: visible.length - 1,
  };
  if (event.key in moves) {
    event.preventDefault();
    setMode(visible[moves[event.key]].dataset.mode, true);
  }
});

// ---- image editors ----

// Painting answers a "paint something first" error about the mask: take it away.
function maskChanged() {
  if ($("inpaint-frame").closest(".invalid")) {
    clearErrors();
  }
}

const maskEditor = new MaskEditor({
  frame: $("inpaint-frame"),
  empty: $("inpaint-empty"),
  stage: $("mask-stage"),
  imageCanvas: $("mask-image"),
  paintCanvas: $("mask-paint"),
  cursor: $("brush-cursor"),
  brushInput: $("brush-size"),
  brushOutput: $("brush-size-value"),
  brushButton: $("tool-brush"),
  eraserButton: $("tool-eraser"),
  undoButton: $("mask-undo"),
  fillButton: $("mask-fill"),
  invertButton: $("mask-invert"),
  clearButton: $("mask-clear"),
}, maskChanged);

const outpaintEditor = new OutpaintEditor({
  frame: $("outpaint-frame"),
  empty: $("outpaint-empty"),
  stage: $("outpaint-stage"),
  canvas: $("outpaint-canvas"),
  sizeLabel: $("canvas-size"),
  inputs: {
    left: $("pad-left"),
    right: $("pad-right"),
    top: $("pad-top"),
    bottom: $("pad-bottom"),
  },
  handles: Object.fromEntries(
    [...document.querySelectorAll(".handle")].map((handle) => [handle.dataset.side, handle]),
  ),
});

const imagePicker = new ImagePicker({
  empty: $("img2img-empty"),
  canvas: $("img2img-preview"),
  sizeLabel: $("img2img-size"),
});

const editors = { img2img: imagePicker, inpaint: maskEditor, outpaint: outpaintEditor };

async function loadInto(mode, blob) {
  try {
    editors[mode].load(await decodeToCanvas(blob));
    clearErrors();
  } catch (error) {
    setMode(mode);
    showError(new ApiError(0, "invalid_image", error.message, "image"));
  }
}

for (const mode of IMAGE_INPUT_MODES) {
  const input = $(`${mode}-file`);
  input.addEventListener("change", () => {
    if (input.files?.[0]) {
      loadInto(mode, input.files[0]);
    }
  });
  const frame = $(`${mode}-frame`);
  frame.addEventListener("dragover", (event) => {
    event.preventDefault();
    frame.classList.add("dragover");
  });
  frame.addEventListener("dragleave", () => frame.classList.remove("dragover"));
  frame.addEventListener("drop", (event) => {
    event.preventDefault();
    frame.classList.remove("dragover");
    const file = firstImageFile(event.dataTransfer);
    if (file) {
      loadInto(mode, file);
    }
  });
}

async function sendTo(mode, blob) {
  if (!state.model?.tasks.includes(mode)) {
    const model = state.models.find((m) => m.tasks.includes(mode));
    if (!model) {
      showError(new ApiError(0, "unsupported", `No model of this service can ${mode}.`));
      return;
    }
    modelSelect.value = model.id;
    applyModel(model);
  }
  setMode(mode, true);
  $(`${mode}-file`).value = "";
  await loadInto(mode, blob);
}

// ---- seed ----

function syncSeed() {
  fields.seed.disabled = fields.seedRandom.checked;
}

function useSeed(seed) {
  fields.seedRandom.checked = false;
  syncSeed();
  fields.seed.value = String(seed);
}

fields.seedRandom.addEventListener("change", syncSeed);
fields.seedReuse.addEventListener("click", () => {
  if (state.lastSeed !== null) {
    useSeed(state.lastSeed);
  }
});

$("swap-size").addEventListener("click", () => {
  [fields.width.value, fields.height.value] = [fields.height.value, fields.width.value];
});
$("video-swap-size").addEventListener("click", () => {
  [fields.videoWidth.value, fields.videoHeight.value] =
    [fields.videoHeight.value, fields.videoWidth.value];
});

// ---- video length ----

function showVideoLength() {
  const frames = Number(fields.frames.value);
  const fps = Number(fields.fps.value);
  const most = state.model?.max_frames;
  const limit = most ? ` This model makes up to ${most} frames.` : "";
  const length = frames > 0 && fps > 0
    ? `${frames} frame${frames === 1 ? "" : "s"} at ${fps} fps: ${(frames / fps).toFixed(2)} s.`
    : "";
  $("video-length").textContent = `${length}${limit}`.trim();
}

fields.frames.addEventListener("input", showVideoLength);
fields.fps.addEventListener("input", showVideoLength);

fields.img2imgStrength.addEventListener("input", () => {
  $("img2img-strength-value").value = Number(fields.img2imgStrength.value).toFixed(2);
});

// ---- submit ----

// A number field's value: a number, nothing when empty, or the text as typed when it is not a
// number (so that the service names what is wrong).
function numberOf(input) {
  const raw = input.value.trim();
  if (raw === "") {
    return undefined;
  }
  const value = Number(raw);
  return Number.isFinite(value) ? value : raw;
}

async function buildRequest() {
  const mode = state.mode;
  const params = {
    type: mode,
    model: state.model.id,
    prompt: fields.prompt.value,
  };
  if (fields.negative.value.trim()) {
    params.negative_prompt = fields.negative.value;
  }
  const optional = {
    steps: numberOf(fields.steps),
    guidance_scale: numberOf(fields.guidance),
    scheduler: fields.scheduler.value || undefined,
    priority: fields.priority.value,
    seed: fields.seedRandom.checked ? undefined : numberOf(fields.seed),
  };
  if (mode === "txt2video") {
    // One clip per job; videos have no image format.
    optional.width = numberOf(fields.videoWidth);
    optional.height = numberOf(fields.videoHeight);
    optional.num_frames = numberOf(fields.frames);
    optional.fps = numberOf(fields.fps);
  } else {
    optional.n = numberOf(fields.n);
    optional.output_format = fields.format.value;
  }
  if (mode === "txt2img") {
    optional.width = numberOf(fields.width);
    optional.height = numberOf(fields.height);
  } else if (mode === "img2img") {
    optional.strength = numberOf(fields.img2imgStrength);
  } else if (mode === "inpaint" || mode === "outpaint") {
    optional.strength = numberOf($(`${mode}-strength`));
    optional.mask_blur = numberOf($(`${mode}-blur`));
  }
  for (const [name, value] of Object.entries(optional)) {
    if (value !== undefined) {
      params[name] = value;
    }
  }
  const loras = loraFieldset.hidden ? [] : chosenLoras();
  if (loras.length) {
    params.loras = loras;
  }
  const files = {};
  if (IMAGE_INPUT_MODES.includes(mode)) {
    const editor = editors[mode];
    if (!editor.hasImage) {
      const purpose = mode === "img2img" ? "start from" : mode;
      throw new ApiError(0, "image_missing", `Choose an image to ${purpose} first.`, "image");
    }
    files.image = await editor.imageBlob();
  }
  if (mode === "inpaint") {
    if (maskEditor.isEmpty()) {
      throw new ApiError(
        0,
        "mask_empty",
        "Paint the areas to repaint on the image first (white = repaint).",
        "mask",
      );
    }
    files.mask = await maskEditor.maskBlob();
  }
  if (mode === "outpaint") {
    params.outpaint = outpaintEditor.padding();
  }
  return { params, files };
}

const generate = $("generate");

async function submit(event) {
  event?.preventDefault();
  clearErrors();
  if (!state.model) {
    showError(new ApiError(0, "no_model", "No model is loaded yet."));
    return;
  }
  generate.disabled = true;
  try {
    const { params, files } = await buildRequest();
    const job = await api.submit(params, files);
    if (job.params?.seed !== undefined) {
      state.lastSeed = job.params.seed;
      fields.seedReuse.disabled = false;
    }
    jobs.track(job);
  } catch (error) {
    showError(error);
  } finally {
    generate.disabled = false;
  }
}

form.addEventListener("submit", submit);
form.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    submit();
  }
});

// ---- jobs and gallery ----

const gallery = new Gallery({
  list: $("gallery"),
  empty: $("gallery-empty"),
  template: $("image-template"),
  videoTemplate: $("video-template"),
  clearButton: $("gallery-clear"),
  api,
  onSend: sendTo,
  canSend: (mode) => state.models.some((model) => model.tasks.includes(mode)),
  onUseSeed: useSeed,
});

const jobs = new JobList({
  list: $("jobs"),
  empty: $("jobs-empty"),
  template: $("job-template"),
  clearButton: $("jobs-clear"),
  api,
  onFinished: (job) => {
    if (job.status === "succeeded") {
      gallery.add(job);
    }
  },
});

syncSeed();
setMode("txt2img");
loadModels();
