#!/usr/bin/env bash
# Refresh the KaTeX copy that the site serves itself (docs/javascripts/vendor/katex/).
#
# The site renders math offline: nothing is fetched from a CDN at build, test or read time.
# This script is the only place that touches the network (npm), and only when run by hand:
#   scripts/vendor_katex.sh            # the pinned version below
#   scripts/vendor_katex.sh 0.19.1     # another version
# It keeps what a browser needs: katex.min.js, the auto-render extension, the stylesheet and
# the WOFF2 fonts (every browser that runs the site reads WOFF2, so the WOFF/TTF copies and
# their references in the stylesheet are dropped to keep the repository small).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${1:-0.19.1}
DEST=docs/javascripts/vendor/katex
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

(cd "$TMP" && npm pack --silent "katex@${VERSION}" >/dev/null && tar -xzf katex-*.tgz)
SRC="$TMP/package"

rm -rf "$DEST"
mkdir -p "$DEST/contrib" "$DEST/fonts"
cp "$SRC/dist/katex.min.js" "$SRC/LICENSE" "$DEST/"
cp "$SRC/dist/contrib/auto-render.min.js" "$DEST/contrib/"
cp "$SRC"/dist/fonts/*.woff2 "$DEST/fonts/"
# Keep only the WOFF2 source of each @font-face rule.
sed -E 's/,url\(fonts\/[A-Za-z0-9_-]+\.woff\) format\("woff"\),url\(fonts\/[A-Za-z0-9_-]+\.ttf\) format\("truetype"\)//g' \
  "$SRC/dist/katex.min.css" >"$DEST/katex.min.css"
echo "KaTeX ${VERSION} from npm (MIT licence, see LICENSE)." >"$DEST/VERSION"
du -sh "$DEST"
