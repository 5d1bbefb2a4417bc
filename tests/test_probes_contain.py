"""Containment probes: a run touches nothing outside its own run folder, whatever the folder holds.

Each probe builds a hostile or clumsy set-up in its own folder (links at every name of a run folder,
`--out` at a project, home-like folder, file, pipe or dangling link, input files inside `--out` under
the names a run writes, tampered split.json/prompts.json, read-only folders, parallel runs, `train
--force` through planted links), runs one command and checks, on top of the clean-ending checks of
tests/test_probes.py (a documented exit code, one-line errors, no traceback, no control character):

- every file, folder and link of the probe's folder outside the folder the run may write (`writes`;
  None: nothing at all) is byte for byte as before: a link's target, a victim folder "outside", the
  input files, a refused `--out`;
- no `.lock` is left behind, and a run refused before it started left no folder.

Run ``python tests/test_probes_contain.py`` from the repository root for the table (category, tried,
clean, failures); the test asserts that every probe is clean.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_probes import (
    DOCUMENTED,
    REPO,
    VERDICTS,
    Outcome,
    Patch,
    Probe,
    _fifo,
    _good,
    _judge,
    _rows,
    _write,
    failures,
)
from test_probes import table as probe_table

NOT_VERDICTS = DOCUMENTED - VERDICTS
SECRET = b"ssh-ed25519 AAAA secret key of the user\n"


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under `folder` (links not followed): a file's sha256, a link's target, 'dir', or the
    kind of a special file. Two snapshots are equal when nothing below was written, made or removed."""
    out: dict[str, str] = {}
    if not os.path.lexists(folder):
        return out
    for here, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(here) / name
            st = os.lstat(p)
            rel = str(p.relative_to(folder))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "link:" + os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = "dir"
            elif stat.S_ISREG(st.st_mode):
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = f"special:{stat.S_IFMT(st.st_mode)}"
    return out


@dataclass
class ContainProbe(Probe):
    writes: str | None = None  # the folder (relative to the probe's) the command may write; None: nothing
    cwd: str | None = None  # run from this folder (relative to the probe's)
    parallel: int = 0  # run the command this many times at once, in subprocesses


# --------------------------------------------------------------------------- set-ups


