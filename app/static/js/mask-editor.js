// The inpaint mask editor: the image on one canvas, the mask painted on a second canvas of the
// image's size stacked over it. Painted pixels (shown tinted) become white in the exported
// mask, the rest black.

import { canvasOf, fit, toPngBlob } from "./images.js";

const TINT = "#ff2e7e";
const UNDO_BYTES = 96 * 1024 * 1024;

export class MaskEditor {
  constructor(elements, onChange = () => {}) {
    Object.assign(this, elements);
    this.onChange = onChange;
    this.source = null;
    this.tool = "brush";
    this.drawing = false;
    this.last = null;
    this.undoStack = [];
    this.paintContext = this.paintCanvas.getContext("2d", { willReadFrequently: true });

    this.paintCanvas.addEventListener("pointerdown", (e) => this.down(e));
    this.paintCanvas.addEventListener("pointermove", (e) => this.move(e));
    this.paintCanvas.addEventListener("pointerup", (e) => this.up(e));
    this.paintCanvas.addEventListener("pointercancel", (e) => this.up(e));
    this.paintCanvas.addEventListener("pointerleave", () => {
      this.cursor.hidden = true;
    });
    this.brushInput.addEventListener("input", () => this.showBrushSize());
    this.brushButton.addEventListener("click", () => this.setTool("brush"));
    this.eraserButton.addEventListener("click", () => this.setTool("eraser"));
    this.undoButton.addEventListener("click", () => this.undo());
    this.fillButton.addEventListener("click", () => this.edit((ctx, w, h) => {
      ctx.globalCompositeOperation = "source-over";
      ctx.fillStyle = TINT;
      ctx.fillRect(0, 0, w, h);
    }));
    this.invertButton.addEventListener("click", () => this.edit((ctx, w, h) => {
      const inverse = canvasOf(w, h);
      const ictx = inverse.getContext("2d");
      ictx.fillStyle = TINT;
      ictx.fillRect(0, 0, w, h);
      ictx.globalCompositeOperation = "destination-out";
      ictx.drawImage(this.paintCanvas, 0, 0);
      ctx.globalCompositeOperation = "source-over";
      ctx.clearRect(0, 0, w, h);
      ctx.drawImage(inverse, 0, 0);
    }));
    this.clearButton.addEventListener("click", () => this.edit((ctx, w, h) => {
      ctx.clearRect(0, 0, w, h);
    }));
    let frameWidth = 0;
    new ResizeObserver(() => {
      if (this.frame.clientWidth !== frameWidth) {
        frameWidth = this.frame.clientWidth;
        this.layout();
      }
    }).observe(this.frame);
    this.showBrushSize();
    this.updateButtons();
  }

  get hasImage() {
    return this.source !== null;
  }

  load(canvas) {
    this.source = canvas;
    const { width, height } = canvas;
    for (const target of [this.imageCanvas, this.paintCanvas]) {
      target.width = width;
      target.height = height;
    }
    this.imageCanvas.getContext("2d").drawImage(canvas, 0, 0);
    this.paintContext.clearRect(0, 0, width, height);
    this.undoStack = [];
    const longest = Math.max(width, height);
    this.brushInput.max = String(Math.max(8, Math.round(longest / 2)));
    this.brushInput.value = String(Math.max(2, Math.round(longest / 10)));
    this.showBrushSize();
    this.empty.hidden = true;
    this.stage.hidden = false;
    this.paintCanvas.setAttribute(
      "aria-label",
      `Mask over the ${width}×${height} image: drag to paint the areas to repaint`,
    );
    this.layout();
    this.updateButtons();
    this.onChange();
  }

  layout() {
    if (!this.source) {
      return;
    }
    const style = getComputedStyle(this.frame);
    const inner = this.frame.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    const maxHeight = Math.max(240, window.innerHeight * 0.6);
    const size = fit(this.source.width, this.source.height, Math.max(64, inner), maxHeight);
    this.stage.style.width = `${size.width}px`;
    this.stage.style.height = `${size.height}px`;
  }

  setTool(tool) {
    this.tool = tool;
    this.brushButton.setAttribute("aria-pressed", String(tool === "brush"));
    this.eraserButton.setAttribute("aria-pressed", String(tool === "eraser"));
  }

  get brushSize() {
    return Number(this.brushInput.value) || 1;
  }

  showBrushSize() {
    this.brushOutput.value = `${this.brushSize} px`;
  }

