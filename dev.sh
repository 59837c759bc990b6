#!/usr/bin/env bash
# block4 developer entry point. Two commands do everything (see README.md):
#   ./dev.sh serve   set up .venv, refresh stale figures, build and serve the site on :8000
#                    (another address: BLOCK4_ADDR=127.0.0.1:8001 ./dev.sh serve); notebooks
#                    without cached outputs run in the background and their pages fill in
#                    (BLOCK4_DEFER_NOTEBOOKS=0: run them before serving)
#   ./dev.sh test    set up .venv (and Chromium for the browser tests), run the whole test suite
# Other verbs: setup (only install), build (strict build into site/).
set -euo pipefail
cd "$(dirname "$0")"

VENV=${BLOCK4_VENV:-.venv}
TORCH_CPU_PIN=2.13.0   # a CPU build of this release is what CI and the reference machine use

have_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

# Whether every named module is installed. Found, not imported: importing torch alone takes
# seconds, which every `./dev.sh serve` would wait for before the site.
installed() {
  python -c 'import importlib.util, sys; sys.exit(not all(map(importlib.util.find_spec, sys.argv[1:])))' "$@"
}

# Installs go through uv (from PyPI, into the venv) when it can be had: it installs the whole
# stack in seconds where pip takes minutes. pip stays the fallback; both read the same PyPI.
# Both leave compiled bytecode next to every module (pip does by default, uv when asked):
# where PYTHONDONTWRITEBYTECODE is set (many container images set it) Python would otherwise
# compile torch and Lightning again in every process, and importing them takes three times
# as long (about 17 s instead of 5 s here).
installer() {
  if [ -z "${BLOCK4_INSTALLER:-}" ]; then
    if [ "${BLOCK4_NO_UV:-0}" != 1 ] && { python -m uv --version >/dev/null 2>&1 ||
      python -m pip install -q uv >/dev/null 2>&1; }; then
      BLOCK4_INSTALLER="python -m uv pip install --compile-bytecode --python $(command -v python)"
    else
      BLOCK4_INSTALLER="python -m pip install"
    fi
  fi
  echo "$BLOCK4_INSTALLER"
}

install_torch() {
  if installed torch; then return; fi
  local install wheel
  install=$(installer)
  wheel=$(ls "${PIP_FIND_LINKS:-/nonexistent}"/torch-${TORCH_CPU_PIN}*cpu*.whl 2>/dev/null | head -n 1 || true)
  if have_gpu; then
    echo "==> NVIDIA GPU found: installing a CUDA build of torch from PyPI"
    $install "torch>=2.2,<3"
  elif [ -n "$wheel" ]; then
    echo "==> no GPU: installing CPU torch ${TORCH_CPU_PIN} from $wheel"
    $install "$wheel"
  elif [ "$(uname -s)" != Linux ]; then
    # macOS/Windows wheels on PyPI are CPU builds.
    echo "==> no GPU: installing CPU torch ${TORCH_CPU_PIN}"
    $install "torch==${TORCH_CPU_PIN}"
  else
    # On Linux, PyPI's default torch wheel carries several GB of CUDA libraries: ask for the CPU one.
    echo "==> no GPU: installing CPU torch ${TORCH_CPU_PIN} from the PyTorch CPU index"
    $install "torch==${TORCH_CPU_PIN}" --index-url https://download.pytorch.org/whl/cpu
  fi
}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtual environment $VENV"
    python3 -m venv "$VENV"
  fi
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
  install_torch
  if ! installed block4 mkdocs pytest || [ pyproject.toml -nt "$VENV/.block4-installed" ]; then
    echo "==> installing block4 with its docs and dev extras"
    # torch is already there: the package's range accepts it, so nothing replaces it.
    $(installer) -q -e ".[docs,dev]"
    touch "$VENV/.block4-installed"
  fi
  # A venv made before installs compiled bytecode (see `installer`): compile it once.
  if [ ! -e "$VENV/.block4-bytecode" ]; then
    echo "==> compiling the installed packages to bytecode (once)"
    python -m compileall -q -j 0 "$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
      >/dev/null 2>&1 || true
    touch "$VENV/.block4-bytecode"
  fi
  # The live cells' Python runtime (Pyodide's core from npm, pinned; git-ignored). Without it
  # the site still builds and its live cells say that they are not available in this build.
  scripts/vendor_pyodide.sh || echo "==> live cells disabled: could not fetch their runtime" >&2
}

# The browser tests use Debian's chromium. `./dev.sh test` installs it where apt-get can (root,
# or sudo without a password); elsewhere (macOS, no sudo) those tests are skipped with a reason
# and every other test runs. CI (BLOCK4_REQUIRE_BROWSER=1) must have it: there a missing browser
# fails the run.
install_chromium() {
  if [ -x "${BLOCK4_CHROMIUM:-/usr/bin/chromium}" ]; then return 0; fi
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo"; else sudo="none"; fi
  fi
  if ! command -v apt-get >/dev/null 2>&1 || [ "$sudo" = none ]; then
    if [ "${BLOCK4_REQUIRE_BROWSER:-0}" = 1 ]; then
      echo "dev.sh: the browser tests need Chromium at /usr/bin/chromium and apt-get is not usable here" >&2
      return 1
    fi
    echo "==> no Chromium and no apt-get here: the browser tests will be skipped (set BLOCK4_CHROMIUM to a Chromium binary to run them)"
    return 0
  fi
  echo "==> installing Debian chromium for the browser tests"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
}

# One line instead of a traceback when the address `serve` wants is taken.
check_port_free() {
  python - "$1" <<'PY'
import socket, sys
addr = sys.argv[1]
host, _, port = addr.rpartition(":")
try:
    port = int(port)
except ValueError:
    sys.exit(f"dev.sh: BLOCK4_ADDR={addr!r} is not HOST:PORT (e.g. 127.0.0.1:8000)")
with socket.socket() as s:
    try:
        s.bind((host or "127.0.0.1", port))
    except OSError as err:
        sys.exit(f"dev.sh: cannot serve on {addr} ({err.strerror}); stop what uses it or pick "
                 "another address: BLOCK4_ADDR=127.0.0.1:8001 ./dev.sh serve")
PY
}

cmd=${1:-}
case "$cmd" in
  setup)
    setup ;;
  build)
    setup
    python scripts/make_figures.py --jobs auto
    mkdocs build --strict ;;
  serve)
    setup
    addr=${BLOCK4_ADDR:-127.0.0.1:8000}
    check_port_free "$addr"
    python scripts/make_figures.py --jobs auto
    # exec: mkdocs takes this process over, so stopping `./dev.sh serve` (Ctrl+C, kill PID)
    # stops the server too, and with it the background notebook run (block4.notebook_runner).
    exec mkdocs serve --dev-addr "$addr" ;;
  test)
    setup
    install_chromium
    shift
    python -m pytest -n 2 "$@" ;;
  *)
    echo "usage: ./dev.sh serve | test | build | setup" >&2
    exit 2 ;;
esac
