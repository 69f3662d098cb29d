// spadegan paint: the painting page logic. Dependency-free; talks to /api/info and /api/synthesize.
//
// Design notes
// * The truth is `state.ids`, a Uint8Array (Uint16Array if label_nc > 256) of class ids at
//   the model resolution. The visible canvas is only a rendering of it in palette colours,
//   so anti-aliasing or colour management can never leak invented ids into the label map.
// * Labels are sent as a real grayscale PNG (8-bit, or 16-bit for > 256 classes) built by a
//   tiny encoder below, because canvas.toBlob() always produces RGBA PNGs.
// * At most one synthesis request is in flight; edits during it mark the label dirty and a
//   new request goes out when it returns ("latest wins"), so fast painting never floods
//   the server's bounded queue.
// * Models conditioned on a label *image* (--label_nc 0; /api/info says label_kind "image"
//   and input_nc 1 or 3) get a free colour brush (a grey one for 1-channel models) instead
//   of the class palette: `state.ids` is then a Uint32Array of packed 0xRRGGBB colours, which
//   the same brush, fill, eraser (background colour) and undo code paint, and the label is
//   sent as an 8-bit grey or RGB PNG of those pixels.
// * window.spadegan exposes state and counters for debugging and the browser test.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const DEBOUNCE_MS = 400;
  // Stroke previews: while drawing, a preview at most every PREVIEW_MS; FINAL_MS after the
  // last preview without a new stroke, the exact image (form field final=1) replaces it.
  const PREVIEW_MS = 80;
  const FINAL_MS = 250;
  const MAX_HISTORY = 50;
  const MAX_UPLOAD_PIXELS = 4096 * 4096;

  const state = {
    info: null,
    W: 0,
    H: 0,
    kind: "classes",    // or "image": a label image of `channels` channels (packed colours in `ids`)
    channels: 0,
    ids: null,          // Uint8Array | Uint16Array (label images: Uint32Array of 0xRRGGBB), length W*H
    colors: null,       // Uint8Array, 3 bytes per id
    classById: new Map(),
    current: 0,         // selected class id (label images: the brush colour)
    background: 0,      // the eraser's class id (label images: the background colour)
    tool: "brush",
    size: 16,
    undo: [],
    redo: [],
    stroke: null,       // {x, y, id} while the pointer is down
    seed: null,         // null -> let the server pick (and report it via X-Seed)
    regionSeeds: {},    // {class id: seed}: classes re-rolled on their own (info.region_seeds models)
    styleFile: null,
    inflight: false,
    dirty: false,
    timer: null,
    previewTimer: null,
    finalTimer: null,
    // this page's painter id: the server keeps its last full pass to answer strokes with previews
    painter: Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, "0")).join(""),
    resultUrl: null,
    scale: 1,
    image: null,        // ImageData backing the label canvas
  };

  const debug = {
    ready: false,
    info: null,
    requestsSent: 0,
    responses: 0,
    errors: 0,
    imageVersion: 0,     // bumps each time a new synthesized image has been displayed
    lastError: null,
    lastSeed: null,
    lastSentLabel: null, // {width, height, counts: {id: pixels}, seed}
    previews: 0,         // images shown that were stroke previews (X-Preview: 1)
    finals: 0,           // exact images shown after previews or full passes (X-Preview: 0)
    showingPreview: false,
    lastReason: null,    // X-Paint-Reason of the last full pass
    get painter() { return state.painter; },
    get ids() { return state.ids; },
    get tool() { return state.tool; },
    get currentClass() { return state.current; },
    get kind() { return state.kind; },
    get background() { return state.background; },
    idCounts: () => countIds(state.ids),
    selectClass: (id) => selectClass(id),
    setTool: (t) => setTool(t),
    setBrushSize: (n) => setBrushSize(n),
    generate: () => generate(),
    undo: () => undo(),
    redo: () => redo(),
  };
  window.spadegan = debug;

  // ------------------------------------------------------------------ status + helpers
  function setStatus(text, isError = false) {
    const el = $("status");
    el.textContent = text;
    el.classList.toggle("error", isError);
  }

  function normaliseName(name) {
    let n = name.trim().toLowerCase();
    for (const s of ["-other", "-merged", "-stuff", " other"]) if (n.endsWith(s)) n = n.slice(0, -s.length);
    return n;
  }

  function findClass(names) {
    for (const want of names) {
      for (const c of state.info.classes) if (normaliseName(c.name) === want) return c.id;
    }
    return null;
  }

  // Deterministic colour for ids without a palette entry (golden-angle hue walk).
  function fallbackColor(id) {
    const h = (id * 137.508) % 360, s = 0.55, l = 0.5;
    const f = (n) => {
      const k = (n + h / 30) % 12;
      return Math.round(255 * (l - s * Math.min(l, 1 - l) * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
    };
    return [f(0), f(8), f(4)];
  }

  function colorOf(id) {
    return [state.colors[3 * id], state.colors[3 * id + 1], state.colors[3 * id + 2]];
  }

  function className(id) {
    const c = state.classById.get(id);
    return c ? c.name : `class ${id}`;
  }

  function countIds(ids) {
    const counts = {};
    for (let i = 0; i < ids.length; i++) counts[ids[i]] = (counts[ids[i]] || 0) + 1;
    return counts;
  }

  // ------------------------------------------------------------------ PNG encoder
  const CRC_TABLE = (() => {
    const t = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      t[n] = c >>> 0;
    }
    return t;
  })();

  function crc32(bytes) {
    let c = 0xffffffff;
    for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  }

  function adler32(bytes) {
    let a = 1, b = 0;
    for (let i = 0; i < bytes.length; ) {
      const end = Math.min(i + 5552, bytes.length); // largest run without 32-bit overflow
      for (; i < end; i++) { a += bytes[i]; b += a; }
      a %= 65521; b %= 65521;
    }
    return ((b << 16) | a) >>> 0;
  }

  async function zlibCompress(raw) {
    if (typeof CompressionStream === "function") {
      // "deflate" is the zlib (RFC 1950) format, exactly what PNG's IDAT wants.
      const stream = new Blob([raw]).stream().pipeThrough(new CompressionStream("deflate"));
      return new Uint8Array(await new Response(stream).arrayBuffer());
    }
    // Fallback: zlib stream of uncompressed ("stored") deflate blocks.
    const nBlocks = Math.max(1, Math.ceil(raw.length / 65535));
    const out = new Uint8Array(2 + raw.length + nBlocks * 5 + 4);
    out[0] = 0x78; out[1] = 0x01;
    let o = 2;
    for (let b = 0; b < nBlocks; b++) {
      const start = b * 65535, len = Math.min(65535, raw.length - start);
      out[o++] = b === nBlocks - 1 ? 1 : 0;
      out[o++] = len & 0xff; out[o++] = len >>> 8;
      out[o++] = ~len & 0xff; out[o++] = (~len >>> 8) & 0xff;
      out.set(raw.subarray(start, start + len), o); o += len;
    }
    const ad = adler32(raw);
    out[o++] = ad >>> 24; out[o++] = (ad >>> 16) & 0xff; out[o++] = (ad >>> 8) & 0xff; out[o++] = ad & 0xff;
    return out;
  }

  function pngChunk(type, data) {
    const out = new Uint8Array(12 + data.length);
    const dv = new DataView(out.buffer);
    dv.setUint32(0, data.length);
    for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
    out.set(data, 8);
    dv.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
    return out;
  }

  // The label as a PNG: grayscale whose gray value is the class id (8-bit, or 16-bit when ids
  // may exceed 255); for label images the pixels themselves, 8-bit gray or RGB.
  async function encodeLabelPng(ids, w, h) {
    const image = state.kind === "image";
    const sixteen = ids instanceof Uint16Array;
    const bpp = image ? state.channels : sixteen ? 2 : 1;
    const stride = 1 + w * bpp;
    const raw = new Uint8Array(h * stride); // filter byte 0 (None) per row
    for (let y = 0; y < h; y++) {
      const row = y * stride + 1, src = y * w;
      if (image && bpp === 3) {
        for (let x = 0; x < w; x++) {
          const v = ids[src + x], o = row + 3 * x;
          raw[o] = (v >>> 16) & 0xff; raw[o + 1] = (v >>> 8) & 0xff; raw[o + 2] = v & 0xff;
        }
      } else if (image) {
        for (let x = 0; x < w; x++) raw[row + x] = ids[src + x] & 0xff;
      } else if (sixteen) {
        for (let x = 0; x < w; x++) { const v = ids[src + x]; raw[row + 2 * x] = v >>> 8; raw[row + 2 * x + 1] = v & 0xff; }
      } else {
        raw.set(ids.subarray(src, src + w), row);
      }
    }
    const ihdr = new Uint8Array(13);
    const dv = new DataView(ihdr.buffer);
    dv.setUint32(0, w); dv.setUint32(4, h);
    ihdr[8] = sixteen && !image ? 16 : 8;
    ihdr[9] = bpp === 3 && image ? 2 : 0; // colour type 0 = grayscale, 2 = RGB
    const sig = Uint8Array.of(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a);
    const parts = [sig, pngChunk("IHDR", ihdr), pngChunk("IDAT", await zlibCompress(raw)), pngChunk("IEND", new Uint8Array(0))];
    return new Blob(parts, { type: "image/png" });
  }

  // ------------------------------------------------------------------ canvas rendering
  const canvas = $("label-canvas");
  const ctx = canvas.getContext("2d");

  function render(x0 = 0, y0 = 0, x1 = state.W, y1 = state.H) {
    x0 = Math.max(0, x0 | 0); y0 = Math.max(0, y0 | 0);
    x1 = Math.min(state.W, Math.ceil(x1)); y1 = Math.min(state.H, Math.ceil(y1));
    if (x1 <= x0 || y1 <= y0) return;
    const px = state.image.data, ids = state.ids, col = state.colors, W = state.W;
    const image = state.kind === "image";
    for (let y = y0; y < y1; y++) {
      for (let x = x0; x < x1; x++) {
        const i = y * W + x, o = 4 * i;
        if (image) {
          const v = ids[i];
          px[o] = (v >>> 16) & 0xff; px[o + 1] = (v >>> 8) & 0xff; px[o + 2] = v & 0xff;
        } else {
          const c = 3 * ids[i];
          px[o] = col[c]; px[o + 1] = col[c + 1]; px[o + 2] = col[c + 2];
        }
        px[o + 3] = 255;
      }
    }
    ctx.putImageData(state.image, 0, 0, x0, y0, x1 - x0, y1 - y0);
  }

  // Fit both panels into the window at the model's aspect ratio.
  function layout() {
    if (!state.info) return;
    const stage = $("stage");
    const availW = stage.clientWidth;
    const top = stage.getBoundingClientRect().top;
    const bottomBar = document.querySelector(".toolbar.bottom").offsetHeight;
    const availH = window.innerHeight - top - bottomBar - 52; // captions + gaps
    // Side by side, or stacked when that shows the images larger (wide models, narrow windows).
    const side = Math.min((availW - 16) / 2 / state.W, availH / state.H);
    const stacked = Math.min(availW / state.W, Math.max(120, (availH - 40) / 2) / state.H);
    const stack = window.innerWidth <= 860 || stacked > side * 1.15;
    stage.classList.toggle("stacked", stack);
    // Show the model's own pixels at 1x or a clean 2x, never a blurry fractional stretch;
    // shrink (fractionally) only when even 1x does not fit.
    const fit = Math.max(0.1, stack ? stacked : side);
    const scale = fit >= 2 ? 2 : fit >= 1 ? 1 : fit;
    state.scale = scale;
    const w = Math.floor(state.W * scale) + "px", h = Math.floor(state.H * scale) + "px";
    // Size the frames (not the canvas) so both panels match exactly, borders included.
    for (const el of [$("canvas-wrap"), $("result-wrap")]) { el.style.width = w; el.style.height = h; }
    updateCursorSize();
  }

  // ------------------------------------------------------------------ history
  function pushUndo() {
    state.undo.push(state.ids.slice());
    if (state.undo.length > MAX_HISTORY) state.undo.shift();
    state.redo.length = 0;
    updateHistoryButtons();
  }

  function restore(from, to) {
    if (!from.length) return;
    to.push(state.ids.slice());
    state.ids.set(from.pop());
    render();
    updateHistoryButtons();
    scheduleGenerate();
  }
  const undo = () => restore(state.undo, state.redo);
  const redo = () => restore(state.redo, state.undo);

  function updateHistoryButtons() {
    $("undo").disabled = state.undo.length === 0;
    $("redo").disabled = state.redo.length === 0;
  }

  // ------------------------------------------------------------------ tools
  function paintDisc(cx, cy, id) {
    const r = state.size / 2, r2 = r * r, W = state.W, H = state.H, ids = state.ids;
    const x0 = Math.max(0, Math.floor(cx - r)), x1 = Math.min(W, Math.ceil(cx + r));
    const y0 = Math.max(0, Math.floor(cy - r)), y1 = Math.min(H, Math.ceil(cy + r));
    for (let y = y0; y < y1; y++) {
      const dy = y + 0.5 - cy;
      for (let x = x0; x < x1; x++) {
        const dx = x + 0.5 - cx;
        if (dx * dx + dy * dy <= r2) ids[y * W + x] = id;
      }
    }
    // A 1-px brush must always hit the pixel under the pointer.
    const px = Math.floor(cx), py = Math.floor(cy);
    if (px >= 0 && py >= 0 && px < W && py < H) ids[py * W + px] = id;
    render(x0, y0, x1, y1);
  }

  function paintLine(x0, y0, x1, y1, id) {
    const dist = Math.hypot(x1 - x0, y1 - y0);
    const step = Math.max(0.5, state.size / 4);
    const n = Math.max(1, Math.ceil(dist / step));
    for (let i = 1; i <= n; i++) paintDisc(x0 + ((x1 - x0) * i) / n, y0 + ((y1 - y0) * i) / n, id);
  }

  // Scanline flood fill (4-connected) on the id buffer.
  function floodFill(sx, sy, id) {
    const W = state.W, H = state.H, ids = state.ids;
    const target = ids[sy * W + sx];
    if (target === id) return false;
    const stack = [sx, sy];
    while (stack.length) {
      const y = stack.pop(), x0 = stack.pop();
      let x = x0;
      while (x > 0 && ids[y * W + x - 1] === target) x--;
      let above = false, below = false;
      for (; x < W && ids[y * W + x] === target; x++) {
        ids[y * W + x] = id;
        if (y > 0) {
          const t = ids[(y - 1) * W + x] === target;
          if (t && !above) stack.push(x, y - 1);
          above = t;
        }
        if (y < H - 1) {
          const t = ids[(y + 1) * W + x] === target;
          if (t && !below) stack.push(x, y + 1);
          below = t;
        }
      }
    }
    render();
    return true;
  }

  function toModel(ev) {
    const r = canvas.getBoundingClientRect();
    return { x: ((ev.clientX - r.left) * state.W) / r.width, y: ((ev.clientY - r.top) * state.H) / r.height };
  }

  function activeId() {
    return state.tool === "eraser" ? state.background : state.current;
  }

  canvas.addEventListener("pointerdown", (ev) => {
    if (!state.ids || ev.button !== 0) return;
    ev.preventDefault();
    const p = toModel(ev);
    if (state.tool === "fill") {
      const x = Math.floor(p.x), y = Math.floor(p.y);
      if (x < 0 || y < 0 || x >= state.W || y >= state.H) return;
      const before = state.ids.slice();
      if (floodFill(x, y, state.current)) {
        state.undo.push(before); state.redo.length = 0;
        if (state.undo.length > MAX_HISTORY) state.undo.shift();
        updateHistoryButtons();
        scheduleGenerate();
      }
      return;
    }
    canvas.setPointerCapture(ev.pointerId);
    clearTimeout(state.finalTimer);
    pushUndo();
    state.stroke = { x: p.x, y: p.y, id: activeId() };
    paintDisc(p.x, p.y, state.stroke.id);
  });

  canvas.addEventListener("pointermove", (ev) => {
    moveCursor(ev);
    if (!state.stroke) return;
    // Coalesced events keep fast strokes smooth without extra work per frame.
    const events = ev.getCoalescedEvents ? ev.getCoalescedEvents() : [ev];
    for (const e of events.length ? events : [ev]) {
      const p = toModel(e);
      paintLine(state.stroke.x, state.stroke.y, p.x, p.y, state.stroke.id);
      state.stroke.x = p.x; state.stroke.y = p.y;
    }
    if (state.info.previews && !state.previewTimer) {  // see the image change while drawing
      state.previewTimer = setTimeout(() => { state.previewTimer = null; generate(false); }, PREVIEW_MS);
    }
  });

  function endStroke() {
    if (!state.stroke) return;
    state.stroke = null;
    scheduleGenerate(state.info.previews ? PREVIEW_MS : DEBOUNCE_MS);
  }
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);
  canvas.addEventListener("lostpointercapture", endStroke);

  // Brush outline that follows the pointer, sized in display pixels.
  const cursor = $("brush-cursor");
  function moveCursor(ev) {
    if (state.tool === "fill") { cursor.hidden = true; return; }
    const r = canvas.getBoundingClientRect();
    cursor.hidden = false;
    cursor.style.left = ev.clientX - r.left + "px";
    cursor.style.top = ev.clientY - r.top + "px";
  }
  function updateCursorSize() {
    const d = Math.max(3, state.size * state.scale) + "px";
    cursor.style.width = d; cursor.style.height = d;
  }
  canvas.addEventListener("pointerleave", () => { cursor.hidden = true; });

  function setTool(tool) {
    if (!["brush", "fill", "eraser"].includes(tool)) return;
    state.tool = tool;
    for (const b of document.querySelectorAll(".tool")) b.setAttribute("aria-pressed", String(b.dataset.tool === tool));
    canvas.style.cursor = tool === "fill" ? "cell" : "crosshair";
  }

  function setBrushSize(n) {
    const input = $("brush-size");
    n = Math.max(Number(input.min), Math.min(Number(input.max), Math.round(n)));
    state.size = n;
    input.value = String(n);
    $("brush-size-value").textContent = String(n);
    updateCursorSize();
  }

  function clearLabel() {
    pushUndo();
    state.ids.fill(state.background);
    render();
    scheduleGenerate();
  }

  // ------------------------------------------------------------------ palette
  function makeSwatch(c, compact) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "swatch";
    b.dataset.id = String(c.id);
    b.dataset.name = c.name.toLowerCase();
    b.setAttribute("role", "option");
    b.title = `${c.name} (id ${c.id})`;
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.style.background = `rgb(${c.color.join(",")})`;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = c.name;
    b.append(chip, name);
    if (!compact) {
      const id = document.createElement("span");
      id.className = "id";
      id.textContent = String(c.id);
      b.append(id);
    }
    b.addEventListener("click", () => selectClass(c.id));
    return b;
  }

  function buildPalette() {
    const common = $("common-classes"), all = $("all-classes");
    common.replaceChildren(); all.replaceChildren();
    for (const id of state.info.common) common.append(makeSwatch(state.classById.get(id), true));
    const sorted = [...state.info.classes].sort((a, b) => a.name.localeCompare(b.name));
    for (const c of sorted) all.append(makeSwatch(c, false));
    const hasCommon = state.info.common.length > 0;
    $("common-heading").hidden = !hasCommon;
    common.hidden = !hasCommon;
  }

  function filterPalette(query) {
    const q = query.trim().toLowerCase();
    let shown = 0;
    for (const b of document.querySelectorAll(".swatch")) {
      const match = !q || b.dataset.name.includes(q) || b.dataset.id === q;
      b.hidden = !match;
      if (match && b.parentElement.id === "all-classes") shown++;
    }
    $("no-match").hidden = shown > 0;
    const commonVisible = [...$("common-classes").children].some((b) => !b.hidden);
    $("common-heading").hidden = !commonVisible;
  }

  function selectClass(id) {
    id = Number(id);
    if (!Number.isInteger(id) || id < 0 || id >= state.info.label_nc) return;
    state.current = id;
    if (state.tool === "eraser") setTool("brush"); // picking a colour means "paint with it"
    for (const b of document.querySelectorAll(".swatch")) {
      const sel = Number(b.dataset.id) === id;
      b.classList.toggle("selected", sel);
      b.setAttribute("aria-selected", String(sel));
    }
    const cur = $("current-class");
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.style.background = `rgb(${colorOf(id).join(",")})`;
    const label = document.createElement("span");
    label.textContent = className(id);
    cur.replaceChildren(chip, label);
  }

  // ------------------------------------------------------------------ free colours (label images)
  const packGrey = (g) => ((g << 16) | (g << 8) | g) >>> 0;
  const packHex = (hex) => parseInt(hex.slice(1), 16) >>> 0;
  const hexOf = (v) => "#" + v.toString(16).padStart(6, "0");

  // which: "brush" | "background"; value: packed 0xRRGGBB (1-channel models keep R = G = B)
  function setColour(which, value) {
    value = state.channels === 1 ? packGrey(value & 0xff) : value >>> 0;
    if (which === "brush") {
      state.current = value;
      if (state.tool === "eraser") setTool("brush"); // picking a colour means "paint with it"
    } else {
      state.background = value;
    }
    $(`${which}-colour`).value = hexOf(value);
    $(`${which}-grey`).value = String(value & 0xff);
    $(`${which}-grey-value`).textContent = String(value & 0xff);
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.style.background = hexOf(state.current);
    const label = document.createElement("span");
    label.textContent = state.channels === 1 ? `grey ${state.current & 0xff}` : hexOf(state.current);
    $("current-colour").replaceChildren(chip, label);
  }

  function setupColours() {
    for (const id of ["class-search", "current-class", "common-heading", "common-classes", "all-heading", "all-classes"]) {
      $(id).hidden = true;
    }
    $("colour-controls").hidden = false;
    for (const el of document.querySelectorAll(".colours .pick")) el.hidden = Number(el.dataset.channels) !== state.channels;
    $("colour-note").textContent = state.channels === 1
      ? "This model reads a greyscale label image (edges, a sketch, depth): paint with any grey."
      : "This model reads an RGB label image (a sketch, a colour layout): paint with any colour.";
    document.querySelector(".tool[data-tool='eraser']").title = "Eraser: paints the background colour (E)";
    $("clear").title = "Fill everything with the background colour";
    $("load-label").title = `Load a label image (${state.channels === 1 ? "greyscale" : "RGB"} PNG)`;
    $("download-label").title = "Save the label image as a PNG";
    const grey = state.channels === 1;
    setColour("background", grey ? packGrey(Number($("background-grey").value)) : packHex($("background-colour").value));
    setColour("brush", grey ? packGrey(Number($("brush-grey").value)) : packHex($("brush-colour").value));
    $("brush-colour").addEventListener("input", (e) => setColour("brush", packHex(e.target.value)));
    $("background-colour").addEventListener("input", (e) => setColour("background", packHex(e.target.value)));
    $("brush-grey").addEventListener("input", (e) => setColour("brush", packGrey(Number(e.target.value))));
    $("background-grey").addEventListener("input", (e) => setColour("background", packGrey(Number(e.target.value))));
  }

  // A loaded label image at the model size (the browser's smooth scaling), as packed colours.
  function imageValues(bmp, name) {
    const c = document.createElement("canvas");
    c.width = state.W; c.height = state.H;
    const cx = c.getContext("2d", { willReadFrequently: true });
    cx.imageSmoothingQuality = "high";
    cx.drawImage(bmp, 0, 0, state.W, state.H);
    const px = cx.getImageData(0, 0, state.W, state.H).data;
    const out = new Uint32Array(state.W * state.H);
    for (let i = 0; i < out.length; i++) {
      const r = px[4 * i], g = px[4 * i + 1], b = px[4 * i + 2];
      if (state.channels === 1 && (r !== g || g !== b)) {
        throw new Error(`${name} has colours (e.g. rgb(${r},${g},${b})), but this model reads greyscale label images (1 channel)`);
      }
      out[i] = ((r << 16) | (g << 8) | b) >>> 0;
    }
    return out;
  }

  // ------------------------------------------------------------------ label upload / download
  // Map decoded RGBA pixels to ids with the same rules as the server: palette colours first,
  // then gray value = id (grayscale id PNGs decode to R == G == B in a canvas).
  function pixelsToIds(rgba, n) {
    const lut = new Map();
    for (const c of state.info.classes) {
      const key = (c.color[0] << 16) | (c.color[1] << 8) | c.color[2];
      if (!lut.has(key)) lut.set(key, c.id);
    }
    const seen = new Map(); // colour -> pixel count
    for (let i = 0; i < n; i++) {
      const key = (rgba[4 * i] << 16) | (rgba[4 * i + 1] << 8) | rgba[4 * i + 2];
      seen.set(key, (seen.get(key) || 0) + 1);
    }
    const out = new Int32Array(n);
    const allPalette = [...seen.keys()].every((k) => lut.has(k));
    const allGray = [...seen.keys()].every((k) => (k >>> 16) === ((k >>> 8) & 0xff) && ((k >>> 8) & 0xff) === (k & 0xff));
    if (allPalette) {
      for (let i = 0; i < n; i++) out[i] = lut.get((rgba[4 * i] << 16) | (rgba[4 * i + 1] << 8) | rgba[4 * i + 2]);
    } else if (allGray) {
      for (let i = 0; i < n; i++) out[i] = rgba[4 * i];
      const bad = [...seen.keys()].map((k) => k & 0xff).filter((v) => v >= state.info.label_nc);
      if (bad.length) throw new Error(`label contains class id(s) ${bad.sort((a, b) => a - b).slice(0, 8).join(", ")}, but this model accepts ids 0..${state.info.label_nc - 1}`);
    } else {
      const unknown = [...seen.entries()].filter(([k]) => !lut.has(k)).sort((a, b) => b[1] - a[1]);
      const list = unknown.slice(0, 5).map(([k, c]) => `#${k.toString(16).padStart(6, "0")} (${c} px)`).join(", ");
      throw new Error(`not a label map: colours ${list}${unknown.length > 5 ? ` and ${unknown.length - 5} more` : ""} are neither palette colours nor gray ids`);
    }
    return out;
  }

  async function loadLabelFile(file) {
    let bmp;
    try {
      // No colour management/premultiplication: they would alter the exact id values.
      bmp = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    } catch (e) {
      throw new Error(`could not decode ${file.name} as an image`);
    }
    const w = bmp.width, h = bmp.height;
    if (w * h > MAX_UPLOAD_PIXELS) throw new Error(`${file.name} is ${w}x${h}, too large`);
    let next;
    try {
      next = state.kind === "image" ? imageValues(bmp, file.name) : idsAtModelSize(bmp);
    } finally {
      bmp.close();
    }
    pushUndo();
    state.ids.set(next);
    render();
    generate();
    return { w, h };
  }

  function idsAtModelSize(bmp) {
    const w = bmp.width, h = bmp.height;
    const c = document.createElement("canvas");
    c.width = w; c.height = h;
    const cx = c.getContext("2d", { willReadFrequently: true });
    cx.drawImage(bmp, 0, 0);
    const src = pixelsToIds(cx.getImageData(0, 0, w, h).data, w * h);
    // Nearest-neighbour resize to the model resolution (never invents ids).
    const next = new state.ids.constructor(state.W * state.H);
    for (let y = 0; y < state.H; y++) {
      const sy = Math.min(h - 1, Math.floor(((y + 0.5) * h) / state.H));
      for (let x = 0; x < state.W; x++) {
        const sx = Math.min(w - 1, Math.floor(((x + 0.5) * w) / state.W));
        next[y * state.W + x] = src[sy * w + sx];
      }
    }
    return next;
  }

  async function downloadLabel() {
    const blob = await encodeLabelPng(state.ids, state.W, state.H);
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "label.png";
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }

  // ------------------------------------------------------------------ synthesis
  function scheduleGenerate(delay = DEBOUNCE_MS) {
    clearTimeout(state.timer);
    state.timer = setTimeout(generate, delay);
  }

  function setBusy(busy) {
    $("busy").hidden = !busy;
    $("result-wrap").classList.toggle("busy", busy);
  }

  function scheduleFinal() {
    clearTimeout(state.finalTimer);
    state.finalTimer = setTimeout(() => generate(true), FINAL_MS);
  }

  async function generate(final = false) {
    clearTimeout(state.timer);
    clearTimeout(state.finalTimer);
    if (!state.ids) return;
    if (state.inflight) { state.dirty = true; return; }
    state.inflight = true;
    state.dirty = false;
    setBusy(true);
    let retryMs = null;
    const t0 = performance.now();
    try {
      const ids = state.ids.slice(); // snapshot: painting may continue meanwhile
      const form = new FormData();
      form.append("label", await encodeLabelPng(ids, state.W, state.H), "label.png");
      if (state.seed !== null) form.append("seed", String(state.seed));
      if (state.info.region_seeds && Object.keys(state.regionSeeds).length) {
        form.append("region_seeds", JSON.stringify(state.regionSeeds));
      }
      if (state.styleFile && state.info.use_vae) form.append("style", state.styleFile, state.styleFile.name);
      if (state.info.previews) {
        form.append("painter", state.painter);
        if (final) form.append("final", "1");
      }
      debug.lastSentLabel = { width: state.W, height: state.H, counts: countIds(ids), seed: state.seed,
                              regionSeeds: { ...state.regionSeeds } };
      debug.requestsSent++;
      setStatus("generating…");
      const res = await fetch("/api/synthesize", { method: "POST", body: form });
      debug.responses++;
      if (res.ok) {
        const blob = await res.blob();
        const seed = Number(res.headers.get("X-Seed"));
        state.seed = seed;
        debug.lastSeed = seed;
        $("seed").value = String(seed);
        const preview = res.headers.get("X-Preview") === "1";
        debug.lastReason = preview ? null : res.headers.get("X-Paint-Reason");
        showResult(blob, seed, preview);
        const ms = Math.round(performance.now() - t0);
        setStatus(preview ? `preview · seed ${seed} · ${ms} ms` : `seed ${seed} · ${ms} ms`);
        if (preview && !state.stroke) scheduleFinal();
        debug.lastError = null;
      } else {
        let msg = `${res.status} ${res.statusText}`;
        try { msg = (await res.json()).error || msg; } catch (_) { /* not JSON */ }
        const ra = res.headers.get("Retry-After");
        if (res.status === 503 && ra !== null) retryMs = Math.max(250, 1000 * Number(ra));
        fail(retryMs !== null ? `${msg} (retrying)` : msg);
      }
    } catch (e) {
      fail(`network error: ${e.message}`);
    } finally {
      state.inflight = false;
      setBusy(false);
      if (retryMs !== null) scheduleGenerate(retryMs);
      else if (state.dirty) scheduleGenerate(0);
    }
  }

  function fail(msg) {
    debug.errors++;
    debug.lastError = msg;
    setStatus(msg, true);
  }

  function showResult(blob, seed, preview = false) {
    const img = $("result");
    const url = URL.createObjectURL(blob);
    img.onload = () => {
      debug.imageVersion++;
      if (preview) debug.previews++; else debug.finals++;
      debug.showingPreview = preview;
      $("preview-badge").hidden = !preview;
      $("result-wrap").classList.toggle("preview", preview);
      if (state.resultUrl && state.resultUrl !== url) URL.revokeObjectURL(state.resultUrl);
      state.resultUrl = url;
      const a = $("download-result");
      a.href = url;
      a.download = `spadegan_seed${seed}.png`;
      // only the exact image is saved: a preview is replaced by it within FINAL_MS
      a.classList.toggle("disabled", preview);
      a.setAttribute("aria-disabled", preview ? "true" : "false");
    };
    img.src = url;
  }

  function newStyle() {
    const r = new Uint32Array(1);
    crypto.getRandomValues(r);
    state.regionSeeds = {}; // a new look everywhere
    state.seed = r[0];
    $("seed").value = String(r[0]);
    generate();
  }

  // Per-class noise (server field region_seeds): the same seed and label, a new seed for the
  // selected class alone, so only its regions change look.
  function rerollClass() {
    if (!state.info.region_seeds || state.kind !== "classes") return;
    const r = new Uint32Array(1);
    crypto.getRandomValues(r);
    state.regionSeeds[String(state.current)] = r[0];
    generate();
  }

  function onSeedInput() {
    const v = $("seed").value.trim();
    if (v === "") { state.seed = null; return; }
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0 || n > state.info.max_seed) {
      setStatus(`seed must be an integer in 0..${state.info.max_seed}`, true);
      return;
    }
    state.seed = n;
    scheduleGenerate(0);
  }

  // ------------------------------------------------------------------ setup
  function initialLabel() {
    // GauGAN-style starting point: sky over sea (or grass) if the model knows them.
    const ids = state.ids;
    ids.fill(state.background);
    const sky = findClass(["sky"]);
    const ground = findClass(["sea", "water", "grass", "ground", "road"]);
    if (sky !== null && ground !== null) {
      const horizon = Math.round(state.H * 0.6) * state.W;
      ids.fill(sky, 0, horizon);
      ids.fill(ground, horizon);
    }
  }

  function bindUi() {
    for (const b of document.querySelectorAll(".tool")) b.addEventListener("click", () => setTool(b.dataset.tool));
    $("brush-size").addEventListener("input", (e) => setBrushSize(Number(e.target.value)));
    $("undo").addEventListener("click", undo);
    $("redo").addEventListener("click", redo);
    $("clear").addEventListener("click", clearLabel);
    $("generate").addEventListener("click", () => generate());
    $("new-style").addEventListener("click", newStyle);
    $("reroll-class").addEventListener("click", rerollClass);
    $("seed").addEventListener("change", onSeedInput);
    $("download-label").addEventListener("click", () => downloadLabel().catch((e) => fail(e.message)));
    $("class-search").addEventListener("input", (e) => filterPalette(e.target.value));
    $("class-search").addEventListener("keydown", (e) => {
      if (e.key === "Enter") { // pick the first visible match
        const first = [...document.querySelectorAll(".swatch")].find((b) => !b.hidden);
        if (first) selectClass(first.dataset.id);
      } else if (e.key === "Escape") { e.target.value = ""; filterPalette(""); e.target.blur(); }
    });
    $("label-file").addEventListener("change", async (e) => {
      const file = e.target.files[0];
      e.target.value = ""; // allow re-loading the same file
      if (!file) return;
      try {
        const { w, h } = await loadLabelFile(file);
        setStatus(`loaded ${file.name} (${w}x${h})`);
      } catch (err) {
        fail(`cannot load ${file.name}: ${err.message}`);
      }
    });
    $("style-file").addEventListener("change", (e) => {
      const file = e.target.files[0];
      e.target.value = "";
      if (!file) return;
      state.styleFile = file;
      const prev = $("style-preview");
      if (prev.src) URL.revokeObjectURL(prev.src);
      prev.src = URL.createObjectURL(file);
      prev.hidden = false;
      $("style-clear").hidden = false;
      generate();
    });
    $("style-clear").addEventListener("click", () => {
      state.styleFile = null;
      $("style-preview").hidden = true;
      $("style-clear").hidden = true;
      generate();
    });

    document.addEventListener("keydown", (e) => {
      const typing = e.target instanceof HTMLInputElement || e.target instanceof HTMLTextAreaElement;
      const mod = e.ctrlKey || e.metaKey;
      if (mod && !typing) {
        const k = e.key.toLowerCase();
        if (k === "z" && !e.shiftKey) { e.preventDefault(); undo(); }
        else if (k === "y" || (k === "z" && e.shiftKey)) { e.preventDefault(); redo(); }
        return;
      }
      if (typing || e.altKey) return;
      switch (e.key) {
        case "b": case "B": setTool("brush"); break;
        case "f": case "F": setTool("fill"); break;
        case "e": case "E": setTool("eraser"); break;
        case "[": setBrushSize(state.size - Math.max(1, Math.round(state.size / 8))); break;
        case "]": setBrushSize(state.size + Math.max(1, Math.round(state.size / 8))); break;
        case "n": case "N": newStyle(); break;
        case "Enter": generate(); break;
        case "/": e.preventDefault(); $("class-search").focus(); break;
        default: return;
      }
    });

    new ResizeObserver(layout).observe($("stage"));
    window.addEventListener("resize", layout);
  }

  async function init() {
    bindUi();
    let info;
    try {
      const res = await fetch("/api/info");
      if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
      info = await res.json();
    } catch (e) {
      fail(`cannot reach the server: ${e.message}`);
      return;
    }
    state.info = debug.info = info;
    state.W = info.width;
    state.H = info.height;
    state.kind = info.label_kind === "image" ? "image" : "classes";
    state.channels = info.input_nc || 0;
    if (state.kind === "image") {
      state.ids = new Uint32Array(state.W * state.H);
    } else {
      state.background = info.background;
      state.colors = new Uint8Array(3 * Math.max(1, info.label_nc));
      for (let id = 0; id < info.label_nc; id++) state.colors.set(fallbackColor(id), 3 * id);
      for (const c of info.classes) { state.classById.set(c.id, c); state.colors.set(c.color, 3 * c.id); }
      state.ids = info.label_nc > 256 ? new Uint16Array(state.W * state.H) : new Uint8Array(state.W * state.H);
    }
    canvas.width = state.W;
    canvas.height = state.H;
    state.image = ctx.createImageData(state.W, state.H);

    const what = state.kind === "image" ? `${state.channels === 1 ? "greyscale" : "RGB"} label image` : `${info.label_nc} classes`;
    $("model-name").textContent = `${info.name} · ${info.width}×${info.height} · ${what}`;
    $("style-controls").hidden = !info.use_vae;
    $("seed").max = String(info.max_seed);
    $("reroll-class").hidden = !(info.region_seeds && state.kind === "classes");
    const sizeInput = $("brush-size");
    sizeInput.max = String(Math.max(8, Math.floor(Math.min(state.W, state.H) / 2)));
    setBrushSize(Math.max(3, Math.round(Math.min(state.W, state.H) / 16)));
    setTool("brush");
    if (state.kind === "image") {
      setupColours();
    } else {
      buildPalette();
      selectClass(info.common.length ? info.common[0] : info.classes.length ? info.classes[0].id : 0);
    }
    initialLabel();
    render();
    updateHistoryButtons();
    layout();
    debug.ready = true;
    setStatus("ready");
    generate();
  }

  init();
})();
