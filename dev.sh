#!/usr/bin/env bash
# block4 developer entry point. Two commands do everything (see README.md):
#   ./dev.sh serve   set up .venv, refresh stale figures, build and serve the site on :8000
#   ./dev.sh test    set up .venv (and Chromium for the browser tests), run the whole test suite
# Other verbs: setup (only install), build (strict build into site/).
set -euo pipefail
cd "$(dirname "$0")"

VENV=${BLOCK4_VENV:-.venv}
TORCH_CPU_PIN=2.13.0   # a CPU build of this release is what CI and the reference machine use

have_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

install_torch() {
  if python -c "import torch" >/dev/null 2>&1; then return; fi
  if have_gpu; then
    echo "==> NVIDIA GPU found: installing a CUDA build of torch from PyPI"
    python -m pip install "torch>=2.2,<3"
  elif [ "$(uname -s)" != Linux ] || ls "${PIP_FIND_LINKS:-/nonexistent}"/torch-${TORCH_CPU_PIN}*cpu* >/dev/null 2>&1; then
    # macOS/Windows wheels on PyPI are CPU builds; a local CPU wheel is used where one exists.
    echo "==> no GPU: installing CPU torch ${TORCH_CPU_PIN}"
    python -m pip install "torch==${TORCH_CPU_PIN}"
  else
    # On Linux, PyPI's default torch wheel carries several GB of CUDA libraries: ask for the CPU one.
    echo "==> no GPU: installing CPU torch ${TORCH_CPU_PIN} from the PyTorch CPU index"
    python -m pip install "torch==${TORCH_CPU_PIN}" --index-url https://download.pytorch.org/whl/cpu
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
  if ! python -c "import block4, mkdocs, pytest" >/dev/null 2>&1 || [ pyproject.toml -nt "$VENV/.block4-installed" ]; then
    echo "==> installing block4 with its docs and dev extras"
    python -m pip install -q -e ".[docs,dev]"
    touch "$VENV/.block4-installed"
  fi
  # The live cells' Python runtime (Pyodide's core from npm, pinned; git-ignored). Without it
  # the site still builds and its live cells say that they are not available in this build.
  scripts/vendor_pyodide.sh || echo "==> live cells disabled: could not fetch their runtime" >&2
}

install_chromium() {
  if [ -x /usr/bin/chromium ]; then return; fi
  echo "==> installing Debian chromium for the browser tests"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
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
    python scripts/make_figures.py --jobs auto
    mkdocs serve --dev-addr "${BLOCK4_ADDR:-127.0.0.1:8000}" ;;
  test)
    setup
    install_chromium
    shift
    python -m pytest -n 2 "$@" ;;
  *)
    echo "usage: ./dev.sh serve | test | build | setup" >&2
    exit 2 ;;
esac
