// The img2img input: one image, shown scaled to fit its frame and sent as a PNG of its own
// size (the service returns images of that size).

import { toPngBlob } from "./images.js";

export class ImagePicker {
  constructor({ empty, canvas, sizeLabel }) {
    Object.assign(this, { empty, canvas, sizeLabel });
    this.source = null;
  }

  get hasImage() {
    return this.source !== null;
  }

  load(canvas) {
    this.source = canvas;
    const { width, height } = canvas;
    this.canvas.width = width;
    this.canvas.height = height;
    this.canvas.getContext("2d").drawImage(canvas, 0, 0);
    this.canvas.setAttribute("aria-label", `The image to start from, ${width}×${height}`);
    this.canvas.hidden = false;
    this.empty.hidden = true;
    this.sizeLabel.textContent = `Image ${width}×${height}: the result has this size.`;
  }

  imageBlob() {
    return toPngBlob(this.source);
  }
}
