"""The environment probe table: what the machine, the shell and the caches hand tunegate, each case ending
with a documented exit code.

Categories: the standard streams of every subcommand closed (`>&-`), with their reader gone (what
`| head -1` leaves), on a full device (`> /dev/full`) or in an encoding that cannot hold the text;
damaged files in the user cache (`rates.json`, the converted model, the response database); damaged
`datasets` folders and Parquet files; odd environment variables (HOME, XDG_CACHE_HOME, TMPDIR,
TUNEGATE_CACHE_DIR, COLUMNS, the locale); and the forms a rule threshold override can take.

Clean means what tests/test_probes.py says (documented code, never 70, one `tunegate: error:` line, no
traceback), plus each probe's own check: a closed stream leaves the run whole, a full stdout is named, a
damaged derived cache is rebuilt, a damaged input file is named. Probes that touch the shell's streams or
the process environment run in a subprocess; the others call `advisor.cli.main` in-process.

Run ``python tests/test_probes_env.py`` from the repository root to print the table (category, tried,
clean, failures); the test asserts that every probe is clean.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_probes import REPO, Outcome, Patch, _advise, _good_run, _judge, _write, failures, table  # noqa: E402

BROKEN_PIPE = 141
Check = Callable[[Path, int, str, str], str | None]  # (folder, rc, stdout, stderr) -> problem or None


@dataclass
class EnvProbe:
    category: str
    name: str
    argv: Callable[[Path], list[str]]
    expect: set[int]
    redirect: str = ""  # shell redirection (`>&-`, `2>/dev/full`), or `stdout-gone` / `stderr-gone`
    env: dict[str, str | None] | Callable[[Path], dict[str, str | None]] = field(default_factory=dict)
    check: Check | None = None
    patch: Callable[[Patch, Path], None] | None = None  # in-process only
    in_process: bool = False

    @property
    def subprocess(self) -> bool:
        return not self.in_process


# --------------------------------------------------------------------------- the subcommands


@dataclass(frozen=True)
class Command:
    argv: Callable[[Path], list[str]]
    code: int  # its exit code when the streams are fine
    stdout: bool  # whether it writes to stdout (else a broken stdout cannot fail it)
    stderr: bool


def _data(d: Path) -> str:
    rows = "".join(
        json.dumps({"prompt": f"critique {i} très {'bonne' if i % 2 else 'mauvaise'}", "completion": lab})
        + "\n"
        for i, lab in enumerate(["positif →", "négatif ✗"] * 15)
    )
    return _write(d, "d.jsonl", rows)


def _advise_argv(*extra: str) -> Callable[[Path], list[str]]:
    return lambda d: ["advise", _data(d), "--no-model", "--out", str(d / "run"), *extra]


COMMANDS = {
    "advise": Command(_advise_argv(), 12, True, True),
    "advise --json": Command(_advise_argv("--json"), 12, True, True),
    "advise -q": Command(_advise_argv("-q"), 12, True, False),
    "advise --dry-run": Command(_advise_argv("--dry-run"), 0, True, False),
    "rules list": Command(lambda d: ["rules", "list"], 0, True, False),
    "rules validate": Command(lambda d: ["rules", "validate"], 0, True, False),
    "report": Command(lambda d: ["report", _good_run(d)], 0, True, False),
    "train (refused)": Command(lambda d: ["train", _good_run(d)], 5, False, True),
    "verify (no model run)": Command(lambda d: ["verify", _good_run(d)], 2, False, True),
    "--help": Command(lambda d: ["--help"], 0, True, False),
    "usage error": Command(lambda d: ["advise"], 2, False, True),
}


def _named_stdout(d: Path, rc: int, out: str, err: str) -> str | None:
    return None if "tunegate: error: cannot write to stdout: the disk is full" in err else "stdout not named"


def _run_whole(d: Path, rc: int, out: str, err: str) -> str | None:
    """An advise run whose streams were closed still wrote its own files, none of them holding output."""
    decision = d / "run" / "decision.json"
    if not decision.exists():
        return None
    try:
        json.loads(decision.read_text(encoding="utf-8"))
    except ValueError:
        return "decision.json was damaged (a closed stream's descriptor reached it?)"
    return None


def _printed(d: Path, rc: int, out: str, err: str) -> str | None:
    return None if out.strip() else "printed nothing"


def _json_exact(d: Path, rc: int, out: str, err: str) -> str | None:
    try:
        labels = set(json.loads(out)["audit"]["label_counts"])
    except (ValueError, KeyError):
        return "--json output is not the document"
    return None if labels == {"positif →", "négatif ✗"} else f"labels changed: {labels}"


def _all(*checks: Check) -> Check:
    def run(d: Path, rc: int, out: str, err: str) -> str | None:
        return next((p for c in checks if (p := c(d, rc, out, err)) is not None), None)

    return run


def stream_probes() -> list[EnvProbe]:
    out: list[EnvProbe] = []
    every_mode = {"advise", "advise --json", "rules list", "train (refused)"}
    for name, cmd in COMMANDS.items():
        modes = {
            ">&-": {cmd.code},
            "stdout-gone": {BROKEN_PIPE if cmd.stdout else cmd.code},
            "> /dev/full": {8 if cmd.stdout else cmd.code},
        }
        if name in every_mode:
            modes |= {
                "2>&-": {cmd.code},
                "<&- >&- 2>&-": {cmd.code},
                "stderr-gone": {BROKEN_PIPE if cmd.stderr else cmd.code},
                "2> /dev/full": {8 if cmd.stderr else cmd.code},
                "PYTHONIOENCODING=ascii": {cmd.code},
                "LC_ALL=C": {cmd.code},
                "PYTHONIOENCODING=latin-1": {cmd.code},
            }
        for mode, expect in modes.items():
            env: dict[str, str | None] = {}
            redirect = mode
            check: Check | None = _run_whole if name.startswith("advise") else None
            if "=" in mode:
                key, value = mode.split("=")
                env, redirect = {key: value}, ""
                check = _json_exact if name == "advise --json" else _printed if cmd.stdout else None
            elif mode == "> /dev/full" and cmd.stdout:
                check = _named_stdout
            out.append(EnvProbe("streams", f"{name} {mode}", cmd.argv, expect, redirect, env, check))
    return out


# --------------------------------------------------------------------------- the user cache


def _cache_env(d: Path) -> dict[str, str | None]:
    return {"TUNEGATE_CACHE_DIR": str(d / "cache")}


_TINY: list[Path] = []


def tiny_model() -> Path:
    """One tiny random Llama folder for the whole table (tests/tiny.py), made on first use."""
    if not _TINY:
        from tiny import tiny_llama

        _TINY.append(tiny_llama(Path(tempfile.mkdtemp(prefix="tunegate-probes-"))))
    return _TINY[0]


def _dry_run_tiny(d: Path) -> list[str]:
    return ["advise", _data(d), "--model", str(tiny_model()), "--dry-run", "--out", str(d / "run")]


def _with_cache(prepare: Callable[[Path], None]) -> Callable[[Patch, Path], None]:
    """Point TUNEGATE_CACHE_DIR at the probe's folder, then damage what `prepare` damages there."""

    def setup(p: Patch, d: Path) -> None:
        cache = d / "cache"
        cache.mkdir(exist_ok=True)
        p.setattr(os, "environ", {**os.environ, "TUNEGATE_CACHE_DIR": str(cache)})
        prepare(cache)

    return setup


