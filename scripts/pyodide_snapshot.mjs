// Make a memory snapshot of Pyodide just after it has started, for the pages' live cells.
//
//   node scripts/pyodide_snapshot.mjs docs/javascripts/vendor/pyodide
//
// Starting Python in the browser (running the interpreter's initialisation in WebAssembly)
// takes seconds on a laptop; restoring a snapshot of the started interpreter takes a fraction
// of a second. scripts/vendor_pyodide.sh runs this after fetching the runtime; it writes
// snapshot.bin.gz (gzip-compressed, about 6 MB; the browser decompresses it) next to the
// runtime. The snapshot holds the interpreter and the standard-library modules the live cells
// import, never block4 itself: the site ships that code, as it is, with every build. A
// snapshot only fits the Pyodide build that made it; live.js starts Python the ordinary way
// when there is none or it does not load.
import { renameSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { gzipSync } from "node:zlib";

// What block4.autograd and the live-cell runner import: in the snapshot, not read at the
// first Run. (Standard library only, like the engine itself.)
const PRELOAD = [
  "contextlib", "io", "json", "linecache", "math", "traceback", "typing", "numbers",
  "collections", "collections.abc", "dataclasses", "xml.sax.saxutils",
];

const dest = resolve(process.argv[2] || "docs/javascripts/vendor/pyodide");
const { loadPyodide } = await import(pathToFileURL(join(dest, "pyodide.mjs")).href);
const py = await loadPyodide({ indexURL: dest + "/", _makeSnapshot: true });
py.runPython(`import ${PRELOAD.join(", ")}`);
const snapshot = gzipSync(py.makeMemorySnapshot(), { level: 9 });
const target = join(dest, "snapshot.bin.gz");
writeFileSync(target + ".tmp", snapshot);
renameSync(target + ".tmp", target); // never half a snapshot
console.log(`${target}: ${(snapshot.length / 1e6).toFixed(1)} MB`);