  point(event) {
    const rect = this.paintCanvas.getBoundingClientRect();
    return {
      x: ((event.clientX - rect.left) * this.paintCanvas.width) / rect.width,
      y: ((event.clientY - rect.top) * this.paintCanvas.height) / rect.height,
    };
  }

  showCursor(event) {
    const stage = this.stage.getBoundingClientRect();
    const diameter = (this.brushSize * stage.width) / this.paintCanvas.width;
    Object.assign(this.cursor.style, {
      left: `${event.clientX - stage.left}px`,
      top: `${event.clientY - stage.top}px`,
      width: `${diameter}px`,
      height: `${diameter}px`,
    });
    this.cursor.hidden = false;
  }

  down(event) {
    if (!this.source || event.button !== 0) {
      return;
    }
    event.preventDefault();
    this.paintCanvas.setPointerCapture(event.pointerId);
    this.pushUndo();
    this.drawing = true;
    this.last = this.point(event);
    this.stroke(this.last, this.last);
    this.showCursor(event);
  }

  move(event) {
    if (!this.source) {
      return;
    }
    this.showCursor(event);
    if (!this.drawing) {
      return;
    }
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    for (const each of events.length ? events : [event]) {
      const next = this.point(each);
      this.stroke(this.last, next);
      this.last = next;
    }
  }

  up(event) {
    if (!this.drawing) {
      return;
    }
    this.drawing = false;
    if (this.paintCanvas.hasPointerCapture(event.pointerId)) {
      this.paintCanvas.releasePointerCapture(event.pointerId);
    }
    this.updateButtons();
    this.onChange();
  }

  stroke(from, to) {
    const ctx = this.paintContext;
    ctx.globalCompositeOperation = this.tool === "eraser" ? "destination-out" : "source-over";
    ctx.strokeStyle = TINT;
    ctx.fillStyle = TINT;
    ctx.lineWidth = this.brushSize;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    if (from.x === to.x && from.y === to.y) {
      ctx.beginPath();
      ctx.arc(to.x, to.y, this.brushSize / 2, 0, Math.PI * 2);
      ctx.fill();
      return;
    }
    ctx.beginPath();
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(to.x, to.y);
    ctx.stroke();
  }

  edit(change) {
    if (!this.source) {
      return;
    }
    this.pushUndo();
    change(this.paintContext, this.paintCanvas.width, this.paintCanvas.height);
    this.paintContext.globalCompositeOperation = "source-over";
    this.updateButtons();
    this.onChange();
  }

  pushUndo() {
    const { width, height } = this.paintCanvas;
    const limit = Math.max(1, Math.floor(UNDO_BYTES / (width * height * 4)));
    this.undoStack.push(this.paintContext.getImageData(0, 0, width, height));
    while (this.undoStack.length > limit) {
      this.undoStack.shift();
    }
  }

  undo() {
    const previous = this.undoStack.pop();
    if (previous) {
      this.paintContext.putImageData(previous, 0, 0);
      this.updateButtons();
      this.onChange();
    }
  }

  updateButtons() {
    const disabled = !this.source;
    for (const button of [this.fillButton, this.invertButton, this.clearButton]) {
      button.disabled = disabled;
    }
    this.undoButton.disabled = disabled || this.undoStack.length === 0;
  }

  isEmpty() {
    const { width, height } = this.paintCanvas;
    const pixels = this.paintContext.getImageData(0, 0, width, height).data;
    for (let i = 3; i < pixels.length; i += 4) {
      if (pixels[i] !== 0) {
        return false;
      }
    }
    return true;
  }

  // The mask as a PNG of the image's size: white where painted, black elsewhere.
  maskBlob() {
    const { width, height } = this.paintCanvas;
    const white = canvasOf(width, height);
    const wctx = white.getContext("2d");
    wctx.drawImage(this.paintCanvas, 0, 0);
    wctx.globalCompositeOperation = "source-in";
    wctx.fillStyle = "#ffffff";
    wctx.fillRect(0, 0, width, height);
    const mask = canvasOf(width, height);
    const mctx = mask.getContext("2d");
    mctx.fillStyle = "#000000";
    mctx.fillRect(0, 0, width, height);
    mctx.drawImage(white, 0, 0);
    return toPngBlob(mask);
  }

  imageBlob() {
    return toPngBlob(this.source);
  }
}