def _rates(body: str | bytes) -> Callable[[Path], None]:
    def prepare(cache: Path) -> None:
        (cache / "rates.json").write_bytes(body if isinstance(body, bytes) else body.encode())

    return prepare


def _fifo_rates_env(d: Path) -> dict[str, str | None]:
    """A named pipe where rates.json belongs: reading it would block forever (a subprocess probe)."""
    cache = d / "cache"
    cache.mkdir(exist_ok=True)
    os.mkfifo(cache / "rates.json")
    return {"TUNEGATE_CACHE_DIR": str(cache)}


RATES = {
    "not JSON": "{",
    "a list": "[1, 2, 3]",
    "entries are lists": '{"hf:tiny": [1, 2]}',
    "ops are numbers": '{"hf:tiny": {"loglikelihood": 3}}',
    "rate is text": '{"hf:x": {"generate": {"seconds_per_request": "1", "requests": "many"}}}',
    "rate NaN": '{"hf:x": {"generate": {"seconds_per_request": NaN}}}',
    "rate 1e999": '{"hf:x": {"generate": {"seconds_per_request": 1e999}}}',
    "rate 400-digit int": '{"hf:x": {"generate": {"seconds_per_request": ' + "9" * 400 + "}}}",
    "rate 6000-digit int": '{"a": ' + "9" * 6000 + "}",
    "nested 100k deep": "[" * 100_000,
    "not UTF-8": b'{"\xff": 1}',
    "a 2 MB file": '{"pad": "' + "x" * 2_000_000 + '"}',
}


