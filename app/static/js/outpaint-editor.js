// The outpaint editor: the image placed on the larger canvas it will be painted into. The
// padding of each side is typed in number fields or set by dragging (or, with the keyboard,
// moving) a handle on that side.

import { fit, MAX_SIDE, toPngBlob } from "./images.js";

const SIDES = ["left", "right", "top", "bottom"];
const SNAP = 8;
// Which way a pointer or arrow key grows each side: [x sign, y sign].
const GROWS = { left: [-1, 0], right: [1, 0], top: [0, -1], bottom: [0, 1] };
const STAGE_MARGIN = 12;

function snap(value) {
  return Math.max(0, Math.min(MAX_SIDE, Math.round(value / SNAP) * SNAP));
}

export class OutpaintEditor {
  constructor(elements, onChange = () => {}) {
    Object.assign(this, elements);
    this.onChange = onChange;
    this.source = null;
    this.drag = null;
    for (const side of SIDES) {
      this.inputs[side].addEventListener("input", () => this.redraw());
      const handle = this.handles[side];
      handle.addEventListener("pointerdown", (e) => this.startDrag(side, e));
      handle.addEventListener("pointermove", (e) => this.moveDrag(e));
      handle.addEventListener("pointerup", (e) => this.endDrag(e));
      handle.addEventListener("pointercancel", (e) => this.endDrag(e));
      handle.addEventListener("keydown", (e) => this.key(side, e));
      handle.setAttribute("aria-valuemin", "0");
      handle.setAttribute("aria-valuemax", String(MAX_SIDE));
    }
    let frameWidth = 0;
    new ResizeObserver(() => {
      if (this.frame.clientWidth !== frameWidth) {
        frameWidth = this.frame.clientWidth;
        this.redraw();
      }
    }).observe(this.frame);
    this.redraw();
  }

  get hasImage() {
    return this.source !== null;
  }

  load(canvas) {
    this.source = canvas;
    const padding = this.padding();
    if (SIDES.every((side) => !(padding[side] > 0))) {
      const grow = Math.max(SNAP, snap(canvas.width / 4));
      this.setPadding({ left: grow, right: grow, top: 0, bottom: 0 });
    }
    this.empty.hidden = true;
    this.stage.hidden = false;
    this.redraw();
    this.onChange();
  }

  // The padding as typed: numbers, or the raw text when a field holds something else, so the
  // service can say what is wrong with it.
  padding() {
    const padding = {};
    for (const side of SIDES) {
      const raw = this.inputs[side].value.trim();
      const value = raw === "" ? 0 : Number(raw);
      padding[side] = Number.isFinite(value) ? value : raw;
    }
    return padding;
  }

  setPadding(values) {
    for (const [side, value] of Object.entries(values)) {
      this.inputs[side].value = String(value);
    }
    this.redraw();
  }

  shown(side) {
    const value = Number(this.inputs[side].value);
    return Number.isFinite(value) ? Math.max(0, Math.min(MAX_SIDE, value)) : 0;
  }

  redraw() {
    for (const side of SIDES) {
      const value = this.shown(side);
      this.handles[side].setAttribute("aria-valuenow", String(value));
      this.handles[side].setAttribute("aria-valuetext", `${value} pixels`);
    }
    if (!this.source) {
      this.sizeLabel.textContent = "";
      return;
    }
    const { width, height } = this.source;
    const pad = Object.fromEntries(SIDES.map((side) => [side, this.shown(side)]));
    const total = {
      width: width + pad.left + pad.right,
      height: height + pad.top + pad.bottom,
    };
    this.sizeLabel.textContent =
      `Image ${width}×${height} on a canvas of ${total.width}×${total.height}.`;
    if (this.drag) {
      // While dragging, the scale stays put so that the handle follows the pointer.
      this.paint(total, pad, this.drag.scale);
      return;
    }
    const style = getComputedStyle(this.frame);
    const inner = this.frame.clientWidth - parseFloat(style.paddingLeft) -
      parseFloat(style.paddingRight) - 2 * STAGE_MARGIN;
    const maxHeight = Math.max(200, window.innerHeight * 0.55);
    const size = fit(total.width, total.height, Math.max(64, inner), maxHeight);
    this.paint(total, pad, Math.min(size.scale, 4));
  }

