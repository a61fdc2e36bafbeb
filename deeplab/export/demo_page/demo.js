// The demo page of python -m deeplab.serve: plain JavaScript, no library, nothing from elsewhere.
// The photo goes to POST /v1/segment as its bytes; the answer's label map (a palette PNG whose
// palette holds the classes' colours) is drawn as the colour map and blended over the photo.
"use strict";

const ALPHA = 0.6; // opacity of the class colours in the overlay (as deeplab.predict's default)
const state = { model: null, result: null, views: null, view: "overlay", busy: false };

const $ = (selector) => document.querySelector(selector);

function setStatus(text, kind) {
  const status = $("#status");
  status.textContent = text;
  status.className = "status" + (kind ? " " + kind : "");
}

function percent(share) {
  const value = 100 * share;
  return (value >= 10 ? value.toFixed(1) : value.toFixed(2)) + "%";
}

function rgb(color) {
  return `rgb(${color[0]}, ${color[1]}, ${color[2]})`;
}

async function loadModel() {
  const response = await fetch("/v1/model");
  const model = await response.json();
  if (!response.ok) throw new Error(model.message || "the model did not answer");
  state.model = model;
  $("#model-summary").textContent = model.summary;
  const limits = model.limits;
  $("#limits").textContent =
    `Up to ${(limits.max_request_bytes / 1048576).toFixed(0)} MiB and ` +
    `${(limits.max_pixels / 1e6).toFixed(1)} M pixels per photo.`;
  showCard(model);
  const samples = $("#samples");
  for (const url of model.samples) {
    const button = document.createElement("button");
    button.type = "button";
    const name = url.split("/").pop().replace(/\.[a-z]+$/, "").replace(/_/g, " ");
    button.title = `Sample: ${name}`;
    button.dataset.sample = url;
    const image = document.createElement("img");
    image.src = url;
    image.alt = name;
    button.appendChild(image);
    button.addEventListener("click", () => segmentUrl(url, name));
    samples.appendChild(button);
  }
  document.body.dataset.state = "idle";
}

function showCard(model) {
  const card = model.card || {};
  const arch = card.architecture || {};
  const fields = [
    ["Name", card.name || model.name],
    ["Kind", card.kind || model.kind],
    ["Backbone", arch.backbone ? `${arch.backbone}, output stride ${arch.output_stride}` : null],
    ["Parameters", arch.parameters ? arch.parameters.toLocaleString("en") : null],
    ["Classes", model.classes.map((c) => c.name).join(", ")],
    ["Evaluation", card.evaluation
      ? `mIOU ${(100 * card.evaluation.miou).toFixed(2)}% on ` +
        `${card.evaluation.dataset}:${card.evaluation.split} (${card.evaluation.images} images)`
      : "not evaluated"],
  ];
  const list = $("#card-fields");
  for (const [key, value] of fields) {
    if (value === null || value === undefined) continue;
    const term = document.createElement("dt");
    term.textContent = key;
    const text = document.createElement("dd");
    text.textContent = String(value);
    list.append(term, text);
  }
  for (const limit of card.limits || []) {
    const item = document.createElement("li");
    item.textContent = limit;
    $("#card-limits").appendChild(item);
  }
}

async function segmentUrl(url, name) {
  const response = await fetch(url);
  segmentBlob(await response.blob(), name);
}

function base64Blob(text, type) {
  const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type });
}

// The three pictures of one answer as ImageData: photo, colour map, overlay.
function makeViews(photo, labelBitmap, result) {
  const width = result.width;
  const height = result.height;
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(labelBitmap, 0, 0, width, height);
  const colors = context.getImageData(0, 0, width, height);
  context.clearRect(0, 0, width, height);
  context.drawImage(photo, 0, 0, width, height);
  const photoData = context.getImageData(0, 0, width, height);

  // Colour -> class index (the palette PNG's colours are the classes' colours).
  const byColor = new Map();
  for (const c of state.model.classes) {
    const key = (c.color[0] << 16) | (c.color[1] << 8) | c.color[2];
    if (!byColor.has(key)) byColor.set(key, c.index);
  }
  const count = width * height;
  const index = new Int32Array(count);
  const px = colors.data;
  for (let i = 0; i < count; i++) {
    const key = (px[4 * i] << 16) | (px[4 * i + 1] << 8) | px[4 * i + 2];
    const found = byColor.get(key);
    index[i] = found === undefined ? -1 : found;
  }
  const background = result.background;
  const overlay = new ImageData(new Uint8ClampedArray(photoData.data), width, height);
  const out = overlay.data;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      const cls = index[i];
      if (cls < 0 || cls === background) continue;
      const p = 4 * i;
      const edge =
        (x > 0 && index[i - 1] !== cls) || (x + 1 < width && index[i + 1] !== cls) ||
        (y > 0 && index[i - width] !== cls) || (y + 1 < height && index[i + width] !== cls);
      for (let k = 0; k < 3; k++) {
        out[p + k] = edge ? px[p + k] * 0.45 : (1 - ALPHA) * out[p + k] + ALPHA * px[p + k];
      }
    }
  }
  return { photo: photoData, colors, overlay };
}

