"""Crash safety: `tunegate advise` killed with SIGKILL at random points repeats no finished model call.

The fault server (tests/faultserver.py) records every answer it finished, per distinct request body,
with the time. Runs that share a cache are killed one after another, each after a random number of
new answers (so the kill lands while requests are in flight), and a last run finishes the job. A body
answered twice is a repeated call, unless its first answer was finished within `GRACE_S` of a kill: an
answer still on the wire when the process died was never received, so asking again is right.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from faultserver import FaultState
from test_faults import REPO, _data

TRIALS = 20
KILLS_PER_CACHE = 5
GRACE_S = 0.25


def _launch(url: str, data: Path, out: Path, cache: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TUNEGATE_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "advisor.cli", "advise", str(data), "--backend", "openai", "--base-url", url,
           "--out", str(out), "--eval-size", "12", "--k", "1,2", "--set", "latency_samples=3"]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkill_at_random_points_repeats_no_finished_call(
    fault_server: tuple[str, FaultState], tmp_path: Path
) -> None:
    url, state = fault_server
    state.delay_s = 0.02  # long enough that a kill often lands with answers in flight
    rng = random.Random(20261129)
    data = _data(tmp_path)
    kills: list[float] = []
    chain = 0
    started = time.monotonic()
    while len(kills) < TRIALS:
        chain += 1
        out, cache = tmp_path / f"run{chain}", tmp_path / f"cache{chain}"
        for _ in range(KILLS_PER_CACHE):
            before = len(state.answered)
            target = before + rng.randint(1, 30)
            proc = _launch(url, data, out, cache)
            while proc.poll() is None and len(state.answered) < target and time.monotonic() - started < 80:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.03))
            if proc.poll() is not None:
                break  # it finished before the kill: this cache is done
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills.append(time.monotonic())
            if len(kills) == TRIALS:
                break
        final = _launch(url, data, out, cache)
        _, err = final.communicate(timeout=60)
        assert final.returncode in (0, 10, 11, 12, 13), err.decode()[-3000:]
        assert time.monotonic() - started < 85, "the crash-safety test outgrew its time"

    firsts: dict[str, float] = {}
    repeated, in_flight = [], 0
    for a in state.answered:
        if a.key not in firsts:
            firsts[a.key] = a.finished
            continue
        first = firsts[a.key]
        if any(first <= k < first + GRACE_S for k in kills):
            in_flight += 1
        else:
            repeated.append(a.path)
    print(f"{len(kills)} kills over {chain} caches, {len(firsts)} distinct calls, "
          f"{len(repeated)} repeated, {in_flight} asked again after an answer in flight")  # fmt: skip
    assert len(kills) == TRIALS
    assert repeated == []
