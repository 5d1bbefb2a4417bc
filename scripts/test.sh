#!/usr/bin/env bash
# The test command: lint (ruff), types (mypy), then the suite; fail when pytest collects nothing (exit 5).
#   scripts/test.sh                the whole suite, as CI runs it
#   scripts/test.sh --fast         the fast tier: no real model, llama.cpp server, browser, torchrun or slow sweep
#   scripts/test.sh ARGS           extra pytest arguments (a file, -k, -x ...)
# TEST_WORKERS test processes (default 2, pytest-xdist; 0 runs in this process), a test file per worker at
# a time, so a file's fixtures (a model, a server) are built once per worker.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
tier=()
if [ "${1:-}" = --fast ]; then
  shift
  tier=(-m "not realmodel and not server and not browser and not torchrun and not slow")
fi
.venv/bin/ruff check --quiet . || exit 1
.venv/bin/ruff format --check --quiet . || { echo "ruff format: files above need formatting" >&2; exit 1; }
.venv/bin/mypy advisor || exit 1
.venv/bin/python -m pytest -q -p no:cacheprovider -n "${TEST_WORKERS:-2}" --dist loadfile "${tier[@]}" "$@"
rc=$?
if [ "$rc" = 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