def _outside(d: Path) -> Path:
    """Victims outside every run folder: a secret file, and a folder shaped like a run's train/."""
    out = d / "outside"
    (out / "train" / "checkpoints" / "step-0000001").mkdir(parents=True, exist_ok=True)
    (out / "train" / "adapter").mkdir(exist_ok=True)
    (out / "secret").write_bytes(SECRET)
    (out / "train" / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n', encoding="utf-8")
    (out / "train" / "checkpoints" / "step-0000001" / "state.pt").write_bytes(b"weights")
    (out / "train" / "adapter" / "adapter_config.json").write_text("{}", encoding="utf-8")
    return out


def _quiet(argv: list[str]) -> int:
    from advisor.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(argv)


def _run(d: Path) -> Path:
    """A finished data-only run at d/run (its data at d/good.jsonl)."""
    _quiet(["advise", _good(d), "--no-model", "--out", str(d / "run")])
    assert (d / "run" / "decision.json").is_file()
    return d / "run"


def _link(d: Path, name: str, *, dangling: bool = False) -> Path:
    """A finished run whose `name` is replaced by a link to a victim outside (a file or a folder)."""
    run = _run(d)
    out = _outside(d)
    target = out / ("nowhere" if dangling else ("train" if name in _FOLDERS else "secret"))
    p = run / name
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif os.path.lexists(p):
        p.unlink()
    p.parent.mkdir(parents=True, exist_ok=True)
    p.symlink_to(target)
    return run


_FOLDERS = {"plots", "predictions", "train", "mlruns", "tensorboard", "train/checkpoints", "train/adapter"}
_FOLDERS |= {"train/best", "train/merged"}


def _home(d: Path) -> Path:
    """A folder shaped like a home folder or a project: dotfiles, a key, and files named like a run's."""
    home = d / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_bytes(SECRET)
    (home / ".bashrc").write_text("export PATH=$HOME/bin:$PATH\n", encoding="utf-8")
    (home / "project").mkdir()
    for name in ("config.json", "report.md", "split.json", "prompts.json", "decision.json"):
        (home / "project" / name).write_text(f'{{"mine": "{name}"}}\n', encoding="utf-8")
    return home


def _project(d: Path, name: str) -> str:
    """A project folder holding one file under a name a run writes."""
    folder = d / "project"
    folder.mkdir()
    (folder / name).write_text("the user's own file\n", encoding="utf-8")
    return str(folder)


def _marked(d: Path) -> Path:
    """A new run folder holding only tunegate's marker (as `create` leaves it)."""
    run = d / "run"
    run.mkdir()
    (run / ".tunegate-run").write_text("tunegate run\n", encoding="utf-8")
    return run


def _data_inside(d: Path, rel: str) -> str:
    """A marked run folder with the data file inside it at `rel` (a name the run writes)."""
    run = _marked(d)
    return _write(run, rel, _rows())


_TINY: dict[str, Path] = {}


def _tiny_model() -> str:
    """The 2-layer random Llama of tests/tiny.py, built once per process."""
    if "model" not in _TINY:
        from tiny import tiny_llama

        _TINY["model"] = tiny_llama(Path(tempfile.mkdtemp(prefix="tunegate-tiny-")))
    return str(_TINY["model"])


def _train(d: Path, *extra: str) -> list[str]:
    """`train --force` on d/run with the tiny model and one step (reaches the outputs only when the
    run folder lets it)."""
    return [
        "train",
        str(d / "run"),
        "--force",
        "--train-set",
        f"model={_tiny_model()}",
        "--train-set",
        "max_steps=1",
        "--train-set",
        "batch_size=2",
        *extra,
    ]


_FAKE: dict[str, Path] = {}


def _fake_run(d: Path) -> Path:
    """A finished run with prompting measured (the fake model of tests/fakes.py), copied to d/run."""
    if "run" not in _FAKE:
        from fakes import FakeBackend

        from advisor import advise
        from advisor.demo import write_demo_data

        base = Path(tempfile.mkdtemp(prefix="tunegate-fake-"))
        data = write_demo_data(str(base / "data"), n=80)
        keywords = {"fresh": {"good", "great"}, "rotten": {"bad", "dull"}}
        with _env("TUNEGATE_CACHE_DIR", str(base / "cache")):
            advise(data, out=base / "run", backend=FakeBackend(keywords), eval_size=20, dev_size=10,
                   k_ladder=(1, 2), latency_samples=1)  # fmt: skip
        _FAKE["run"] = base / "run"
    shutil.copytree(_FAKE["run"], d / "run", symlinks=True)
    return d / "run"


@contextlib.contextmanager
def _env(name: str, value: str) -> Any:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _edit_json(path: Path, change: Callable[[Any], Any]) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text(encoding="utf-8")))), encoding="utf-8")


def _split(d: Path, change: Callable[[dict[str, Any]], Any]) -> list[str]:
    run = _run(d)
    _edit_json(run / "split.json", change)
    return _train(d)


def _move_eval_to_train(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "train": doc["train"] + doc["eval"][:1]}


