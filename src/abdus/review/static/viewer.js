// The image and its calipers in one SVG. Coordinates: the <g id="world"> group is in source px
// (the frame's own pixels); screen px = source px * scale + (tx, ty). The caliper handles keep a
// constant size on screen whatever the zoom.

const HANDLE_RADIUS_PX = 7; // screen px

export class Viewer {
  constructor(svg, { onMove }) {
    this.svg = svg;
    this.world = svg.querySelector("#world");
    this.frame = svg.querySelector("#frame");
    this.layer = svg.querySelector("#calipers");
    this.onMove = onMove; // called with the landmark name after an end moved
    this.view = { scale: 1, tx: 0, ty: 0 };
    this.size = { width: 1, height: 1 };
    this.pairs = []; // [{code, a, b, label}]
    this.points = {}; // name -> {x, y} in source px
    this.notMeasurable = new Set();
    this.spacing = null; // [row, col] mm per px, or null
    this.second = null; // a second reader's landmarks {name: {x, y}} (source px), shown only
    this.drag = null;
    svg.addEventListener("wheel", (e) => this.onWheel(e), { passive: false });
    svg.addEventListener("pointerdown", (e) => this.onPointerDown(e));
    svg.addEventListener("pointermove", (e) => this.onPointerMove(e));
    svg.addEventListener("pointerup", (e) => this.onPointerUp(e));
    svg.addEventListener("pointercancel", (e) => this.onPointerUp(e));
  }

  // Show a frame (an object URL already fetched); resolves once the browser has loaded it.
  show(url, width, height) {
    this.size = { width, height };
    this.frame.setAttribute("width", width);
    this.frame.setAttribute("height", height);
    const loaded = new Promise((resolve) => {
      this.frame.addEventListener("load", resolve, { once: true });
      this.frame.addEventListener("error", resolve, { once: true });
    });
    this.frame.setAttribute("href", url);
    this.fit();
    return loaded;
  }

  // Scale the whole frame into the viewer, centred.
  fit() {
    const box = this.svg.getBoundingClientRect();
    const scale = Math.min(box.width / this.size.width, box.height / this.size.height);
    this.view = {
      scale,
      tx: (box.width - this.size.width * scale) / 2,
      ty: (box.height - this.size.height * scale) / 2,
    };
    this.applyView();
  }

  applyView() {
    const { scale, tx, ty } = this.view;
    this.world.setAttribute("transform", `translate(${tx} ${ty}) scale(${scale})`);
    this.draw();
  }

  // Screen (client) px -> source px.
  toSource(clientX, clientY) {
    const box = this.svg.getBoundingClientRect();
    const { scale, tx, ty } = this.view;
    return { x: (clientX - box.left - tx) / scale, y: (clientY - box.top - ty) / scale };
  }

  setCalipers(pairs, points, notMeasurable, spacing, second = null) {
    this.pairs = pairs;
    this.second = second;
    this.points = points;
    this.notMeasurable = notMeasurable;
    this.spacing = spacing;
    this.draw();
  }

  // Caliper length in mm (spacing [row, col] mm/px), or in px when the frame has no spacing.
  length(a, b) {
    const p = this.points[a], q = this.points[b];
    if (!p || !q) return null;
    const dx = q.x - p.x, dy = q.y - p.y;
    if (!this.spacing) return { value: Math.hypot(dx, dy), unit: "px" };
    return { value: Math.hypot(dx * this.spacing[1], dy * this.spacing[0]), unit: "mm" };
  }

  draw() {
    const r = HANDLE_RADIUS_PX / this.view.scale;
    const parts = [];
    for (const pair of this.second ? this.pairs : []) {
      const p = this.second[pair.a], q = this.second[pair.b];
      if (p && q) {
        parts.push(`<line class="second-reader" x1="${p.x}" y1="${p.y}" x2="${q.x}" y2="${q.y}">
          </line>`);
      }
    }
    for (const pair of this.pairs) {
      const p = this.points[pair.a], q = this.points[pair.b];
      if (!p || !q) continue;
      const length = this.length(pair.a, pair.b);
      const off = this.notMeasurable.has(pair.code) ? ' class="not-measurable"' : "";
      const label = `${pair.code} ${length.value.toFixed(1)} ${length.unit}`;
      parts.push(`<g class="caliper" data-code="${pair.code}">
        <line x1="${p.x}" y1="${p.y}" x2="${q.x}" y2="${q.y}"${off}></line>
        <circle data-landmark="${pair.a}" cx="${p.x}" cy="${p.y}" r="${r}"></circle>
        <circle data-landmark="${pair.b}" cx="${q.x}" cy="${q.y}" r="${r}"></circle>
        <text x="${q.x + 1.5 * r}" y="${q.y - 1.5 * r}"
          style="font-size:${13 / this.view.scale}px;stroke-width:${3 / this.view.scale}px"
          >${label}</text></g>`);
    }
    this.layer.innerHTML = parts.join("");
  }

  onWheel(event) {
    event.preventDefault();
    const factor = Math.exp(-event.deltaY * 0.0015);
    const box = this.svg.getBoundingClientRect();
    const sx = event.clientX - box.left, sy = event.clientY - box.top;
    const { scale, tx, ty } = this.view;
    const next = Math.min(64, Math.max(0.05, scale * factor));
    // Keep the source point under the pointer where it is.
    this.view = { scale: next, tx: sx - (sx - tx) * (next / scale),
      ty: sy - (sy - ty) * (next / scale) };
    this.applyView();
  }

  onPointerDown(event) {
    if (event.button !== 0) return;
    const landmark = event.target.dataset?.landmark;
    const start = { clientX: event.clientX, clientY: event.clientY };
    if (landmark && this.points[landmark]) {
      this.drag = { kind: "landmark", landmark, start, origin: { ...this.points[landmark] } };
    } else {
      this.drag = { kind: "pan", start, origin: { ...this.view } };
      this.svg.classList.add("panning");
    }
    this.svg.setPointerCapture(event.pointerId);
    event.preventDefault();
  }

  onPointerMove(event) {
    if (!this.drag) return;
    const dx = event.clientX - this.drag.start.clientX;
    const dy = event.clientY - this.drag.start.clientY;
    if (this.drag.kind === "pan") {
      const o = this.drag.origin;
      this.view = { scale: o.scale, tx: o.tx + dx, ty: o.ty + dy };
      this.applyView();
      return;
    }
    // A screen displacement of d px is d / scale source px.
    const o = this.drag.origin;
    this.points[this.drag.landmark] = { x: o.x + dx / this.view.scale,
      y: o.y + dy / this.view.scale };
    this.draw();
    this.onMove(this.drag.landmark);
  }

  onPointerUp(event) {
    if (!this.drag) return;
    this.svg.classList.remove("panning");
    this.svg.releasePointerCapture?.(event.pointerId);
    this.drag = null;
  }
}