  paint(total, pad, scale) {
    const cssWidth = Math.max(1, Math.round(total.width * scale));
    const cssHeight = Math.max(1, Math.round(total.height * scale));
    this.scale = scale;
    this.stage.style.width = `${cssWidth}px`;
    this.stage.style.height = `${cssHeight}px`;
    const ratio = window.devicePixelRatio || 1;
    const canvas = this.canvas;
    canvas.width = Math.round(cssWidth * ratio);
    canvas.height = Math.round(cssHeight * ratio);
    const ctx = canvas.getContext("2d");
    const unit = (canvas.width / total.width);
    const cell = Math.max(6, Math.round(8 * ratio));
    for (let y = 0; y < canvas.height; y += cell) {
      for (let x = 0; x < canvas.width; x += cell) {
        ctx.fillStyle = (x / cell + y / cell) % 2 ? "#c9ced8" : "#e9ecf1";
        ctx.fillRect(x, y, cell, cell);
      }
    }
    const x = pad.left * unit;
    const y = pad.top * unit;
    const w = this.source.width * unit;
    const h = this.source.height * unit;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(this.source, x, y, w, h);
    ctx.setLineDash([6 * ratio, 4 * ratio]);
    ctx.lineWidth = Math.max(1, ratio);
    ctx.strokeStyle = "#3558d6";
    ctx.strokeRect(x + 0.5, y + 0.5, Math.max(0, w - 1), Math.max(0, h - 1));
    this.canvas.setAttribute(
      "aria-label",
      `The image placed on the outpaint canvas: ${pad.left} px added on the left, ` +
        `${pad.right} right, ${pad.top} top, ${pad.bottom} bottom`,
    );
  }

  startDrag(side, event) {
    if (!this.source || event.button !== 0) {
      return;
    }
    event.preventDefault();
    this.handles[side].setPointerCapture(event.pointerId);
    this.handles[side].focus();
    this.drag = {
      side,
      x: event.clientX,
      y: event.clientY,
      start: this.shown(side),
      scale: this.scale || 1,
    };
  }

  moveDrag(event) {
    const drag = this.drag;
    if (!drag) {
      return;
    }
    const [sx, sy] = GROWS[drag.side];
    const moved = sx * (event.clientX - drag.x) + sy * (event.clientY - drag.y);
    const value = snap(drag.start + moved / drag.scale);
    if (String(value) !== this.inputs[drag.side].value) {
      this.inputs[drag.side].value = String(value);
      this.inputs[drag.side].dispatchEvent(new Event("input", { bubbles: true }));
    }
  }

  endDrag(event) {
    if (!this.drag) {
      return;
    }
    const handle = this.handles[this.drag.side];
    if (handle.hasPointerCapture(event.pointerId)) {
      handle.releasePointerCapture(event.pointerId);
    }
    this.drag = null;
    this.redraw();
    this.onChange();
  }

  key(side, event) {
    const [sx, sy] = GROWS[side];
    const step = event.shiftKey ? 64 : SNAP;
    const keys = {
      ArrowLeft: -sx,
      ArrowRight: sx,
      ArrowUp: -sy,
      ArrowDown: sy,
      PageUp: 8,
      PageDown: -8,
    };
    let value;
    if (event.key === "Home") {
      value = 0;
    } else if (event.key === "End") {
      value = MAX_SIDE;
    } else if (keys[event.key]) {
      value = snap(this.shown(side) + keys[event.key] * step);
    } else {
      return;
    }
    event.preventDefault();
    this.inputs[side].value = String(value);
    this.inputs[side].dispatchEvent(new Event("input", { bubbles: true }));
    this.onChange();
  }

  imageBlob() {
    return toPngBlob(this.source);
  }
}
