#!/usr/bin/env bash
# Run the whole test suite; fail when pytest collects nothing (its exit code 5).
# TEST_WORKERS test processes (default 2, pytest-xdist; 0 runs in this process), a test file per worker at
# a time, so a file's fixtures (a model, a server) are built once per worker.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/python -m pytest -q -p no:cacheprovider -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
rc=$?
if [ "$rc" = 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