function render() {
  const canvas = $("#view-canvas");
  for (const button of document.querySelectorAll("#view-switch button")) {
    button.setAttribute("aria-pressed", String(button.dataset.view === state.view));
    button.disabled = !state.views;
  }
  if (!state.views) return;
  const data = state.views[state.view];
  canvas.width = data.width;
  canvas.height = data.height;
  canvas.getContext("2d").putImageData(data, 0, 0);
  canvas.classList.toggle("small", data.width < 320); // enlarged: show the pixels as pixels
  canvas.dataset.view = state.view;
  canvas.hidden = false;
  $("#placeholder").hidden = true;
}

function showLegend(result) {
  const legend = $("#legend");
  legend.replaceChildren();
  for (const c of result.classes) {
    const item = document.createElement("li");
    item.dataset.index = c.index;
    if (c.index === result.background) item.classList.add("unpainted");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = rgb(c.color);
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = c.name;
    const share = document.createElement("span");
    share.className = "share";
    share.textContent = percent(c.share);
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("div");
    fill.style.width = Math.max(0.5, 100 * c.share).toFixed(2) + "%";
    fill.style.background = rgb(c.color);
    bar.appendChild(fill);
    item.append(swatch, name, share, bar);
    legend.appendChild(item);
  }
  $("#legend-title").hidden = result.classes.length === 0;
  const t = result.timings_ms;
  $("#timings").innerHTML = "";
  const model = document.createElement("strong");
  model.textContent = `model ${t.model.toFixed(0)} ms`;
  $("#timings").append(
    model,
    ` · decode ${t.decode.toFixed(0)} ms · server total ${t.total.toFixed(0)} ms · ` +
      `${result.width}×${result.height} ${result.format.toUpperCase()}`
  );
}

async function segmentBlob(blob, name) {
  if (state.busy) return;
  state.busy = true;
  document.body.dataset.state = "busy";
  setStatus(`Segmenting ${name}…`, "busy");
  try {
    const response = await fetch("/v1/segment", { method: "POST", body: blob });
    const result = await response.json();
    if (!response.ok) {
      throw new Error(result.message || `the server answered ${response.status}`);
    }
    const photo = await createImageBitmap(blob, { imageOrientation: "from-image" });
    const labels = await createImageBitmap(base64Blob(result.label_map_png, "image/png"), {
      colorSpaceConversion: "none",
      premultiplyAlpha: "none",
    });
    state.result = result;
    state.views = makeViews(photo, labels, result);
    render();
    showLegend(result);
    const notes = result.notes.length ? ` (${result.notes.join("; ")})` : "";
    setStatus(`${name}: ${result.classes.length} classes found${notes}.`);
    document.body.dataset.image = name;
    document.body.dataset.state = "ready";
    document.dispatchEvent(new CustomEvent("segmented", { detail: result }));
  } catch (error) {
    setStatus(`Could not segment ${name}: ${error.message}`, "error");
    document.body.dataset.state = "error";
  } finally {
    state.busy = false;
  }
}

function setUp() {
  const input = $("#file-input");
  input.addEventListener("change", () => {
    if (input.files.length) segmentBlob(input.files[0], input.files[0].name);
    input.value = "";
  });
  const zone = $("#drop-zone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) segmentBlob(file, file.name);
  });
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      input.click();
    }
  });
  for (const button of document.querySelectorAll("#view-switch button")) {
    button.addEventListener("click", () => {
      state.view = button.dataset.view;
      render();
    });
  }
  render();
  loadModel().catch((error) => {
    $("#model-summary").textContent = `The model did not answer: ${error.message}`;
    document.body.dataset.state = "error";
  });
}

setUp();
