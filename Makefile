# The two commands from the README. Both are idempotent.
.PHONY: demo test test-fast bench

# Set up .venv and run the main job on the bundled real data with the embedded model.
demo:
	scripts/bootstrap.sh
	.venv/bin/tunegate demo

# Set up .venv with the test dependencies, then lint (ruff), type-check (mypy) and run the whole test suite.
test:
	scripts/bootstrap.sh test
	scripts/test.sh

# The developer's inner loop: the same, without the tests that need the real model, a llama.cpp server,
# a browser or torchrun, and without the slow sweeps (about 3 minutes on two cores).
test-fast:
	scripts/bootstrap.sh test
	scripts/test.sh --fast

# Set up .venv with lm-eval, TRL and the decision-quality data, and run the benchmarks (each prints a table and writes bench/results/*.json).
bench:
	scripts/bootstrap.sh bench
	.venv/bin/python bench/audit_scale.py
	HF_HUB_OFFLINE=1 .venv/bin/python bench/eval_throughput.py
	HF_HUB_OFFLINE=1 .venv/bin/python bench/served_eval.py
	HF_HUB_OFFLINE=1 .venv/bin/python bench/train_throughput.py
	.venv/bin/python bench/bootstrap_memory.py
	HF_HUB_OFFLINE=1 .venv/bin/python bench/decision_quality.py
