// repvit-sam serve: the page. No framework, no build step, no network beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
const els = {
  file: $("file"), sample: $("sample"), undo: $("undo"), clear: $("clear"), multimask: $("multimask"),
  everything: $("everything"), pointsPerSide: $("points-per-side"), predIou: $("pred-iou"), stability: $("stability"), useM2m: $("use-m2m"), png: $("download-png"), json: $("download-json"), candidates: $("candidates"),
  progress: $("progress"), dropzone: $("dropzone"), stage: $("stage"), hint: $("hint"),
  image: $("image"), overlay: $("overlay"), prompts: $("prompts"), status: $("status"), info: $("info"),
};

const state = {
  blob: null,          // the picture as uploaded (kept to upload again if the server forgot it)
  name: "image",
  imageId: null,
  width: 0,
  height: 0,
  history: [],         // prompts in order: {kind: "point", x, y, label} | {kind: "box", box: [x0, y0, x1, y1]}
  result: null,        // {mode: "prompt", masks, scores, selected} | {mode: "everything", masks, scores}
  seq: 0,              // request counter: only the latest prompt's answer is drawn
  busy: 0,
};

// ------------------------------------------------------------------ small helpers
function setStatus(text, isError = false) {
  els.status.textContent = text;
  els.status.classList.toggle("error", isError);
}

function setBusy(delta) {
  state.busy += delta;
  document.body.dataset.state = state.busy > 0 ? "busy" : (state.imageId ? "ready" : "idle");
}

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const res = await fetch(path, init);
  if (res.status === 204) return null;
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (!res.ok) {
    const err = new Error((data && data.detail) || `${res.status} ${res.statusText}`);
    err.status = res.status;
    throw err;
  }
  return data;
}

// COCO compressed RLE (pycocotools' string form) -> run lengths.
function rleCounts(counts) {
  const out = [];
  let p = 0;
  while (p < counts.length) {
    let x = 0, k = 0, more = true, c = 0;
    while (more) {
      c = counts.charCodeAt(p) - 48;
      x += (c & 0x1f) * Math.pow(2, 5 * k);
      more = (c & 0x20) !== 0;
      p += 1;
      k += 1;
    }
    if (c & 0x10) x -= Math.pow(2, 5 * k);  // sign bit of the last 5-bit group
    if (out.length > 2) x += out[out.length - 2];
    out.push(x);
  }
  return out;
}

// COCO RLE -> Uint8Array of H*W in row-major order (1 = object).
function decodeRle(rle) {
  const [h, w] = rle.size;
  const mask = new Uint8Array(h * w);
  const runs = rleCounts(rle.counts);
  let i = 0;
  for (let r = 0; r < runs.length; r++) {
    const n = runs[r];
    if (r % 2 === 1) {
      for (let j = i; j < i + n; j++) {  // column-major index j -> (x, y)
        const x = Math.floor(j / h), y = j - x * h;
        mask[y * w + x] = 1;
      }
    }
    i += n;
  }
  return mask;
}