def _dup_content_split(d: Path) -> list[str]:
    """Two data lines with the same input, one in train and one in eval."""
    rows = [json.loads(line) for line in _rows().splitlines()]
    rows.append(dict(rows[0]))  # line 31 repeats line 1's input
    data = _write(d, "dup.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    _quiet(["advise", data, "--no-model", "--out", str(d / "run")])
    run = d / "run"

    def change(doc: dict[str, Any]) -> dict[str, Any]:
        lines = {1, 31}
        keep = {k: [i for i in doc[k] if i not in lines] for k in ("train", "dev", "eval")}
        return {**doc, **keep, "train": keep["train"] + [1], "eval": keep["eval"] + [31]}

    _edit_json(run / "split.json", change)
    return _train(d)


def _own_demo(d: Path) -> list[str]:
    """prompts.json: an eval item listed among its own demonstrations."""
    run = _fake_run(d)

    def change(doc: dict[str, Any]) -> dict[str, Any]:
        arm = next(a for a in doc["arms"] if a["demos"])
        line = next(iter(arm["demos"]))
        arm["demos"][line] = [int(line)] + arm["demos"][line][1:]
        return doc

    _edit_json(run / "prompts.json", change)
    return ["verify", str(run)]


def _readonly(name: str) -> Callable[[Patch], None]:
    """The file system refuses writes below a folder (EROFS), as a read-only mount does (the tests run
    as root, for whom permission bits do not refuse)."""

    def setup(p: Patch) -> None:
        real_open, real_mkdir = os.open, os.mkdir
        folder = str(_CURRENT["probe"] / name)

        def below(path: Any) -> bool:
            return os.path.abspath(os.fspath(path)).startswith(folder)

        def open_(path: Any, flags: int, *a: Any, **k: Any) -> int:
            if below(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
            return real_open(path, flags, *a, **k)

        def mkdir(path: Any, *a: Any, **k: Any) -> None:
            if below(path):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
            return real_mkdir(path, *a, **k)

        p.setattr(os, "open", open_)
        p.setattr(os, "mkdir", mkdir)

    return setup


# --------------------------------------------------------------------------- the probes

_CURRENT: dict[str, Path] = {}  # the running probe's folder (the read-only patches need it)
RUN_NAMES = [".lock", ".tunegate-run", "decision.json", "config.json", "split.json", "prompts.json"]
RUN_NAMES += ["report.md", "report.html", "plots", "predictions", "train", "mlruns"]


def probes() -> list[ContainProbe]:
    out: list[ContainProbe] = []

    # --- a link at each name of a finished run, the run re-advised into it: refused, nothing followed
    for name in RUN_NAMES:
        out.append(
            ContainProbe(
                "links in the run",
                f"advise: {name} is a link",
                lambda d, n=name: (
                    _link(d, n),
                    ["advise", str(d / "good.jsonl"), "--no-model", "--out", str(d / "run")],
                )[1],  # fmt: skip
                {3},
            )
        )
    for name in (".lock", "decision.json", "train", "predictions"):
        out.append(
            ContainProbe(
                "links in the run",
                f"advise: {name} is a dangling link",
                lambda d, n=name: (_link(d, n, dangling=True), ["advise", str(d / "good.jsonl"),
                                                                "--no-model", "--out", str(d / "run")])[1],
                {3},
            )
        )  # fmt: skip
    for name in ("report.md", "report.html", "plots", "decision.json"):
        out.append(
            ContainProbe(
                "links in the run",
                f"report: {name} is a link",
                lambda d, n=name: ["report", str(_link(d, n))],
                {3},
            )
        )
    for name in (".lock", "decision.json", "split.json", "config.json"):
        out.append(
            ContainProbe(
                "links in the run",
                f"train: {name} is a link",
                lambda d, n=name: (_link(d, n), _train(d))[1],
                {3},
            )
        )
    out.append(
        ContainProbe(
            "links in the run",
            "verify: .lock is a link",
            lambda d: (_link(d, ".lock"), ["verify", str(d / "run")])[1],
            {3},
        )
    )  # fmt: skip
    out.append(
        ContainProbe(
            "links in the run",
            "verify: predictions is a link",
            lambda d: (
                _fake_run(d),
                _relink(d / "run" / "predictions", _outside(d) / "train"),
                ["verify", str(d / "run")],
            )[2],  # fmt: skip
            {3},
        )
    )
    out.append(
        ContainProbe(
            "links in the run",
            "hard-linked .lock",
            lambda d: (_run(d), _outside(d), _hardlink(d / "outside" / "secret", d / "run" / ".lock"),
                       ["advise", str(d / "good.jsonl"), "--no-model", "--out", str(d / "run")])[3],
            {3},
        )
    )  # fmt: skip

    # --- train --force / --resume through planted links: nothing outside deleted or written
    for name in ("train", "train/checkpoints", "train/adapter", "train/best", "train/metrics.jsonl"):
        out.append(
            ContainProbe(
                "train --force",
                f"{name} is a link",
                lambda d, n=name: (_link(d, n), _train(d))[1],
                {3},
            )
        )
    out.append(
        ContainProbe(
            "train --force",
            "--resume, checkpoints is a link",
            lambda d: (_link(d, "train/checkpoints"), _train(d, "--resume"))[1],
            {3},
        )
    )
    out.append(
        ContainProbe(
            "train --force",
            "train is a file",
            lambda d: (_run(d), _write(d / "run", "train", "not a folder\n"), _train(d))[2],
            {8},
        )
    )
    out.append(
        ContainProbe(
            "train --force",
            "train/config.json is a link",
            lambda d: (_link(d, "train/config.json"), _train(d))[1],
            {3},
        )
    )

    # --- where --out points
    out += [
        ContainProbe("--out", "a home-like folder", lambda d: ["advise", _good(d), "--no-model", "--out",
                                                              str(_home(d))], {2}),
        ContainProbe("--out", "~/.ssh", lambda d: ["advise", _good(d), "--no-model", "--out",
                                                   str(_home(d) / ".ssh")], {2}),
        ContainProbe("--out", ". (a project)", lambda d: (_home(d), ["advise", str(Path(_good(d)).resolve()),
                     "--no-model", "--out", "."])[1], {2}, cwd="home/project"),
        ContainProbe("--out", "a link to a home-like folder", lambda d: ["advise", _good(d), "--no-model",
                     "--out", str(_symlink(d / "lnk", _home(d)))], {2}),
        ContainProbe("--out", "a dangling link", lambda d: ["advise", _good(d), "--no-model", "--out",
                     str(_symlink(d / "lnk", d / "nowhere"))], {8}),
        ContainProbe("--out", "a file", lambda d: ["advise", _good(d), "--no-model", "--out",
                     _write(d, "f.txt", "x")], {8}),
        ContainProbe("--out", "the data file itself", lambda d: ["advise", _good(d), "--no-model", "--out",
                     _good(d)], {8}),
        ContainProbe("--out", "a named pipe", lambda d: ["advise", _good(d), "--no-model", "--out",
                     _fifo(d, "pipe")], {8}),
        ContainProbe("--out", "/dev/null", lambda d: ["advise", _good(d), "--no-model", "--out",
                     "/dev/null"], {8}),
        ContainProbe("--out", "under a file", lambda d: ["advise", _good(d), "--no-model", "--out",
                     _write(d, "f.txt", "x") + "/run"], {8}),
        ContainProbe("--out", "a folder with only a dotfile", lambda d: ["advise", _good(d), "--no-model",
                     "--out", str(Path(_write(d / "p", ".env", "TOKEN=x\n")).parent)], {2}),
        ContainProbe("--out", "a folder whose marker is a folder", lambda d: ["advise", _good(d),
                     "--no-model", "--out", str(_mkdirs(d / "run" / ".tunegate-run").parent)], {2}),
        ContainProbe("--out", "a run with a foreign decision.json", lambda d: ["advise", _good(d),
                     "--no-model", "--out", str(Path(_write(d / "run", "decision.json", '{"a": 1}')).parent)],
                     {2}),
        ContainProbe("--out", "a folder holding only .lock", lambda d: ["advise", _good(d), "--no-model",
                     "--out", str(Path(_write(d / "run", ".lock", "123\n")).parent)], VERDICTS, writes="run"),
        ContainProbe("--out", "read-only empty folder", lambda d: ["advise", _good(d), "--no-model",
                     "--out", str(_mkdirs(d / "run"))], {8}, patch=_readonly("run")),
    ]  # fmt: skip
    for name in ("config.json", "report.md", "split.json", "prompts.json", "report.html", "plots"):
        out.append(
            ContainProbe(
                "--out",
                f"a project holding {name}",
                lambda d, n=name: ["advise", _good(d), "--no-model", "--out", _project(d, n)],
                {2},
            )
        )

    # --- an input of the run inside --out under a name the run writes: refused, never overwritten
    for rel in ("config.json", "split.json", "prompts.json", "decision.json", "report.md", "report.html",
                "predictions/x.jsonl", "train/x.jsonl", "plots/x.jsonl", "mlruns/x.jsonl"):  # fmt: skip
        out.append(
            ContainProbe(
                "inputs inside --out",
                f"data at {rel}",
                lambda d, r=rel: ["advise", _data_inside(d, r), "--no-model", "--out", str(d / "run")],
                {2},
            )
        )
    out += [
        ContainProbe("inputs inside --out", "--system-prompt at report.md", lambda d: ["advise", _good(d),
                     "--no-model", "--system-prompt", _data_inside(d, "report.md"), "--out", str(d / "run")],
                     {2}),
        ContainProbe("inputs inside --out", "--prices at config.json", lambda d: ["advise", _good(d),
                     "--no-model", "--prices", _data_inside(d, "config.json"), "--out", str(d / "run")], {2}),
        ContainProbe("inputs inside --out", "data is a link to run/config.json", lambda d: ["advise",
                     str(_symlink(d / "data.jsonl", Path(_data_inside(d, "config.json")))), "--no-model",
                     "--out", str(d / "run")], {2}),
        ContainProbe("inputs inside --out", "data hard-linked as run/config.json", lambda d: ["advise",
                     _hardlink(Path(_good(d)), _marked(d) / "config.json"), "--no-model", "--out",
                     str(d / "run")], VERDICTS, writes="run"),
        ContainProbe("inputs inside --out", "demo data in the demo folder", lambda d: ["advise",
                     _demo_data(d), "--no-model", "--out", str(d / "run")], VERDICTS, writes="run"),
    ]  # fmt: skip

    # --- a run that stops before it starts leaves nothing behind
    new = ["--out", "runs/new/run"]
    out += [
        ContainProbe("failed starts", "data missing", lambda d: ["advise", str(d / "no.jsonl"), "--no-model",
                     *new], {3}, cwd="."),
        ContainProbe("failed starts", "bad --model", lambda d: ["advise", _good(d), "--model",
                     str(d / "no-model"), *new], {2}, cwd="."),
        ContainProbe("failed starts", "data is a folder", lambda d: ["advise", str(_mkdirs(d / "dir.jsonl")),
                     "--no-model", *new], {3}, cwd="."),
        ContainProbe("failed starts", "bad data row", lambda d: ["advise", _write(d, "bad.jsonl", "{\n"),
                     "--no-model", *new], {3}, cwd="."),
        ContainProbe("failed starts", "bad rules folder", lambda d: ["advise", _good(d), "--no-model",
                     "--rules", str(d / "no-rules"), *new], {4}, cwd="."),
        ContainProbe("failed starts", "bad model, empty --out kept empty", lambda d: ["advise", _good(d),
                     "--model", str(d / "no-model"), "--out", str(_mkdirs(d / "empty"))], {2}),
        ContainProbe("failed starts", "train on a missing folder", lambda d: ["train", str(d / "nothing"),
                     "--force"], {3}),
        ContainProbe("failed starts", "verify on a non-run folder", lambda d: ["verify", str(_home(d))],
                     {3}),
        ContainProbe("failed starts", "run: data missing", lambda d: ["run", str(d / "no.jsonl"),
                     "--no-model", *new], {3}, cwd="."),
    ]  # fmt: skip

    # --- tampered split.json / prompts.json: refused before training or verification
    out += [
        ContainProbe("tampered run files", "an eval line in train", lambda d: _split(d, _move_eval_to_train),
                     {3}),
        ContainProbe("tampered run files", "a dev line in eval", lambda d: _split(d, lambda s: {**s, "eval":
                     s["eval"] + s["dev"][:1]}), {3}),
        ContainProbe("tampered run files", "a line listed twice", lambda d: _split(d, lambda s: {**s, "train":
                     s["train"] + s["train"][:1]}), {3}),
        ContainProbe("tampered run files", "train is a number", lambda d: _split(d, lambda s: {**s,
                     "train": 5}), {3}),
        ContainProbe("tampered run files", "eval holds a string", lambda d: _split(d, lambda s: {**s,
                     "eval": ["1"]}), {3}),
        ContainProbe("tampered run files", "split.json is a list", lambda d: _split(d, lambda s: [s]), {3}),
        ContainProbe("tampered run files", "same input in train and eval", _dup_content_split, {3}),
        ContainProbe("tampered run files", "an eval item its own demonstration", _own_demo, {3}),
    ]  # fmt: skip

    # --- read-only run folders: exit 8 as documented, nothing written
    for cmd in ("train", "verify", "report", "advise"):
        out.append(
            ContainProbe(
                "read-only run folder",
                f"{cmd} on a read-only run",
                lambda d, c=cmd: (_run(d), _readonly_argv(d, c))[1],
                {8},
                patch=_readonly("run"),
            )
        )

    # --- parallel runs on one new folder: one wins, the others stop at once, nothing mixed or left
    out.append(
        ContainProbe(
            "parallel runs",
            "4 advise on one new --out",
            lambda d: ["advise", _good(d), "--no-model", "--out", str(d / "run")],
            VERDICTS | {2},
            writes="run",
            parallel=4,
        )
    )
    out.append(
        ContainProbe(
            "parallel runs",
            "4 advise on one finished run",
            lambda d: (_run(d), ["advise", str(d / "good.jsonl"), "--no-model", "--out", str(d / "run")])[1],
            VERDICTS | {2},
            writes="run",
            parallel=4,
        )
    )
    return out


def _readonly_argv(d: Path, cmd: str) -> list[str]:
    if cmd == "train":
        return _train(d)
    if cmd == "advise":
        return ["advise", str(d / "good.jsonl"), "--no-model", "--out", str(d / "run")]
    return [cmd, str(d / "run")]


def _relink(p: Path, target: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    p.symlink_to(target)


def _symlink(p: Path, target: Path) -> Path:
    p.symlink_to(target)
    return p


def _hardlink(src: Path, dst: Path) -> str:
    if os.path.lexists(dst):
        dst.unlink()
    os.link(src, dst)
    return str(src)


def _mkdirs(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _demo_data(d: Path) -> str:
    from advisor.demo import write_demo_data

    return str(write_demo_data(str(d / "run"), n=60))


# --------------------------------------------------------------------------- running and judging


def _contained(probe: ContainProbe, d: Path, before: dict[str, str], rc: int | None) -> str | None:
    after = snapshot(d)
    allowed = probe.writes
    changed = sorted(
        k
        for k in set(before) | set(after)
        if before.get(k) != after.get(k) and not (allowed and (k == allowed or k.startswith(allowed + "/")))
    )
    if changed:
        return f"touched outside the run: {', '.join(changed[:4])}"
    left = [k for k, v in after.items() if Path(k).name == ".lock" and v != before.get(k)]
    if left:
        return f"left a lock behind: {left[0]}"
    if allowed and rc in VERDICTS and not (d / allowed / "decision.json").is_file():
        return "a run that ended with a verdict wrote no decision.json"
    return None


def run_probe(probe: ContainProbe, d: Path) -> Outcome:
    _CURRENT["probe"] = d
    cwd = d / probe.cwd if probe.cwd else None
    try:
        argv = probe.argv(d)
    except Exception as exc:  # noqa: BLE001  (a set-up the code under test broke, e.g. an old tunegate)
        return Outcome(probe, None, "", f"set-up failed: {type(exc).__name__}: {exc}")
    before = snapshot(d)
    if probe.parallel:
        rc, err, problem = _run_parallel(probe, argv, d)
    else:
        from advisor.cli import main

        patch = Patch()
        stderr = io.StringIO()
        try:
            if probe.patch is not None:
                probe.patch(patch)
            with contextlib.ExitStack() as stack:
                if cwd is not None:
                    stack.enter_context(contextlib.chdir(cwd))
                stack.enter_context(contextlib.redirect_stderr(stderr))
                stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
                rc: int | None = main(argv)
        except BaseException as exc:  # an exception escaping main is what `entry` turns into exit 70
            rc = 70
            stderr.write(f"Traceback: {type(exc).__name__}: {exc}")
        finally:
            patch.restore()
        err = stderr.getvalue()
        run_dir = d / probe.writes if probe.writes else None
        problem = _judge(probe, rc, err, run_dir if rc in VERDICTS else None)
        errors = [ln for ln in err.splitlines() if ln.startswith("tunegate") and ": error: " in ln]
        if rc not in VERDICTS and problem is None and len(errors) != 1:
            problem = f"{len(errors)} error lines, not one"
    return Outcome(probe, rc, err, problem or _contained(probe, d, before, rc))


def _run_parallel(probe: ContainProbe, argv: list[str], d: Path) -> tuple[int | None, str, str | None]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "advisor.cli", *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=d,
        )
        for _ in range(probe.parallel)
    ]
    results = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=120)
            results.append((p.returncode, err))
        except subprocess.TimeoutExpired:
            p.kill()
            results.append((None, "timeout"))
    for rc, err in results:
        problem = _judge(probe, rc, err, None)
        if problem:
            return rc, err, problem
    if not any(rc in VERDICTS for rc, _ in results):
        return results[0][0], results[0][1], "no run of the parallel ones finished"
    rc, err = next((r, e) for r, e in results if r in VERDICTS)
    return rc, err, _judge(probe, rc, err, d / "run")


def run_all(base: Path) -> list[Outcome]:
    outcomes = []
    with _env("TUNEGATE_CACHE_DIR", str(base / "cache")):
        for i, probe in enumerate(probes()):
            d = base / f"c{i:03d}"
            d.mkdir()
            outcomes.append(run_probe(probe, d))
    return outcomes


def table(outcomes: list[Outcome]) -> str:
    return probe_table(outcomes)


@pytest.mark.slow
def test_every_containment_probe_is_clean(tmp_path: Path) -> None:
    outcomes = run_all(tmp_path)
    print("\n" + table(outcomes))
    assert len(outcomes) >= 50
    problems = failures(outcomes)
    assert not problems, "\n".join(problems)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory() as tmp:
        print(table(run_all(Path(tmp))))
