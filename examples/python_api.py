# %% [markdown]
# # tunegate from Python
#
# `tunegate.advise` runs the same recipe as `tunegate advise` on a file, a pandas DataFrame or a `datasets`
# Dataset, and returns the typed report with the arm scores and the per-item predictions as pandas
# DataFrames. Without `out=` it writes nothing to disk except the
# model response cache (~/.cache/tunegate): the run folder is a temporary one.
#
# Run it as a script (`python examples/python_api.py`) or cell by cell in a notebook. It uses the
# embedded SmolLM2-135M-Instruct; the test suite runs it with a fake model (tests/test_api.py sets
# `BACKEND`).

# %%
import tempfile

import pandas as pd

import tunegate
from advisor.demo import write_demo_data

BACKEND = globals().get("BACKEND", "hf")  # "hf" (the default), "openai", "none", or a backend object
data = write_demo_data(tempfile.mkdtemp(prefix="tunegate-example-"), n=600)  # real Rotten Tomatoes rows
rows = pd.read_json(data, lines=True)  # a DataFrame: chat `messages`, or table columns such as text/label

# %%
result = tunegate.advise(rows, eval_size=40, dev_size=20, k_ladder=(1, 2), backend=BACKEND)
print(result.verdict, "-", result.report.decision.summary)

# %% The arms: one row each, with the target metric and its 95% interval
print(result.arms[["name", "k", "accuracy", "accuracy_low", "accuracy_high", "best"]].to_string(index=False))

# %% Per-item predictions: where does the best arm go wrong?
best = result.arms.loc[result.arms["best"], "name"]
wrong = result.predictions.query("arm in @best.tolist() and not correct")
print(wrong[["line", "target", "prediction", "input"]].head().to_string(index=False))

# %% The rules behind the verdict
for rule in result.report.decision.fired:
    print(f"{rule.id}: {rule.message}")