function maskStats(mask, w, h) {
  let area = 0, x0 = w, y0 = h, x1 = -1, y1 = -1;
  for (let y = 0; y < h; y++) {
    const row = y * w;
    for (let x = 0; x < w; x++) {
      if (mask[row + x]) {
        area++;
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
  }
  return { area, bbox: area ? [x0, y0, x1 - x0 + 1, y1 - y0 + 1] : [0, 0, 0, 0] };
}

function palette(i) {  // distinct colours: golden-ratio hue steps
  const hue = (0.61 + i * 0.618033988749895) % 1;
  const s = [0.85, 0.6, 0.75][i % 3], v = [0.95, 0.8][i % 2];
  const f = (n) => { const k = (n + hue * 6) % 6; return Math.round(255 * (v - v * s * Math.max(0, Math.min(k, 4 - k, 1)))); };
  return [f(5), f(3), f(1)];
}

// ------------------------------------------------------------------ drawing
function fitStage() {
  if (!state.imageId && !state.width) return;
  const maxW = els.dropzone.clientWidth - 24;
  const maxH = Math.max(240, window.innerHeight - els.stage.getBoundingClientRect().top - 80);
  const scale = Math.min(1, maxW / state.width, maxH / state.height);
  for (const c of [els.image, els.overlay, els.prompts]) {
    c.style.width = `${Math.round(state.width * scale)}px`;
    c.style.height = `${Math.round(state.height * scale)}px`;
  }
}

function drawOverlay() {
  const ctx = els.overlay.getContext("2d");
  const { width: w, height: h } = state;
  ctx.clearRect(0, 0, w, h);
  const r = state.result;
  const masks = !r ? [] : r.mode === "prompt" ? [[r.masks[r.selected], [30, 144, 255]]]
    : r.masks.map((m, i) => [m, palette(i)]);
  let painted = 0;
  if (masks.length) {
    const img = ctx.createImageData(w, h);
    const px = img.data;
    for (const [rle, color] of masks) {
      const m = decodeRle(rle);
      for (let i = 0; i < m.length; i++) {
        if (!m[i]) continue;
        const o = i * 4;
        if (px[o + 3] === 0) painted++;
        px[o] = color[0]; px[o + 1] = color[1]; px[o + 2] = color[2]; px[o + 3] = 140;
      }
    }
    ctx.putImageData(img, 0, 0);
  }
  els.overlay.dataset.rendered = String(Number(els.overlay.dataset.rendered) + 1);
  els.overlay.dataset.painted = String(painted);
}

function currentPrompts() {
  const points = [];
  let box = null;
  for (const p of state.history) {
    if (p.kind === "point") points.push([p.x, p.y, p.label]);
    else box = p.box;
  }
  return { points, box };
}

function drawPrompts(dragBox) {
  const ctx = els.prompts.getContext("2d");
  const { width: w, height: h } = state;
  ctx.clearRect(0, 0, w, h);
  const long = Math.max(w, h);
  const { points, box } = currentPrompts();
  const lw = Math.max(2, long / 300);
  for (const b of [box, dragBox]) {
    if (!b) continue;
    ctx.strokeStyle = "#ffd200";
    ctx.lineWidth = lw;
    ctx.setLineDash(b === dragBox ? [lw * 3, lw * 2] : []);
    ctx.strokeRect(b[0], b[1], b[2] - b[0], b[3] - b[1]);
  }
  ctx.setLineDash([]);
  const radius = Math.max(4, long * 0.01);
  for (const [x, y, label] of points) {
    ctx.beginPath();
    ctx.arc(x, y, radius, 0, 2 * Math.PI);
    ctx.fillStyle = label === 1 ? "#00c800" : "#dc0000";
    ctx.fill();
    ctx.lineWidth = Math.max(1, radius / 4);
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  }
}

function renderCandidates() {
  els.candidates.textContent = "";
  const r = state.result;
  if (!r) return;
  if (r.mode === "everything") {
    const span = document.createElement("span");
    span.textContent = `${r.masks.length} mask${r.masks.length === 1 ? "" : "s"} found`;
    els.candidates.appendChild(span);
    return;
  }
  r.scores.forEach((score, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = r.scores.length > 1 ? `mask ${i + 1} · ${score.toFixed(2)}` : `score ${score.toFixed(2)}`;
    b.title = "predicted IoU";
    b.className = i === r.selected ? "selected" : "";
    b.dataset.index = String(i);
    b.addEventListener("click", () => { r.selected = i; renderCandidates(); drawOverlay(); });
    els.candidates.appendChild(b);
  });
}

function refreshButtons() {
  const has = !!state.imageId;
  els.undo.disabled = !state.history.length;
  els.clear.disabled = !state.history.length && !state.result;
  els.everything.disabled = !has;
  const haveMask = !!state.result && state.result.masks.length > 0;
  els.png.disabled = !haveMask;
  els.json.disabled = !haveMask;
}

// ------------------------------------------------------------------ images
async function uploadBlob(blob) {
  const form = new FormData();
  form.append("file", blob, state.name);
  return api("POST", "/api/images", form);
}

async function openImage(blob, name) {
  state.seq++;
  setBusy(+1);
  setStatus(`Uploading and embedding ${name}…`);
  const t0 = performance.now();
  try {
    const bitmapPromise = createImageBitmap(blob, { imageOrientation: "from-image" }).catch(() => null);
    state.name = name;
    const info = await uploadBlob(blob);
    const bitmap = await bitmapPromise;
    Object.assign(state, { blob, imageId: info.image_id, width: info.width, height: info.height, history: [], result: null });
    for (const c of [els.image, els.overlay, els.prompts]) { c.width = info.width; c.height = info.height; }
    const ctx = els.image.getContext("2d");
    if (bitmap && bitmap.width === info.width && bitmap.height === info.height) {
      ctx.drawImage(bitmap, 0, 0);
    } else {  // the browser cannot show this format (e.g. TIFF): draw a placeholder
      ctx.fillStyle = "#888";
      ctx.fillRect(0, 0, info.width, info.height);
    }
    els.stage.hidden = false;
    els.hint.hidden = true;
    fitStage();
    drawOverlay();
    drawPrompts();
    renderCandidates();
    setStatus(`${name}: ${info.width} × ${info.height}, embedded in ${Math.round(performance.now() - t0)} ms. Click on the image.`);
  } catch (e) {
    setStatus(`Could not open ${name}: ${e.message}`, true);
  } finally {
    setBusy(-1);
    refreshButtons();
  }
}

// Run an API call on the current image; if the server forgot it (evicted), upload it again once.
async function onImage(fn) {
  try {
    return await fn(state.imageId);
  } catch (e) {
    if (e.status !== 404 || !state.blob) throw e;
    const info = await uploadBlob(state.blob);
    state.imageId = info.image_id;
    return fn(state.imageId);
  }
}

// ------------------------------------------------------------------ prompts
async function predict() {
  const seq = ++state.seq;
  drawPrompts();
  refreshButtons();
  const { points, box } = currentPrompts();
  if (!points.length && !box) {
    state.result = null;
    drawOverlay();
    renderCandidates();
    refreshButtons();
    setStatus("No prompts.");
    return;
  }
  const body = { points, box, multimask: els.multimask.checked };
  setBusy(+1);
  const t0 = performance.now();
  try {
    const res = await onImage((id) => api("POST", `/api/images/${id}/predict`, body));
    if (seq !== state.seq) return;  // a newer prompt is on its way
    let best = 0;
    res.scores.forEach((s, i) => { if (s > res.scores[best]) best = i; });
    state.result = { mode: "prompt", masks: res.masks, scores: res.scores, selected: best };
    drawOverlay();
    renderCandidates();
    setStatus(`${points.length} point(s)${box ? " + box" : ""}: ${res.masks.length} mask(s) in ${Math.round(performance.now() - t0)} ms.`);
  } catch (e) {
    if (seq === state.seq) setStatus(`Prediction failed: ${e.message}`, true);
  } finally {
    setBusy(-1);
    refreshButtons();
  }
}

function addPrompt(p) {
  if (!state.imageId) return;
  if (state.result && state.result.mode === "everything") state.result = null;
  state.history.push(p);
  predict();
}

function toImage(ev) {
  const rect = els.prompts.getBoundingClientRect();
  const x = ((ev.clientX - rect.left) / rect.width) * state.width;
  const y = ((ev.clientY - rect.top) / rect.height) * state.height;
  return [Math.min(state.width, Math.max(0, x)), Math.min(state.height, Math.max(0, y))];
}

let drag = null;
els.prompts.addEventListener("contextmenu", (ev) => ev.preventDefault());
els.prompts.addEventListener("mousedown", (ev) => {
  if (!state.imageId) return;
  ev.preventDefault();
  drag = { button: ev.button, start: toImage(ev), sx: ev.clientX, sy: ev.clientY, moved: false };
});
window.addEventListener("mousemove", (ev) => {
  if (!drag || drag.button !== 0) return;
  if (Math.hypot(ev.clientX - drag.sx, ev.clientY - drag.sy) > 4) drag.moved = true;
  if (drag.moved) {
    const [x, y] = toImage(ev);
    const [sx, sy] = drag.start;
    drawPrompts([Math.min(sx, x), Math.min(sy, y), Math.max(sx, x), Math.max(sy, y)]);
  }
});
window.addEventListener("mouseup", (ev) => {
  if (!drag) return;
  const d = drag;
  drag = null;
  if (d.button === 0 && d.moved) {
    const [x, y] = toImage(ev);
    const [sx, sy] = d.start;
    addPrompt({ kind: "box", box: [Math.min(sx, x), Math.min(sy, y), Math.max(sx, x), Math.max(sy, y)] });
  } else if (d.button === 0 || d.button === 2) {
    const [x, y] = d.start;
    addPrompt({ kind: "point", x, y, label: d.button === 0 ? 1 : 0 });
  }
});

function undo() {
  if (!state.history.length) return;
  state.history.pop();
  predict();
}

function clearPrompts() {
  state.history = [];
  state.result = null;
  predict();
}

els.undo.addEventListener("click", undo);
els.clear.addEventListener("click", clearPrompts);
els.multimask.addEventListener("change", () => { if (state.history.length) predict(); });
window.addEventListener("keydown", (ev) => {
  if ((ev.ctrlKey || ev.metaKey) && ev.key.toLowerCase() === "z") { ev.preventDefault(); undo(); }
  else if (ev.key === "Escape") clearPrompts();
});

// ------------------------------------------------------------------ segment everything
async function segmentEverything() {
  if (!state.imageId) return;
  const seq = ++state.seq;
  state.history = [];
  drawPrompts();
  setBusy(+1);
  els.everything.disabled = true;
  els.progress.hidden = false;
  els.progress.value = 0;
  setStatus("Segmenting everything…");
  els.progress.dataset.seen = "";
  const params = {
    points_per_side: Number(els.pointsPerSide.value) || 16,
    pred_iou_thresh: Number(els.predIou.value),
    stability_score_thresh: Number(els.stability.value),
    use_m2m: els.useM2m.checked,
  };
  const t0 = performance.now();
  let running = true;
  const id = state.imageId;
  const poll = (async () => {
    while (running) {
      await new Promise((r) => setTimeout(r, 200));
      if (!running) break;
      try {
        const p = await api("GET", `/api/images/${id}/everything/progress`);
        if (p.total > 0) { els.progress.max = p.total; els.progress.value = p.done; }
        if (running) els.progress.dataset.seen += `${p.state}:${p.done}/${p.total} `;
        if (running && p.state === "running") setStatus(`Segmenting everything… ${p.done}/${p.total} batches`);
      } catch (e) { /* the main request reports errors */ }
    }
  })();
  try {
    const res = await onImage((i) => api("POST", `/api/images/${i}/everything`, params));
    if (seq === state.seq) {
      state.result = { mode: "everything", masks: res.masks, scores: res.scores };
      drawOverlay();
      renderCandidates();
      setStatus(`Segment everything: ${res.masks.length} mask(s) in ${((performance.now() - t0) / 1000).toFixed(1)} s.`);
    }
  } catch (e) {
    setStatus(`Segment everything failed: ${e.message}`, true);
  } finally {
    running = false;
    await poll;
    els.progress.hidden = true;
    setBusy(-1);
    refreshButtons();
  }
}
els.everything.addEventListener("click", segmentEverything);

// ------------------------------------------------------------------ downloads
function baseName() {
  return state.name.replace(/\.[^.]*$/, "") || "image";
}

function saveBlob(blob, filename) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

function shownMasks() {
  const r = state.result;
  if (!r) return [];
  return r.mode === "prompt" ? [{ rle: r.masks[r.selected], score: r.scores[r.selected] }]
    : r.masks.map((rle, i) => ({ rle, score: r.scores[i] }));
}

// Prompt mode: the selected mask, white on black. Everything: a label image, mask i has value i + 1
// (largest first, smaller ones on top; at most 255 masks).
function downloadPng() {
  const { width: w, height: h } = state;
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  const px = img.data;
  for (let o = 3; o < px.length; o += 4) px[o] = 255;
  const masks = shownMasks().slice(0, 255);
  masks.forEach((m, i) => {
    const value = masks.length === 1 && state.result.mode === "prompt" ? 255 : i + 1;
    const mask = decodeRle(m.rle);
    for (let j = 0; j < mask.length; j++) {
      if (mask[j]) { const o = j * 4; px[o] = px[o + 1] = px[o + 2] = value; }
    }
  });
  ctx.putImageData(img, 0, 0);
  canvas.toBlob((blob) => saveBlob(blob, `${baseName()}_mask.png`), "image/png");
}

function downloadJson() {
  const { width: w, height: h } = state;
  const { points, box } = currentPrompts();
  const annotations = shownMasks().map((m, i) => {
    const stats = maskStats(decodeRle(m.rle), w, h);
    return {
      id: i + 1, image_id: 1, category_id: 1, iscrowd: 0,
      segmentation: m.rle, area: stats.area, bbox: stats.bbox, score: m.score,
    };
  });
  const doc = {
    info: { description: "repvit-sam serve", mode: state.result.mode, prompts: { points, box } },
    images: [{ id: 1, file_name: state.name, width: w, height: h }],
    categories: [{ id: 1, name: "object" }],
    annotations,
  };
  saveBlob(new Blob([JSON.stringify(doc, null, 1)], { type: "application/json" }), `${baseName()}_coco.json`);
}
els.png.addEventListener("click", downloadPng);
els.json.addEventListener("click", downloadJson);

// ------------------------------------------------------------------ opening files
els.file.addEventListener("change", () => {
  const f = els.file.files && els.file.files[0];
  if (f) openImage(f, f.name);
  els.file.value = "";
});
els.sample.addEventListener("change", async () => {
  const name = els.sample.value;
  els.sample.value = "";
  if (!name) return;
  try {
    const res = await fetch(`/api/samples/${encodeURIComponent(name)}`);
    if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
    await openImage(await res.blob(), `${name}.png`);
  } catch (e) {
    setStatus(`Could not load sample ${name}: ${e.message}`, true);
  }
});
for (const type of ["dragenter", "dragover"]) {
  els.dropzone.addEventListener(type, (ev) => { ev.preventDefault(); els.dropzone.classList.add("dragover"); });
}
for (const type of ["dragleave", "drop"]) {
  els.dropzone.addEventListener(type, () => els.dropzone.classList.remove("dragover"));
}
els.dropzone.addEventListener("drop", (ev) => {
  ev.preventDefault();
  const f = ev.dataTransfer && ev.dataTransfer.files && ev.dataTransfer.files[0];
  if (f) openImage(f, f.name);
});
window.addEventListener("resize", fitStage);

// ------------------------------------------------------------------ start
(async () => {
  try {
    const info = await api("GET", "/api/info");
    for (const name of info.samples) {
      const o = document.createElement("option");
      o.value = name;
      o.textContent = name;
      els.sample.appendChild(o);
    }
    els.info.textContent = `model ${info.model}${info.backend ? ` (${info.backend})` : ""} · input ${info.img_size} px · `
      + `uploads up to ${(info.max_upload_bytes / 1048576).toFixed(0)} MiB and ${(info.max_pixels / 1e6).toFixed(0)} Mpx · `
      + `API: /docs`;
  } catch (e) {
    setStatus(`Server not reachable: ${e.message}`, true);
  }
  document.body.dataset.state = "idle";
  refreshButtons();
})();
