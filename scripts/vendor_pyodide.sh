#!/usr/bin/env bash
# Fetch the Python runtime of the live cells (Pyodide's core, from npm) into the site's sources:
# docs/javascripts/vendor/pyodide/ (git-ignored: 13.4 MB are not kept in the repository).
#
# The live cells on the computational-graphs and backpropagation pages run block4.autograd in
# the reader's browser on this runtime, served by the site itself: no CDN at build, test or
# read time. `./dev.sh setup` runs this script when the folder is missing or holds another
# version; run it by hand to refresh:
#   scripts/vendor_pyodide.sh
# The version and the sha512 of the npm tarball are pinned below; npm checks the download
# against the registry, and this script checks it against the pin. A site built without the
# runtime still builds; its live cells then say that they are not available in this build.
#
# Only the core is kept: the loader (pyodide.mjs), the runtime (pyodide.asm.mjs and .wasm), the
# standard library (python_stdlib.zip) and the package index the loader reads at start-up
# (pyodide-lock.json). No Python package beyond the standard library is needed. Made here, not
# downloaded: snapshot.bin.gz, the started interpreter (see make_snapshot below).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=314.0.7
INTEGRITY=sha512-0YvXxEhfEdpLfb/XkM2BFAeMROq0iMUX2bzzH9pOttyMcWkwq+HbE5uyuGD82LN7y2q+SNvi/6V5JEsOlD2R1A==
DEST=docs/javascripts/vendor/pyodide
FILES=(pyodide.mjs pyodide.asm.mjs pyodide.asm.wasm python_stdlib.zip pyodide-lock.json package.json)

# A memory snapshot of the started interpreter (scripts/pyodide_snapshot.mjs, run with Node):
# the live cells restore it instead of starting Python, seconds faster. Without Node there is
# none, and the cells start Python the ordinary way.
make_snapshot() {
  if ! command -v node >/dev/null 2>&1; then
    echo "node is not installed: no start-up snapshot (live cells start Python more slowly)" >&2
    return 0
  fi
  node scripts/pyodide_snapshot.mjs "$DEST" ||
    echo "could not make the start-up snapshot (live cells start Python more slowly)" >&2
}

if [ "${1:-}" != "--force" ] && [ -f "$DEST/VERSION" ] && grep -q "^pyodide $VERSION\$" "$DEST/VERSION"; then
  [ -f "$DEST/snapshot.bin.gz" ] || make_snapshot
  echo "Pyodide $VERSION is already in $DEST"
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "npm is not installed: the live cells will say they are not available in this build." >&2
  echo "Install Node.js/npm (e.g. apt-get install -y npm) and run $0 again." >&2
  exit 1
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && npm pack --silent --json "pyodide@${VERSION}" >pack.json)
GOT=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[0]['integrity'])" "$TMP/pack.json")
if [ "$GOT" != "$INTEGRITY" ]; then
  echo "pyodide@$VERSION from npm has integrity $GOT, expected $INTEGRITY: not installed" >&2
  exit 1
fi
tar -xzf "$TMP"/pyodide-"$VERSION".tgz -C "$TMP"

rm -rf "$DEST"
mkdir -p "$DEST"
for f in "${FILES[@]}"; do cp "$TMP/package/$f" "$DEST/"; done
make_snapshot
# Written last: its presence tells the site build that the runtime is complete.
printf 'pyodide %s\nnpm tarball %s\nlicence MPL-2.0 (https://github.com/pyodide/pyodide)\n' \
  "$VERSION" "$INTEGRITY" >"$DEST/VERSION"
du -sh "$DEST"