def _converted(damage: Callable[[Path], None]) -> Callable[[Patch, Path], None]:
    """The embedded model's converted folder in the probe's cache, damaged; its conversion replaced by a
    copy of the tiny model (the real one takes 30-60 s), so a rebuild is seen and cheap."""

    def setup(p: Patch, d: Path) -> None:
        import advisor.backends.model as model

        cache = d / "cache"
        target = cache / "models" / model.EMBEDDED_NAME
        target.parent.mkdir(parents=True)
        shutil.copytree(tiny_model(), target)
        damage(target)
        p.setattr(os, "environ", {**os.environ, "TUNEGATE_CACHE_DIR": str(cache)})
        p.setattr(
            model, "_convert_embedded", lambda out: shutil.copytree(tiny_model(), out, dirs_exist_ok=True)
        )

    return setup


def _rebuilt(d: Path, rc: int, out: str, err: str) -> str | None:
    from advisor.backends.model import EMBEDDED_NAME, damaged_file

    target = d / "cache" / "models" / EMBEDDED_NAME
    if not target.is_dir():
        return "the converted model was not rebuilt"
    return None if damaged_file(target) is None else f"still damaged: {damaged_file(target)}"


def _cut(name: str, keep: int) -> Callable[[Path], None]:
    return lambda f: (f / name).write_bytes((f / name).read_bytes()[:keep])


