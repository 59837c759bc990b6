/* Live cells: run block4.autograd in the reader's browser, on Python compiled to WebAssembly.
 *
 * Loaded only on pages that hold a live cell or the gate explorer (block4/live_hooks.py adds
 * this script there and says where the runtime is). Nothing of Python is downloaded until the
 * reader presses Run or touches the explorer. Then Pyodide's core (served by this site, see
 * scripts/vendor_pyodide.sh) starts once per page (restored from a snapshot of a started
 * interpreter where the build has one: scripts/pyodide_snapshot.mjs), the site's own copies of
 * block4/autograd.py, graph_drawing.py and live_cells.py are written into its file system, and
 * every run calls block4.live_cells: run_cell(code) for a cell, gate(x, incoming, kind) for
 * the explorer. Both return JSON; the graph comes back as SVG drawn by block4.graph_drawing.
 */
(function () {
  "use strict";

  const script = document.currentScript;
  const config = {
    runtime: script.dataset.runtime, // "" when this build has no runtime
    version: script.dataset.runtimeVersion,
    modules: script.dataset.modules,
    shipped: script.dataset.shipped.split(","),
  };
  const MOUNT = "/home/pyodide/live";

  /* ------------------------------------------------------------------ the runtime */
  let starting = null; // one Python per page, started on first use

  function unavailable() {
    if (!config.runtime) {
      return (
        "Live cells are not available in this build of the site: it was built without the " +
        "Python runtime (run scripts/vendor_pyodide.sh, or ./dev.sh setup, and build again)."
      );
    }
    if (typeof WebAssembly !== "object") {
      return "Live cells need WebAssembly, which this browser does not offer.";
    }
    return null;
  }

  function python() {
    if (!starting) {
      starting = (async () => {
        const why = unavailable();
        if (why) throw new Error(why);
        const base = new URL(config.runtime, location.href).href;
        const sources = Promise.all(
          config.shipped.map(async (name) => {
            const response = await fetch(new URL(config.modules + name, location.href));
            if (!response.ok) throw new Error(`${name}: HTTP ${response.status}`);
            return [name, await response.text()];
          }),
        );
        const t0 = performance.now();
        const snapshot = fetchSnapshot(base); // in parallel with the loader
        const { loadPyodide } = await import(base + "pyodide.mjs");
        const t1 = performance.now();
        const py = await startPython(loadPyodide, base, await snapshot);
        const t2 = performance.now();
        py.FS.mkdirTree(MOUNT + "/block4");
        for (const [name, text] of await sources) {
          py.FS.writeFile(`${MOUNT}/block4/${name}`, text);
        }
        py.runPython(`import sys; sys.path.insert(0, "${MOUNT}")`);
        const live = py.pyimport("block4.live_cells");
        // How the start-up time splits, for the tests and the curious (performance panel).
        performance.measure("block4-live: import loader", { start: t0, end: t1 });
        const how = py.block4Snapshot ? "start Python (snapshot)" : "start Python";
        performance.measure(`block4-live: ${how}`, { start: t1, end: t2 });
        performance.measure("block4-live: import block4", { start: t2, end: performance.now() });
        return live;
      })();
      starting.catch(() => {
        starting = null; // a failed start (say, the server went away) may be retried
      });
    }
    return starting;
  }

  /* A snapshot of Python just after start-up (scripts/pyodide_snapshot.mjs) restores in a
   * fraction of the seconds that starting it takes; without one, or when it does not load
   * (another Pyodide build), Python starts the ordinary way. */
  async function fetchSnapshot(base) {
    if (typeof DecompressionStream !== "function") return null;
    try {
      const response = await fetch(base + "snapshot.bin.gz");
      if (!response.ok) return null;
      const stream = response.body.pipeThrough(new DecompressionStream("gzip"));
      return new Uint8Array(await new Response(stream).arrayBuffer());
    } catch (error) {
      return null;
    }
  }

  async function startPython(loadPyodide, base, snapshot) {
    if (snapshot) {
      try {
        const py = await loadPyodide({ indexURL: base, _loadSnapshot: snapshot });
        py.block4Snapshot = true;
        return py;
      } catch (error) {
        console.warn("block4 live cells: the Python snapshot did not load; starting Python", error);
      }
    }
    return loadPyodide({ indexURL: base });
  }

  function startError(error) {
    return unavailable() || `Python could not start: ${error.message || error}`;
  }

  /* ------------------------------------------------------------------ helpers */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    node.append(...children);
    return node;
  }

  function formatNumber(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "string") return value; // inf, nan
    if (value === 0) return "0";
    const magnitude = Math.abs(value);
    if (magnitude < 1e-3 || magnitude >= 1e6) return value.toExponential(3);
    return String(Number(value.toPrecision(6)));
  }

  function ms(start) {
    return Math.round(performance.now() - start);
  }

  /* ------------------------------------------------------------------ a live cell */
  function liveCell(cell) {
    const block = cell.querySelector("pre");
    const original = (block ? block.textContent : "").replace(/\n+$/, "\n");
    const editor = el("textarea", {
      class: "live-code",
      spellcheck: "false",
      autocapitalize: "off",
      wrap: "off",
      "aria-label": "Python code of this live cell",
    });
    editor.value = original;
    editor.rows = Math.max(4, original.split("\n").length);
    const run = el("button", { class: "md-button md-button--primary live-run", type: "button" });
    run.textContent = "Run";
    const reset = el("button", { class: "md-button live-reset", type: "button", text: "Reset" });
    const status = el("span", { class: "live-status", "aria-live": "polite" });
    status.textContent = unavailable() || "Runs in your browser; Python starts on the first Run.";
    const output = el("div", { class: "live-result" });
    const highlight = cell.querySelector(".highlight") || block;
    if (highlight) highlight.replaceWith(editor);
    else cell.prepend(editor);
    cell.append(el("div", { class: "live-controls" }, run, reset, status), output);
    cell.classList.add("live-ready");

    async function execute() {
      run.disabled = true;
      const first = !starting;
      const started = performance.now();
      status.textContent = first ? `Starting Python (Pyodide ${config.version})…` : "Running…";
      let live;
      try {
        live = await python();
      } catch (error) {
        output.replaceChildren(el("pre", { class: "live-error", text: startError(error) }));
        status.textContent = "";
        run.disabled = false;
        return;
      }
      const ranAt = performance.now();
      const result = JSON.parse(live.run_cell(editor.value));
      show(output, result);
      const total = ms(started);
      cell.dataset.runs = String(Number(cell.dataset.runs || 0) + 1);
      cell.dataset.lastRunMs = String(total);
      if (first) cell.dataset.firstRunMs = String(total);
      status.textContent = first
        ? `Python started and ran your code in ${(total / 1000).toFixed(1)} s.`
        : `Ran in ${ms(ranAt)} ms.`;
      run.disabled = false;
    }

    run.addEventListener("click", execute);
    reset.addEventListener("click", () => {
      editor.value = original;
      output.replaceChildren();
    });
    editor.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        execute();
      } else if (event.key === "Tab" && !event.shiftKey) {
        event.preventDefault(); // indent instead of leaving the box
        editor.setRangeText("    ", editor.selectionStart, editor.selectionEnd, "end");
      }
    });
  }

  function show(output, result) {
    const parts = [];
    if (result.output) parts.push(el("pre", { class: "live-printed", text: result.output }));
    if (result.error) parts.push(el("pre", { class: "live-error", text: result.error }));
    if (result.nodes.length) {
      const withGrad = result.nodes.some((n) => n.grad !== null);
      const head = el("tr", {}, el("th", { text: "node" }), el("th", { text: "made by" }));
      head.append(el("th", { text: "value" }));
      if (withGrad) head.append(el("th", { text: "gradient" }));
      const rows = result.nodes.map((n) => {
        const row = el("tr", {}, el("td", { text: n.label || "·" }), el("td", { text: n.op || "input" }));
        row.append(el("td", { class: "live-value", "data-value": String(n.data), text: formatNumber(n.data) }));
        if (withGrad) {
          row.append(el("td", { class: "live-grad", "data-value": String(n.grad), text: formatNumber(n.grad) }));
        }
        return row;
      });
      parts.push(el("table", { class: "live-nodes" }, el("thead", {}, head), el("tbody", {}, ...rows)));
      const graph = el("div", { class: "live-graph" });
      graph.innerHTML = result.svg; // drawn by block4.graph_drawing, every text escaped
      parts.push(graph);
    }
    if (!parts.length) parts.push(el("p", { class: "live-note", text: "(no output)" }));
    output.replaceChildren(...parts);
  }

  /* ------------------------------------------------------------------ the gate explorer */
  function gateExplorer(box) {
    const slider = el("input", {
      type: "range", min: "-10", max: "10", step: "0.1", value: "0", class: "live-x",
      "aria-label": "input x of the gate",
    });
    const xShown = el("output", { class: "live-x-value", text: "0" });
    const incoming = el("input", {
      type: "number", step: "0.1", value: "1", class: "live-incoming",
      "aria-label": "incoming gradient",
    });
    const relu = el("input", { type: "checkbox", class: "live-relu" });
    const presets = [-10, 0, 10].map((x) =>
      el("button", { type: "button", class: "md-button live-preset", "data-x": String(x), text: `x = ${x}` }),
    );
    const cells = {};
    const table = el("table", { class: "live-gate" }, el("tbody", {}));
    for (const [key, label] of [
      ["out", "gate output"],
      ["local", "local gradient"],
      ["incoming", "× incoming gradient"],
      ["passed", "= gradient passed back to x"],
    ]) {
      cells[key] = el("td", { class: `live-${key}` });
      cells[key + "Label"] = el("th", { text: label });
      table.tBodies[0].append(el("tr", {}, cells[key + "Label"], cells[key]));
    }
    const status = el("p", { class: "live-status", "aria-live": "polite" });
    status.textContent = unavailable() || "Move the slider: Python starts on first use.";
    const graph = el("div", { class: "live-graph" });
    box.replaceChildren(
      el("div", { class: "live-gate-controls" },
        el("label", {}, "x ", slider, " ", xShown),
        el("label", {}, "incoming gradient ", incoming),
        el("label", { class: "live-switch" }, relu, " ReLU instead of sigmoid"),
        el("span", { class: "live-presets" }, ...presets),
      ),
      table, graph, status,
    );
    box.classList.add("live-ready");

    let pending = false;
    let dirty = false; // inputs changed while an update was running
    async function update() {
      xShown.textContent = Number(slider.value).toFixed(1);
      if (pending) {
        dirty = true;
        return;
      }
      pending = true;
      dirty = false;
      const first = !starting;
      if (first) status.textContent = `Starting Python (Pyodide ${config.version})…`;
      const started = performance.now();
      let live;
      try {
        live = await python();
      } catch (error) {
        status.textContent = startError(error);
        pending = false;
        return;
      }
      const kind = relu.checked ? "relu" : "sigmoid";
      const g = JSON.parse(live.gate(Number(slider.value), Number(incoming.value) || 0, kind));
      cells.outLabel.textContent = kind === "relu" ? "ReLU(x)" : "σ(x)";
      cells.localLabel.textContent =
        kind === "relu" ? "local gradient (1 if x > 0, else 0)" : "local gradient σ(x)(1 − σ(x))";
      for (const key of ["out", "local", "incoming", "passed"]) {
        cells[key].textContent = formatNumber(g[key]);
        cells[key].dataset.value = String(g[key]);
      }
      graph.innerHTML = g.svg;
      box.dataset.x = String(g.x);
      box.dataset.lastUpdateMs = String(ms(started));
      if (first) box.dataset.firstRunMs = box.dataset.lastUpdateMs;
      status.textContent = `Computed by block4.autograd in your browser (${kind}).`;
      pending = false;
      if (dirty) update();
    }

    for (const input of [slider, incoming, relu]) input.addEventListener("input", update);
    slider.addEventListener("pointerdown", () => python().catch(() => {}), { once: true });
    for (const button of presets) {
      button.addEventListener("click", () => {
        slider.value = button.dataset.x;
        update();
      });
    }
  }

  document.querySelectorAll(".live-cell").forEach(liveCell);
  document.querySelectorAll(".live-explorer").forEach(gateExplorer);
})();
