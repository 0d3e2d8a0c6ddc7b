// sammed3d web page: NiiVue shows the volume in three planes; each click goes to the server
// as RAS+ millimetres (NiiVue's world coordinates), the server maps it to a voxel with the
// image's inverse affine, runs SAM-Med3D and answers with the changed box of the label map,
// which is written into the overlay's voxels here. See docs/serve.md.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const PALETTE = [
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
    [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0],
    [170, 255, 195],
  ];
  const colour = (label) => PALETTE[(label - 1) % PALETTE.length];
  const EXTENT_TITLE = document.getElementById("extent").title;

  const state = {
    token: null,
    apiKey: sessionStorage.getItem("sammed3d-api-key") || null,
    config: null,
    info: null,
    negative: false,
    busy: false,
    busyWhat: null,
    clicks: 0,
    lastClick: null,
    heartbeat: null,
    viewerValue: null,
  };

  // ---------------------------------------------------------------------------- server

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (state.token) h["X-Lease-Token"] = state.token;
    if (state.apiKey) h["Authorization"] = "Bearer " + state.apiKey;
    return h;
  }

  class ServerError extends Error {
    constructor(status, detail) { super(detail); this.status = status; }
  }

  async function call(method, path, { json, body, extraHeaders } = {}) {
    const init = { method, headers: headers(extraHeaders) };
    if (json !== undefined) {
      init.body = JSON.stringify(json);
      init.headers["Content-Type"] = "application/json";
    } else if (body !== undefined) {
      init.body = body;
      init.headers["Content-Type"] = "application/octet-stream";
    }
    const resp = await fetch(path, init);
    if (!resp.ok) {
      let detail = resp.statusText;
      try { detail = (await resp.json()).detail || detail; } catch (e) { /* not JSON */ }
      if (resp.status === 401) showAuth();
      if (resp.status === 410) {
        // the server says why (no request from the page for N s, no action for N s...)
        stopHeartbeat();
        const why = /reload/.test(detail) ? detail : `this session ended (${detail}): reload the page`;
        throw new ServerError(410, why);
      }
      throw new ServerError(resp.status, `${resp.status}: ${detail}`);
    }
    return resp;
  }

  async function claim() {
    const config = await (await call("GET", "api/web/config")).json();
    state.config = config;
    $("model").textContent = `SAM-Med3D · ${config.model} · sammed3d ${config.version}`;
    $("license").textContent = config.license;
    const claimed = await (await call("POST", "api/web/claim")).json();
    state.token = claimed.lease_token;
    const every = Math.max(2, claimed.liveness_timeout_seconds / 3) * 1000;
    stopHeartbeat();
    state.heartbeat = setInterval(() => {
      beat().catch((e) => status(e.status === 410 ? e.message : `connection lost: ${e.message}`, true));
    }, every);
    const list = $("volumes");
    list.innerHTML = "";
    config.volumes.forEach((name, i) => list.add(new Option(name, String(i))));
    $("startup").hidden = config.volumes.length === 0;
    const modality = $("modality");
    modality.innerHTML = "";
    const byDefault = config.modality ? `server default: ${config.modality}` : "not set";
    modality.add(new Option(`as the server was started (${byDefault})`, ""));
    (config.modalities || []).forEach((m) => modality.add(new Option(m, m)));
  }

  // A sign of life: also sent right before and after loading a volume into the viewer,
  // which blocks the page (and its heartbeat timer) while it decodes a big image.
  async function beat() {
    if (state.token) await call("POST", "api/web/heartbeat");
  }

  function chosenModality() {
    return $("modality").value || null;
  }

  function stopHeartbeat() {
    if (state.heartbeat) clearInterval(state.heartbeat);
    state.heartbeat = null;
  }

  // ---------------------------------------------------------------------------- viewer

  const nv = new niivue.Niivue({
    backColor: [0.07, 0.07, 0.08, 1],
    crosshairColor: [1, 1, 0, 0.7],
    crosshairWidth: 0.3,
    crosshairWidthUnit: "percent",
    show3Dcrosshair: false,
    isColorbar: false,
    dragAndDropEnabled: false,
    multiplanarShowRender: niivue.SHOW_RENDER.NEVER,
    isRadiologicalConvention: false,
    loadingText: "open a volume (left)",
  });

  function labelColormap() {
    const cm = { R: [0], G: [0], B: [0], A: [0], I: [0] };
    for (let label = 1; label < 256; label++) {
      const [r, g, b] = colour(label);
      cm.R.push(r); cm.G.push(g); cm.B.push(b); cm.A.push(255); cm.I.push(label);
    }
    return cm;
  }

  async function fetchBlobUrl(path) {
    const resp = await call("GET", path);
    return URL.createObjectURL(await resp.blob());
  }

  async function showVolume(info) {
    state.info = info;
    status(`loading ${info.name} into the viewer…`);
    await beat();
    const imageUrl = await fetchBlobUrl("api/web/image.nii.gz");
    const overlayUrl = await fetchBlobUrl("api/web/overlay.nii.gz");
    await beat();
    try {
      await nv.loadVolumes([
        { url: imageUrl, name: "image.nii.gz" },
        { url: overlayUrl, name: "labels.nii.gz", opacity: 0.5, colormapLabel: labelColormap() },
      ]);
    } finally {
      URL.revokeObjectURL(imageUrl);
      URL.revokeObjectURL(overlayUrl);
    }
    await beat();
    const overlay = nv.volumes[1];
    overlay.setColormapLabel(labelColormap());
    nv.setOpacity(1, 0.5);
    nv.setInterpolation(true); // nearest neighbour: voxels as they are
    $("view").dispatchEvent(new Event("change"));
    nv.updateGLVolume();
    const sp = info.spacing.map((s) => s.toFixed(2)).join(" × ");
    $("volume-info").textContent =
      `${info.name}: ${info.shape.join(" × ")} voxels, ${sp} mm, ${info.dtype}, ` +
      modalityText(info);
    updateControls(info);
    status("click on the structure to segment");
  }

  function modalityText(info) {
    if (!info.modality) return "modality not set (no intensity clamp)";
    const from = { chosen: "chosen", server: "server default", file: "from the file" };
    const clamp = info.modality === "CT" ? ", clamped to [−1000, 1000]" : "";
    const source = from[info.modality_source] ? ` (${from[info.modality_source]}${clamp})` : "";
    return `modality ${info.modality}${source}`;
  }

  function applyPatch(meta, buffer) {
    if (!meta.bbox) return 0;
    const overlay = nv.volumes[1];
    const [nx, ny] = [overlay.hdr.dims[1], overlay.hdr.dims[2]];
    const [[x0, x1], [y0, y1], [z0, z1]] = meta.bbox;
    const data = new Uint8Array(buffer);
    const img = overlay.img;
    const wx = x1 - x0;
    let n = 0;
    for (let k = z0; k < z1; k++) {
      for (let j = y0; j < y1; j++) {
        const start = x0 + nx * (j + ny * k);
        img.set(data.subarray(n, n + wx), start);
        n += wx;
      }
    }
    nv.updateGLVolume();
    return data.length;
  }

  // ------------------------------------------------------------------------- controls

  function status(text, error = false) {
    const el = $("status");
    el.textContent = text;
    el.classList.toggle("error", !!error);
  }

  function setBusy(busy, what) {
    state.busy = busy;
    state.busyWhat = busy ? (what || "busy") : null;
    document.body.dataset.state = busy ? "busy" : (state.info ? "ready" : "empty");
  }

  function updateControls(info) {
    state.info = Object.assign(state.info || {}, info);
    $("undo").disabled = !info.can_undo;
    $("redo").disabled = !info.can_redo;
    $("extent").disabled = !info.can_change_extent;
    $("extent").title = info.can_change_extent ? EXTENT_TITLE : (info.extent_note || EXTENT_TITLE);
    $("new-object").disabled = false;
    $("download").disabled = false;
    const list = $("objects");
    list.innerHTML = "";
    for (const label of info.objects) {
      const li = document.createElement("li");
      li.dataset.label = String(label);
      if (label === info.current) li.classList.add("current");
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = `rgb(${colour(label).join(",")})`;
      li.append(sw, document.createTextNode(`object ${label}`));
      li.addEventListener("click", () => guarded(async () => {
        const resp = await call("POST", "api/web/select_object", { json: { label } });
        updateControls(await resp.json());
        status(`object ${label}: click to edit it`);
      }, `selecting object ${label}…`));
      list.append(li);
    }
    if (info.current === null || info.current === undefined) {
      const li = document.createElement("li");
      li.className = "small";
      li.textContent = "the first click starts object 1";
      list.append(li);
    }
  }

  // Runs one action at a time; `what` is the status line while it runs ("segmenting… (click
  // 3)"). An action asked for meanwhile is not queued: the status line says it was ignored.
  async function guarded(fn, what) {
    if (state.busy) {
      status(`ignored: still ${state.busyWhat}; wait for it to finish, then try again`);
      return;
    }
    setBusy(true, what);
    if (what) status(what);
    try {
      await fn();
    } catch (e) {
      status(e.message, true);
    } finally {
      setBusy(false);
    }
  }

  function setNegative(negative) {
    state.negative = negative;
    $("pos").classList.toggle("on", !negative);
    $("neg").classList.toggle("on", negative);
  }

  async function clickAt(mm, positive) {
    const t0 = performance.now();
    const resp = await call("POST", "api/web/click", { json: { mm: Array.from(mm), positive } });
    const meta = JSON.parse(resp.headers.get("X-Meta"));
    applyPatch(meta, await resp.arrayBuffer());
    updateControls(meta.info);
    state.clicks += 1;
    state.lastClick = {
      mm: Array.from(mm), positive, voxel: meta.voxel, bbox: meta.bbox,
      serverValue: meta.value, viewerValue: state.viewerValue,
    };
    document.body.dataset.clicks = String(state.clicks);
    const ms = Math.round(performance.now() - t0);
    status(`${positive ? "+" : "−"} click at voxel (${meta.voxel.join(", ")}) on object ` +
      `${meta.info.current}: ${ms} ms` + (meta.note ? ` (${meta.note})` : ""));
  }

  async function history(which) {
    const resp = await call("POST", `api/web/${which}`);
    const meta = JSON.parse(resp.headers.get("X-Meta"));
    applyPatch(meta, await resp.arrayBuffer());
    updateControls(meta.info);
    status(which === "undo" ? "undone" : "redone");
  }

  async function changeExtent(step) {
    const resp = await call("POST", "api/web/extent", { json: { step } });
    const meta = JSON.parse(resp.headers.get("X-Meta"));
    applyPatch(meta, await resp.arrayBuffer());
    updateControls(meta.info);
    const e = meta.extent;
    let pick = e.picked ? "the pick" : `the pick is mask ${e.picked_index}`;
    if (e.model_index !== null && e.model_index !== e.picked_index) {
      // a first-click rule took another mask than the model's own
      pick += e.model_index === e.index ? "; the model's own" : `; the model's own is mask ${e.model_index}`;
    }
    status(`mask ${e.index} of 0–${e.count - 1} (smallest first; ${pick}): ` +
      `${e.volume_ml.toFixed(1)} ml at ${e.spacing_mm} mm. E / Shift+E: next / previous; ` +
      "then click to refine");
  }

  async function download() {
    const resp = await call("GET", "api/web/labels.nii.gz");
    const name = /filename="([^"]+)"/.exec(resp.headers.get("Content-Disposition") || "");
    const url = URL.createObjectURL(await resp.blob());
    const a = document.createElement("a");
    a.href = url;
    a.download = name ? name[1] : "labels.nii.gz";
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  function showAuth() {
    $("auth").hidden = false;
    status("this server needs an API key", true);
  }

  // --------------------------------------------------------------------------- events

  function wire() {
    const canvas = $("gl");
    let down = null;
    canvas.addEventListener("pointerdown", (e) => {
      down = { x: e.clientX, y: e.clientY, shift: e.shiftKey, button: e.button };
    });
    canvas.addEventListener("pointerup", (e) => {
      const d = down;
      down = null;
      if (!d || d.button !== 0 || !state.info || nv.volumes.length < 2) return;
      if (Math.hypot(e.clientX - d.x, e.clientY - d.y) > 4) return; // a drag, not a click
      const positive = !(d.shift || e.shiftKey || state.negative);
      // NiiVue moves the crosshair on this click; read it once its handler has run
      const n = state.clicks + 1;
      if (state.busy) {
        status(`click ignored: still ${state.busyWhat}; click again when it is done`);
        return;
      }
      setTimeout(() => guarded(async () => {
        const mm = nv.frac2mm(nv.scene.crosshairPos);
        await clickAt([mm[0], mm[1], mm[2]], positive);
      }, `segmenting… (click ${n})`), 0);
    });
    nv.onLocationChange = (loc) => {
      state.viewerValue = loc && loc.values && loc.values[0] ? loc.values[0].value : null;
    };
    $("view").addEventListener("change", (e) => {
      const types = {
        multiplanar: nv.sliceTypeMultiplanar, axial: nv.sliceTypeAxial,
        coronal: nv.sliceTypeCoronal, sagittal: nv.sliceTypeSagittal,
      };
      nv.setSliceType(types[e.target.value]);
    });
    $("pos").addEventListener("click", () => setNegative(false));
    $("neg").addEventListener("click", () => setNegative(true));
    $("extent").addEventListener("click", (e) => guarded(() => changeExtent(e.shiftKey ? -1 : 1), "changing the extent…"));
    $("undo").addEventListener("click", () => guarded(() => history("undo"), "undoing…"));
    $("redo").addEventListener("click", () => guarded(() => history("redo"), "redoing…"));
    $("download").addEventListener("click", () => guarded(download, "preparing the label map…"));
    $("new-object").addEventListener("click", () => guarded(async () => {
      const info = await (await call("POST", "api/web/new_object")).json();
      updateControls(info);
      status(`object ${info.current}: click on it`);
    }, "starting a new object…"));
    $("upload").addEventListener("change", (e) => {
      const file = e.target.files[0];
      if (!file) return;
      const mib = (file.size / 2 ** 20).toFixed(1);
      guarded(async () => {
        let path = "api/web/upload?filename=" + encodeURIComponent(file.name);
        const modality = chosenModality();
        if (modality) path += "&modality=" + encodeURIComponent(modality);
        const info = await (await call("POST", path, { body: file })).json();
        await showVolume(info);
      }, `uploading ${file.name} (${mib} MiB)…`);
    });
    $("open").addEventListener("click", () => guarded(async () => {
      const index = Number($("volumes").value);
      const json = { index, modality: chosenModality() };
      const info = await (await call("POST", "api/web/open", { json })).json();
      await showVolume(info);
    }, "opening…"));
    $("modality").addEventListener("change", () => {
      if (state.info) status("the modality applies to the next volume opened: upload or open it again");
    });
    $("api-key-set").addEventListener("click", () => {
      state.apiKey = $("api-key").value || null;
      if (state.apiKey) sessionStorage.setItem("sammed3d-api-key", state.apiKey);
      start();
    });
    document.addEventListener("keydown", (e) => {
      if (!state.info) return;
      const typing = e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement;
      if (!(e.ctrlKey || e.metaKey || e.altKey || typing) && e.key.toLowerCase() === "e") {
        e.preventDefault();
        if ($("extent").disabled) {
          // nothing to cycle through: say why instead of showing "mask 0 of 0–0"
          status(`E: ${state.info.extent_note || "no other extent for this object now"}`);
        } else {
          guarded(() => changeExtent(e.shiftKey ? -1 : 1), "changing the extent…");
        }
        return;
      }
      if (!(e.ctrlKey || e.metaKey)) return;
      const key = e.key.toLowerCase();
      if (key === "z" && !e.shiftKey) { e.preventDefault(); guarded(() => history("undo"), "undoing…"); }
      if (key === "y" || (key === "z" && e.shiftKey)) { e.preventDefault(); guarded(() => history("redo"), "redoing…"); }
    });
    window.addEventListener("pagehide", () => {
      if (state.token) fetch("release", { method: "POST", headers: headers(), keepalive: true });
    });
  }

  async function start() {
    setBusy(true, "starting…");
    try {
      await claim();
      $("auth").hidden = true;
      status("open a volume");
      if (state.config.volumes.length === 1) {
        status(`opening ${state.config.volumes[0]}…`);
        const info = await (await call("POST", "api/web/open", { json: { index: 0 } })).json();
        await showVolume(info);
      }
    } catch (e) {
      status(e.message, true);
    } finally {
      setBusy(false);
    }
  }

  window.sammed3d = { nv, state, clickAt, applyPatch };
  nv.attachToCanvas($("gl")).then(() => {
    wire();
    start();
  });
})();