def _replace(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda f: (f / name).write_bytes(data)


def _append(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda f: (f / name).write_bytes((f / name).read_bytes() + data)


def _as_file(f: Path) -> None:
    shutil.rmtree(f)
    f.write_text("not a folder")


def _as_dangling_link(f: Path) -> None:
    shutil.rmtree(f)
    f.symlink_to(f.parent / "gone")


def _folder_instead(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _as_folder(name: str) -> Callable[[Path], None]:
    return lambda f: _folder_instead(f / name)


CONVERTED = {
    "tokenizer.json truncated": _cut("tokenizer.json", 100),
    "tokenizer.json empty": _replace("tokenizer.json", b""),
    "tokenizer.json not UTF-8": _replace("tokenizer.json", b'{"\xff": 1}'),
    "tokenizer_config.json garbage": _replace("tokenizer_config.json", b"\x00\x01garbage"),
    "config.json nested 100k deep": _replace("config.json", b"[" * 100_000),
    "config.json 6000-digit int": _replace("config.json", b'{"hidden_size": ' + b"9" * 6000 + b"}"),
    "config.json missing": lambda f: (f / "config.json").unlink(),
    "weights truncated": _cut("model.safetensors", 1000),
    "weights with bytes appended": _append("model.safetensors", b"\0" * 16),
    "weights header zeroed": lambda f: (f / "model.safetensors").write_bytes(
        b"\0" * 8 + (f / "model.safetensors").read_bytes()[8:]
    ),
    "weights empty": _replace("model.safetensors", b""),
    "tokenizer.json is a folder": _as_folder("tokenizer.json"),
    "the model folder is a file": _as_file,
    "the model folder is a dangling link": _as_dangling_link,
}


def _named_folder(damage: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    """A model folder the user names (a copy of the tiny model), damaged: it must be named, not rebuilt."""

    def argv(d: Path) -> list[str]:
        folder = d / "mine"
        shutil.copytree(tiny_model(), folder)
        damage(folder)
        return ["advise", _data(d), "--model", str(folder), "--dry-run", "--out", str(d / "run")]

    return argv


def _names(what: str) -> Check:
    return lambda d, rc, out, err: None if what in err else f"{what!r} not named"


def _responses(prepare: Callable[[Path], None]) -> Callable[[Patch, Path], None]:
    return _with_cache(prepare)


def _db_garbage(cache: Path) -> None:
    (cache / "responses.sqlite").write_bytes(b"garbage" * 100)


def _db_truncated(cache: Path) -> None:
    import sqlite3

    db = cache / "responses.sqlite"
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.execute("create table t (x)")
        con.executemany("insert into t values (?)", [("x" * 500,)] * 200)
        con.commit()
    db.write_bytes(db.read_bytes()[:5000])


def _db_folder(cache: Path) -> None:
    (cache / "responses.sqlite").mkdir()


def cache_probes() -> list[EnvProbe]:
    out = [
        EnvProbe(
            "cache: rates.json", name, _dry_run_tiny, {0}, patch=_with_cache(_rates(body)), in_process=True
        )
        for name, body in RATES.items()
    ]
    out.append(EnvProbe("cache: rates.json", "a FIFO", _dry_run_tiny, {0}, env=_fifo_rates_env))
    for name, damage in CONVERTED.items():
        out.append(
            EnvProbe(
                "cache: converted model",
                name,
                lambda d: ["advise", _data(d), "--dry-run", "--out", str(d / "run")],
                {0},
                check=_rebuilt,
                patch=_converted(damage),
                in_process=True,
            )
        )
    for name in ("tokenizer.json truncated", "config.json nested 100k deep", "weights truncated"):
        damaged = name.split()[0] if "json" in name else "model.safetensors"
        out.append(
            EnvProbe(
                "cache: named model",
                name,
                _named_folder(CONVERTED[name]),
                {2},
                check=_names(damaged),
                in_process=True,
            )
        )
    for name, prepare in (("garbage", _db_garbage), ("truncated", _db_truncated), ("a folder", _db_folder)):
        out.append(
            EnvProbe(
                "cache: responses",
                f"responses.sqlite {name}",
                _dry_run_tiny,
                {0, 2, 8},  # moved aside and started afresh; a folder in its way: exit 2 naming it
                patch=_responses(prepare),
                in_process=True,
            )
        )
    return out


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


# --------------------------------------------------------------------------- datasets and Parquet


def _saved_dataset(d: Path, damage: Callable[[Path], None]) -> str:
    from datasets import Dataset

    folder = d / "ds"
    rows = [f"critique {i} {'bonne' if i % 2 else 'mauvaise'}" for i in range(40)]
    Dataset.from_dict({"text": rows, "label": ["pos", "neg"] * 20}).save_to_disk(str(folder))
    damage(folder)
    return str(folder)


def _arrow(fn: Callable[[Path], None]) -> Callable[[Path], None]:
    return lambda folder: fn(next(folder.glob("*.arrow")))


def _overwrite(at: Callable[[int], int], data: bytes) -> Callable[[Path], None]:
    def damage(p: Path) -> None:
        raw = bytearray(p.read_bytes())
        start = at(len(raw))
        raw[start : start + len(data)] = data
        p.write_bytes(bytes(raw))

    return damage


DATASETS: dict[str, tuple[Callable[[Path], None], str]] = {
    "arrow truncated": (_arrow(lambda p: p.write_bytes(p.read_bytes()[:100])), ".arrow"),
    "arrow garbage": (_arrow(lambda p: p.write_bytes(b"garbage\n")), ".arrow"),
    "arrow empty": (_arrow(lambda p: p.write_bytes(b"")), ".arrow"),
    "arrow flatbuffers overwritten": (_arrow(_overwrite(lambda n: 200, b"\xff" * 40)), ".arrow"),
    "arrow offsets overwritten": (_arrow(_overwrite(lambda n: n // 2, b"\xff" * 40)), ".arrow"),
    "arrow text overwritten": (_arrow(_overwrite(lambda n: n * 2 // 3, b"\xff" * 8)), ".arrow"),
    "arrow missing": (_arrow(lambda p: p.unlink()), ".arrow"),
    "arrow is a folder": (_arrow(lambda p: _folder_instead(p)), ".arrow"),
    "state.json garbage": (lambda f: (f / "state.json").write_text("{"), "ds"),
    "state.json nested deep": (lambda f: (f / "state.json").write_text("[" * 100_000), "ds"),
    "state.json lists no files": (lambda f: (f / "state.json").write_text('{"_data_files": []}'), "ds"),
    "dataset_info.json garbage": (lambda f: (f / "dataset_info.json").write_bytes(b"\xff\xfe"), "ds"),
}


def _parquet(d: Path, data: bytes | None, cut: int | None = None) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = d / "d.parquet"
    table = pa.table({"text": [f"t {i}" for i in range(40)], "label": ["a", "b"] * 20})
    pq.write_table(table, path)
    if data is not None:
        path.write_bytes(data)
    if cut is not None:
        path.write_bytes(path.read_bytes()[:cut])
    return str(path)


def data_probes() -> list[EnvProbe]:
    out = [
        EnvProbe(
            "datasets folders",
            name,
            lambda d, damage=damage: _advise(d, data=_saved_dataset(d, damage)),
            {3},
            check=_names(named),
            in_process=True,
        )
        for name, (damage, named) in DATASETS.items()
    ]
    out += [
        EnvProbe(
            "parquet files",
            name,
            lambda d, data=data, cut=cut: _advise(d, data=_parquet(d, data, cut)),
            {3},
            check=_names("d.parquet"),
            in_process=True,
        )
        for name, data, cut in (
            ("parquet truncated", None, 200),
            ("parquet empty", b"", None),
            ("parquet magic only", b"PAR1PAR1", None),
            ("parquet footer garbage", None, -12),
        )
    ]
    return out


# --------------------------------------------------------------------------- the process environment


def _file(d: Path) -> str:
    return _write(d, "a-file", "x")


ENVIRONMENT: dict[str, Callable[[Path], dict[str, str | None]]] = {
    "HOME unset": lambda d: {"HOME": None},
    "HOME missing": lambda d: {"HOME": str(d / "no-home")},
    "HOME a file": lambda d: {"HOME": _file(d)},
    "XDG_CACHE_HOME a file": lambda d: {"XDG_CACHE_HOME": _file(d)},
    "TMPDIR missing": lambda d: {"TMPDIR": str(d / "no-tmp")},
    "TMPDIR a file": lambda d: {"TMPDIR": _file(d)},
    "TUNEGATE_CACHE_DIR a file": lambda d: {"TUNEGATE_CACHE_DIR": _file(d)},
    "TUNEGATE_CACHE_DIR empty": lambda d: {"TUNEGATE_CACHE_DIR": ""},
    "HF_HOME a file": lambda d: {"HF_HOME": _file(d)},
    "COLUMNS=0": lambda d: {"COLUMNS": "0"},
    "COLUMNS=-5": lambda d: {"COLUMNS": "-5"},
    "COLUMNS=abc": lambda d: {"COLUMNS": "abc"},
    "COLUMNS=20": lambda d: {"COLUMNS": "20"},
    "COLUMNS=100000": lambda d: {"COLUMNS": "100000"},
    "TERM=dumb": lambda d: {"TERM": "dumb"},
    "unknown locale": lambda d: {"LC_ALL": "xx_YY.UTF-8", "LANG": "xx_YY.UTF-8"},
    "PATH empty": lambda d: {"PATH": ""},
}


def environment_probes() -> list[EnvProbe]:
    out = [
        EnvProbe("environment", f"advise: {name}", _advise_argv(), {12}, env=env, check=_printed)
        for name, env in ENVIRONMENT.items()
    ]
    for name in ("HOME a file", "TUNEGATE_CACHE_DIR a file", "TMPDIR missing", "XDG_CACHE_HOME a file"):
        out.append(
            EnvProbe(
                "environment",
                f"dry run with a model: {name}",
                _dry_run_tiny,
                {0, 2, 8},
                env=ENVIRONMENT[name],
            )
        )
    return out


# --------------------------------------------------------------------------- threshold overrides


def _config(body: str) -> Callable[[Path], list[str]]:
    return lambda d: _advise(d, "--config", _write(d, "c.toml", body))


def _threshold_is(name: str, value: Any) -> Check:
    def check(d: Path, rc: int, out: str, err: str) -> str | None:
        doc = json.loads((d / "run" / "decision.json").read_text(encoding="utf-8"))
        got = doc["provenance"]["thresholds"].get(name)
        return None if got == value else f"{name} is {got!r}, expected {value!r}"

    return check


def _names_threshold(name: str) -> Check:
    return lambda d, rc, out, err: None if name in err else f"threshold {name} not named"


def threshold_probes() -> list[EnvProbe]:
    ok: list[tuple[list[str], Any]] = [
        (["--threshold", "specialist_domains=finance,law"], ["finance", "law"]),
        (["--threshold", "specialist_domains= a , b "], ["a", "b"]),
        (["--threshold", "specialist_domains=legal"], ["legal"]),
        (["--set", "thresholds.specialist_domains=x,y"], ["x", "y"]),
        (["--threshold", "min_examples=300"], 300),
    ]
    out = [
        EnvProbe(
            "thresholds",
            " ".join(extra),
            lambda d, extra=extra: _advise(d, *extra),
            {12},
            check=_threshold_is(extra[1].split("=")[0].removeprefix("thresholds."), value),
            in_process=True,
        )
        for extra, value in ok
    ]
    out.append(
        EnvProbe(
            "thresholds",
            "config list specialist_domains",
            _config('[advise.thresholds]\nspecialist_domains = ["a", "b"]\n'),
            {12},
            check=_threshold_is("specialist_domains", ["a", "b"]),
            in_process=True,
        )
    )
    refused = [
        ("specialist_domains", ["--threshold", "specialist_domains=5"]),
        ("specialist_domains", ["--threshold", "specialist_domains=legal,3"]),
        ("specialist_domains", ["--threshold", "specialist_domains=1e999"]),
        ("specialist_domains", ["--set", "thresholds.specialist_domains=0.5"]),
        ("min_examples", ["--threshold", "min_examples=a,b"]),
        ("min_examples", ["--threshold", "min_examples=true"]),
        ("min_examples", ["--threshold", "min_examples=nan"]),
        ("min_examples", ["--threshold", "min_examples=" + "9" * 5000]),
        ("nonexistent", ["--threshold", "nonexistent=1"]),
    ]
    out += [
        EnvProbe(
            "thresholds",
            " ".join(extra)[:48],
            lambda d, extra=extra: _advise(d, *extra),
            {2},
            check=_names_threshold(name),
            in_process=True,
        )
        for name, extra in refused
    ]
    for name, body in (
        ("specialist_domains", "specialist_domains = 5"),
        ("specialist_domains", "specialist_domains = [1, 2]"),
        ("specialist_domains", "specialist_domains = {a = 1}"),
        ("min_examples", 'min_examples = ["a"]'),
        ("min_examples", "min_examples = nan"),
    ):
        out.append(
            EnvProbe(
                "thresholds",
                f"config {body}",
                _config(f"[advise.thresholds]\n{body}\n"),
                {2},
                check=_names_threshold(name),
                in_process=True,
            )
        )
    return out


def probes() -> list[EnvProbe]:
    return stream_probes() + cache_probes() + data_probes() + environment_probes() + threshold_probes()


# --------------------------------------------------------------------------- running them


def _env_of(probe: EnvProbe, folder: Path) -> dict[str, str]:
    changes = probe.env(folder) if callable(probe.env) else probe.env
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.setdefault("TUNEGATE_CACHE_DIR", str(folder / "cache"))
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _spawn(probe: EnvProbe, argv: list[str], env: dict[str, str]) -> tuple[int | None, str, str]:
    python = [sys.executable, "-m", "advisor.cli", *argv]
    try:
        if probe.redirect.endswith("-gone"):  # a pipe whose reader has already gone
            read, write = os.pipe()
            os.close(read)
            streams: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
            streams[probe.redirect.removesuffix("-gone")] = write
            with subprocess.Popen(python, env=env, text=True, **streams) as proc:
                os.close(write)
                out, err = proc.communicate(timeout=120)
            return proc.returncode, out or "", err or ""
        command = f"exec {shlex.join(python)} {probe.redirect}"
        done = subprocess.run(
            ["/bin/bash", "-c", command], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        return done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired:
        return None, "", "timeout"


def _in_process(probe: EnvProbe, argv: list[str], folder: Path) -> tuple[int | None, str, str]:
    from advisor.cli import main

    patch = Patch()
    stderr, stdout = io.StringIO(), io.StringIO()
    try:
        if probe.patch is not None:
            probe.patch(patch, folder)
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
            rc: int | None = main(argv)
    except BaseException as exc:  # an exception escaping main is what `entry` turns into exit 70
        rc = 70
        stderr.write(f"Traceback: {type(exc).__name__}: {exc}")
    finally:
        patch.restore()
    return rc, stdout.getvalue(), stderr.getvalue()


def run_probe(probe: EnvProbe, folder: Path) -> Outcome:
    """One probe, in-process or in a subprocess (see `run_all`, which runs the subprocesses two at once)."""
    argv = probe.argv(folder)
    if probe.in_process:
        rc, out, err = _in_process(probe, argv, folder)
    else:
        rc, out, err = _spawn(probe, argv, _env_of(probe, folder))
    return Outcome(probe, rc, err, _verdict(probe, folder, rc, out, err))  # type: ignore[arg-type]


def _verdict(probe: EnvProbe, folder: Path, rc: int | None, out: str, err: str) -> str | None:
    quiet = probe.redirect in ("2>&-", "<&- >&- 2>&-", "stderr-gone", "2> /dev/full") or rc == BROKEN_PIPE
    if rc is None:
        return "hung (timeout) or crashed"
    if rc in (70, 1, 120) or "Traceback" in err or "Exception ignored" in err:
        return f"exit {rc} with a traceback" if "Traceback" in err else f"exit {rc}"
    if rc not in probe.expect:
        return f"exit {rc}, expected {sorted(probe.expect)}"
    if not quiet:
        judged = _judge(probe, rc, err, None)  # type: ignore[arg-type]
        if judged is not None:
            return judged
    return probe.check(folder, rc, out, err) if probe.check is not None else None


def run_all(base: Path) -> list[Outcome]:
    every = probes()
    folders = [_mkdir(base / f"e{i:03d}") for i in range(len(every))]
    # A subprocess probe's argv and environment are built here, in this thread, before any in-process
    # probe patches the environment or redirects the streams.
    spawned = {
        i: (every[i].argv(folders[i]), _env_of(every[i], folders[i]))
        for i, probe in enumerate(every)
        if not probe.in_process
    }
    outcomes: dict[int, Outcome] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {i: pool.submit(_spawn, every[i], argv, env) for i, (argv, env) in spawned.items()}
        for i, probe in enumerate(every):
            if probe.in_process:
                outcomes[i] = run_probe(probe, folders[i])
        for i, future in futures.items():
            rc, out, err = future.result()
            outcomes[i] = Outcome(every[i], rc, err, _verdict(every[i], folders[i], rc, out, err))  # type: ignore[arg-type]
    return [outcomes[i] for i in range(len(every))]


@pytest.mark.slow
def test_every_environment_probe_ends_cleanly(tmp_path: Path) -> None:
    outcomes = run_all(tmp_path)
    print("\n" + table(outcomes))
    assert len(outcomes) >= 50
    problems = failures(outcomes)
    assert not problems, "\n".join(problems)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory() as tmp:
        print(table(run_all(Path(tmp))))
