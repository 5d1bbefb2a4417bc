# The two commands from the README. Both are idempotent.
.PHONY: demo test bench

# Set up .venv and run the main job on the bundled real data with the embedded model.
demo:
	scripts/bootstrap.sh
	.venv/bin/tunegate demo

# Set up .venv with the test dependencies and run the whole test suite.
test:
	scripts/bootstrap.sh test
	scripts/test.sh

# Set up .venv with lm-eval, TRL and the decision-quality data, and run the benchmarks (each prints a table and writes bench/results/*.json).
bench:
	scripts/bootstrap.sh bench
	.venv/bin/python bench/audit_scale.py
	HF_HUB_OFFLINE=1 .venv/bin/python bench/eval_throughput.py
	HF_HUB_OFFLINE=1 .venv/bin/python bench/served_eval.py
	HF_HUB_OFFLINE=1 .venv/bin/python bench/train_throughput.py
	.venv/bin/python bench/bootstrap_memory.py
	HF_HUB_OFFLINE=1 .venv/bin/python bench/decision_quality.py
