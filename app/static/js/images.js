// Image helpers: decode a file or blob into a canvas, and encode canvases as PNG.

export const MAX_SIDE = 2048;

export function canvasOf(width, height) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  return canvas;
}

// Decodes a blob as the browser displays it (EXIF orientation applied) into a canvas, so
// that the image sent and the mask painted over it are the same pixels at the same size.
export async function decodeToCanvas(blob) {
  const url = URL.createObjectURL(blob);
  try {
    const image = new Image();
    image.src = url;
    try {
      await image.decode();
    } catch {
      throw new Error("This file is not an image the browser can read (use PNG, JPEG or WebP).");
    }
    const canvas = canvasOf(image.naturalWidth, image.naturalHeight);
    canvas.getContext("2d").drawImage(image, 0, 0);
    return canvas;
  } finally {
    URL.revokeObjectURL(url);
  }
}

export function toPngBlob(canvas) {
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => {
      if (blob) {
        resolve(blob);
      } else {
        reject(new Error("The browser could not encode the image."));
      }
    }, "image/png");
  });
}

// Fits a width x height box into maxWidth x maxHeight, scaling up or down.
export function fit(width, height, maxWidth, maxHeight) {
  const scale = Math.min(maxWidth / width, maxHeight / height);
  return { width: Math.max(1, Math.floor(width * scale)), height: Math.max(1, Math.floor(height * scale)), scale };
}

export function firstImageFile(dataTransfer) {
  for (const file of dataTransfer?.files || []) {
    if (file.type.startsWith("image/")) {
      return file;
    }
  }
  return null;
}
