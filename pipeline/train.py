"""`python -m pipeline.train RUN_DIR [key=value ...] [--force] [--resume]`: train a run's adapter.

The entry to launch under torchrun (`torchrun --nproc_per_node 4 -m pipeline.train RUN_DIR ...`): gate,
train, export, as `tunegate train` does before it verifies (see `pipeline.run`). The loop itself is in
`advisor.finetune.loop`, checkpoints in `advisor.finetune.checkpoint`, the process set-up in
`advisor.finetune.distributed` (below both commands: `advise` trains its pilot with the same loop).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from contextlib import nullcontext

from advisor.errors import ExitCode, TunegateError
from advisor.finetune.config import TrainConfig
from advisor.finetune.distributed import launched_rank
from advisor.progress_bars import shown
from advisor.rundir import RunDir
from pipeline.run import train_run

USAGE = "usage: python -m pipeline.train RUN_DIR [key=value ...] [--force] [--resume]"


def main(argv: Sequence[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    flags = {a for a in argv if a.startswith("--")}
    unknown = sorted(flags - {"--force", "--resume"})
    if len(args) < 1 or unknown:
        print(USAGE + (f" (unknown: {', '.join(unknown)})" if unknown else ""), file=sys.stderr)
        return int(ExitCode.USAGE)
    try:
        # rank 0 holds the run folder while it trains, as `tunegate train` does
        with shown(), RunDir(args[0]).lock() if launched_rank() == 0 else nullcontext():
            train_run(
                args[0],
                TrainConfig.from_toml(None, args[1:]),
                force="--force" in flags,
                resume="--resume" in flags,
            )
    except TunegateError as exc:
        for problem in exc.problems:
            print(f"tunegate: error: {problem}", file=sys.stderr)
        return int(exc.exit_code)
    return int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
