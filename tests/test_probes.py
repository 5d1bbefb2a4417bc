"""The hostile-input probe table: 100+ probes through `advisor.cli.main`, each must end cleanly.

Clean means: a documented exit code (never 70), every error on one line starting ``tunegate: error:``,
no traceback, no exception escaping `main`, no control character from the input on stderr, and (for
the probes that run to a verdict) a report.md with no raw HTML, live link or image from the data.
Probes that could hang (named pipes) run in a subprocess with a timeout.

Run ``python tests/test_probes.py`` from the repository root to print the table (category, tried,
clean, failures); the test asserts that every probe is clean.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTED = {0, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 130}
VERDICTS = {0, 10, 11, 12, 13}
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@dataclass
class Probe:
    category: str
    name: str
    argv: Callable[[Path], list[str]]  # built in the probe's own folder
    expect: set[int] = field(default_factory=lambda: DOCUMENTED - VERDICTS)
    subprocess: bool = False
    patch: Callable[[Any], None] | None = None  # monkeypatch-like setup: receives a Patch


class Patch:
    def __init__(self) -> None:
        self.undo: list[tuple[Any, str, Any]] = []

    def setattr(self, obj: Any, name: str, value: Any) -> None:
        self.undo.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    def restore(self) -> None:
        for obj, name, value in reversed(self.undo):
            setattr(obj, name, value)


def _rows(n: int = 30) -> str:
    return "".join(
        json.dumps(
            {"prompt": f"item {i} {'good' if i % 2 else 'bad'}", "completion": "pos" if i % 2 else "neg"}
        )
        + "\n"
        for i in range(n)
    )


def _write(d: Path, name: str, text: str) -> str:
    p = d / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return str(p)


def _good(d: Path) -> str:
    return _write(d, "good.jsonl", _rows())


def _advise(d: Path, *extra: str, data: str | None = None) -> list[str]:
    return ["advise", data or _good(d), "--no-model", "--out", str(d / "run"), *extra]


def _data_probe(name: str, line: str, *, lines: int = 1) -> Probe:
    return Probe(
        "data file content", name, lambda d: _advise(d, data=_write(d, "x.jsonl", line * lines)), {3}
    )


def probes() -> list[Probe]:
    out: list[Probe] = []
    # --- data file content: parser limits, text validity, types, numbers
    deep = "[" * 50000
    for name, line in [
        ("deep array 50k", deep + "\n"),
        ("deep object 5k", '{"a":' * 5000 + "1" + "}" * 5000 + "\n"),
        ("deep in a field", '{"prompt": "a", "completion": ' + "[" * 100 + "]" * 100 + "}\n"),
        ("int 6000 digits", '{"prompt": "a", "completion": ' + "9" * 6000 + "}\n"),
        ("int 100k digits", '{"prompt": "a", "completion": ' + "9" * 100000 + "}\n"),
        ("negative huge int", '{"prompt": "a", "completion": -' + "9" * 5000 + "}\n"),
        ("lone high surrogate", '{"prompt": "a", "completion": "b\\ud800"}\n'),
        ("lone low surrogate", '{"prompt": "a\\udfff", "completion": "b"}\n'),
        ("surrogate in key", '{"prompt": "a", "completion": "b", "\\ud800": 1}\n'),
        (
            "surrogate in chat",
            '{"messages": [{"role": "user", "content": "\\ud834"}, {"role": "assistant", "content": "x"}]}\n',
        ),
        ("surrogate in alpaca", '{"instruction": "\\udbff", "output": "x"}\n'),
        ("surrogate in table", '{"text": "\\ud800", "label": "a"}\n'),
        ("invalid utf-8", "\udcff"),  # replaced below with raw bytes
        ("NaN label", '{"text": "a", "label": NaN}\n'),
        ("inf label", '{"text": "a", "label": Infinity}\n'),
        ("1e999 label", '{"text": "a", "label": 1e999}\n'),
        ("truncated JSON", '{"prompt": "a", "completion": \n'),
        ("JSON array file", '[{"prompt": "a", "completion": "b"}]\n'),
        ("scalar record", "42\n"),
        ("null record", "null\n"),
        ("prompt is a list", '{"prompt": ["a"], "completion": "b"}\n'),
        ("prompt is null", '{"prompt": null, "completion": "b"}\n'),
        ("empty prompt", '{"prompt": "  ", "completion": "b"}\n'),
        (
            "role unknown",
            '{"messages": [{"role": "\\u001b[2J", "content": "a"}, {"role": "assistant", "content": "b"}]}\n',
        ),
        ("messages not a list", '{"messages": "hi"}\n'),
        ("sharegpt from is ESC", '{"conversations": [{"from": "\\u001b[2J", "value": "a"}]}\n'),
        (
            "sharegpt surrogate",
            '{"conversations": [{"from": "human", "value": "\\ud800"}, {"from": "gpt"}]}\n',
        ),
        (
            "content part type is ESC",
            '{"messages": [{"role": "user", "content": [{"type": "\\u001b[2J"}]}, '
            '{"role": "assistant", "content": "b"}]}\n',
        ),
        ("content part type is a list", '{"messages": [{"role": "user", "content": [{"type": []}]}]}\n'),
        (
            "trl completion deep",
            '{"prompt": [{"role": "user", "content": "a"}], "completion": ' + "[" * 80 + "]" * 80 + "}\n",
        ),
        ("only whitespace lines", "\n   \n\t\n"),
        ("ESC in key names", '{"\\u001b]8;;x\\u0007t": "a", "label": "b"}\n'),
    ]:
        if name == "invalid utf-8":
            out.append(
                Probe(
                    "data file content",
                    name,
                    lambda d: _advise(
                        d, data=_bytes(d, "u.jsonl", b'{"prompt": "\xff\xfe", "completion": "b"}\n')
                    ),
                    {3},
                )
            )
            continue
        out.append(_data_probe(name, line))
    out.append(_data_probe("empty file", "", lines=1))
    out.append(
        Probe(
            "data file content",
            "csv header only",
            lambda d: _advise(d, data=_write(d, "h.csv", "text,label\n")),
            {3},
        )
    )
    out.append(
        Probe(
            "data file content",
            "csv NUL bytes",
            lambda d: _advise(d, data=_bytes(d, "n.csv", b"text,label\na\x00b,c\n")),
            DOCUMENTED,
        )
    )
    out.append(
        Probe(
            "data file content",
            "tsv wrong field count",
            lambda d: _advise(d, data=_write(d, "t.tsv", "text\tlabel\na\tb\tc\n")),
            {3},
        )
    )
    out.append(
        Probe(
            "data file content",
            "parquet garbage",
            lambda d: _advise(d, data=_bytes(d, "g.parquet", b"PAR1garbage")),
            {3},
        )
    )

    # --- file kinds and paths
    out += [
        Probe(
            "file kinds",
            "data is a FIFO",
            lambda d: _advise(d, data=_fifo(d, "f.jsonl")),
            {3},
            subprocess=True,
        ),
        Probe(
            "file kinds",
            "config is a FIFO",
            lambda d: _advise(d, "--config", _fifo(d, "c.toml")),
            {2},
            subprocess=True,
        ),
        Probe(
            "file kinds",
            "prices is a FIFO",
            lambda d: _advise(d, "--prices", _fifo(d, "p.toml")),
            {2},
            subprocess=True,
        ),
        Probe(
            "file kinds",
            "system prompt is a FIFO",
            lambda d: _advise(d, "--system-prompt", _fifo(d, "s.txt")),
            {2},
            subprocess=True,
        ),
        Probe(
            "file kinds",
            "rules folder holds a FIFO",
            lambda d: ["rules", "validate", _fifo_dir(d)],
            {4},
            subprocess=True,
        ),
        Probe(
            "file kinds",
            "rules path is a FIFO",
            lambda d: ["rules", "list", "--rules", _fifo(d, "r.toml")],
            {4},
            subprocess=True,
        ),
        Probe("file kinds", "data is /dev/null-like device", lambda d: _advise(d, data=_devlink(d)), {3}),
        Probe(
            "file kinds", "data is a directory", lambda d: _advise(d, data=str(_mkdir(d / "dir.jsonl"))), {3}
        ),
        Probe("file kinds", "data missing", lambda d: _advise(d, data=str(d / "nope.jsonl")), {3}),
        Probe(
            "file kinds", "data unknown extension", lambda d: _advise(d, data=_write(d, "x.txt", "hi")), {3}
        ),
        Probe("file kinds", "dangling symlink", lambda d: _advise(d, data=_dangling(d)), {3}),
        Probe("file kinds", "config missing", lambda d: _advise(d, "--config", str(d / "no.toml")), {2}),
        Probe(
            "file kinds",
            "config is a directory",
            lambda d: _advise(d, "--config", str(_mkdir(d / "cdir"))),
            {2},
        ),
        Probe("file kinds", "prices missing", lambda d: _advise(d, "--prices", str(d / "no.toml")), {2}),
        Probe(
            "file kinds",
            "system prompt missing",
            lambda d: _advise(d, "--system-prompt", str(d / "no.txt")),
            {2},
        ),
        Probe("file kinds", "report on a missing folder", lambda d: ["report", str(d / "nowhere")], {3}),
        Probe("file kinds", "report on garbage decision.json", lambda d: ["report", _garbage_run(d)], {3}),
        Probe(
            "file kinds",
            "report: decision.json lacks keys",
            lambda d: ["report", _partial_run(d, "keys")],
            {3},
        ),
        Probe(
            "file kinds", "report: decision wrong types", lambda d: ["report", _partial_run(d, "types")], {3}
        ),
        Probe(
            "file kinds",
            "report: decision.json is a list",
            lambda d: ["report", _partial_run(d, "list")],
            {3},
        ),
        Probe(
            "file kinds",
            "rules validate missing folder",
            lambda d: ["rules", "validate", str(d / "none")],
            {4},
        ),
        Probe(
            "file kinds",
            "data name with ESC and newline",
            lambda d: _advise(d, data=str(d / "a\x1b[2J\nb.jsonl")),
            {3},
        ),
    ]

    # --- non-finite and absurd numbers in flags
    for extra in (
        ["--latency-budget-ms", "nan"], ["--latency-budget-ms", "inf"], ["--latency-budget-ms=-inf"],
        ["--latency-budget-ms", "1e308"], ["--latency-budget-ms", "-5"], ["--set", "horizon_days=nan"],
        ["--set", "horizon_days=inf"], ["--set", "horizon_days=1e308"], ["--set", "horizon_days=-1"],
        ["--set", "min_gain=nan"], ["--set", "volume_per_day=nan"], ["--set", "volume_per_day=1e300"],
        ["--set", "quality_target=nan"], ["--set", "quality_target=2"], ["--set", "eval_size=" + "9" * 5000],
        ["--set", "eval_size=1e3"],
        ["--set", "seed=" + "9" * 30],
        ["--seed", "9" * 30],
        ["--seed", "9" * 5000],
        ["--volume", "9" * 400 + "/day"],
        ["--volume", "nan/day"],
        ["--volume", "inf/day"],
        ["--volume", "0/day"],
        ["--target", "accuracy=nan"], ["--target", "accuracy=inf"], ["--target", "accuracy=1e308"],
        ["--threshold", "min_examples=nan"],
        ["--threshold", "min_examples=inf"],
        ["--threshold", "min_examples=1e300"],
        ["--threshold", "min_examples=" + "9" * 5000], ["--set", "thresholds.min_examples=nan"],
        ["--set", "k_ladder=1,nan"], ["--set", "k_ladder=" + "9" * 30], ["--set", "max_gen_tokens=inf"],
    ):  # fmt: skip
        out.append(
            Probe("numbers in flags", " ".join(extra)[:40], lambda d, extra=extra: _advise(d, *extra), {2})
        )
    for override in (
        "lr=nan",
        "lr=inf",
        "dropout=nan",
        "epochs=inf",
        "alpha=1e308",
        "r=" + "9" * 5000,
        "warmup_ratio=nan",
    ):
        out.append(
            Probe(
                "numbers in flags",
                f"train --train-set {override[:20]}",
                lambda d, o=override: ["train", str(d), "--train-set", o],
                {2},
            )
        )

    # --- config, price and rule files
    for name, body in [
        ("nan horizon", "horizon_days = nan\n"), ("inf latency", "latency_budget_ms = inf\n"),
        ("huge volume", "volume_per_day = 1e308\n"), ("int 6000 digits", "seed = " + "9" * 6000 + "\n"),
        ("deep array", "k_ladder = " + "[" * 3000 + "]" * 3000 + "\n"), ("surrogate", 'domain = "\\ud800"\n'),
        ("nan threshold", "[thresholds]\nmin_examples = nan\n"), ("not UTF-8", None),
        ("syntax error", "eval_size = = 3\n"), ("bad base_url creds", 'backend = "openai"\nbase_url = "http://u:p@h/v1"\n'),
    ]:  # fmt: skip
        if body is None:
            out.append(
                Probe(
                    "config file",
                    name,
                    lambda d: _advise(d, "--config", _bytes(d, "c.toml", b"seed = \xff\n")),
                    {2},
                )
            )
        else:
            out.append(
                Probe(
                    "config file", name, lambda d, b=body: _advise(d, "--config", _write(d, "c.toml", b)), {2}
                )
            )
    for name, body in [
        ("nan price", "[api]\ninput_per_million = nan\noutput_per_million = 1\n"),
        ("inf price", "[api]\ninput_per_million = inf\n"),
        ("1e308 price", "[api]\ninput_per_million = 1e308\n"),
        ("400-digit int", "[api]\ninput_per_million = " + "9" * 400 + "\n"),
        ("6000-digit int", "[api]\ninput_per_million = " + "9" * 6000 + "\n"),
        ("nan epochs", "[finetune]\nepochs = nan\n"),
        ("surrogate currency", '[meta]\ncurrency = "\\udc00"\n'),
        ("deep", "x = " + "[" * 3000 + "]" * 3000 + "\n"),
        ("negative gpu hour", "[self_hosted]\ngpu_hour = -1\n"), ("unknown section", "[evil]\nx = 1\n"),
    ]:  # fmt: skip
        out.append(
            Probe("price file", name, lambda d, b=body: _advise(d, "--prices", _write(d, "p.toml", b)), {2})
        )
    for name, weight, operand in [
        ("weight inf", "inf", "value = 1"),
        ("weight nan", "nan", "value = 1"),
        ("weight 1e308", "1e308", "value = 1"),
        ("weight -1", "-1", "value = 1"),
        ("value nan", "1", "value = nan"),
        ("value inf", "1", "value = inf"),
        ("value -1e308", "1", "value = -1e308"),
        ("threshold inf", "1", 'threshold = "t"\n[thresholds]\nt = inf'),
        ("threshold list nan", "1", "value = 1\n[thresholds]\nt = [1, nan]"),
        ("value 5000 digits", "1", "value = " + "9" * 5000),
        ("value deep", "1", "value = " + "[" * 2000 + "]" * 2000),
        ("message surrogate", "1", 'value = 1\n[[rule]]\nid = "x"\nmessage = "\\ud800"'),
    ]:  # fmt: skip
        out.append(
            Probe(
                "rule file",
                name,
                lambda d, w=weight, o=operand: ["rules", "validate", _rules_dir(d, w, o)],
                {4},
            )
        )
        out.append(
            Probe(
                "rule file",
                f"advise {name}",
                lambda d, w=weight, o=operand: _advise(d, "--rules", _rules_dir(d, w, o)),
                {4},
            )
        )

    # --- the environment: destinations that cannot be written
    out += [
        Probe("destinations", "--out is a file", lambda d: _advise_out(d, _write(d, "f", "x")), {8}),
        Probe(
            "destinations", "--out under a file", lambda d: _advise_out(d, _write(d, "f", "x") + "/run"), {8}
        ),
        Probe(
            "destinations",
            "read-only file system",
            lambda d: _advise(d),
            {8},
            patch=_fail("mkstemp", errno.EROFS),
        ),
        Probe(
            "destinations",
            "permission denied",
            lambda d: _advise(d),
            {8},
            patch=_fail("mkstemp", errno.EACCES),
        ),
        Probe(
            "destinations",
            "disk full at fsync",
            lambda d: _advise(d),
            {8},
            patch=_fail("fsync", errno.ENOSPC),
        ),
        Probe(
            "destinations", "quota at fsync", lambda d: _advise(d), {8}, patch=_fail("fsync", errno.EDQUOT)
        ),
        Probe(
            "destinations",
            "disk full at replace",
            lambda d: _advise(d),
            {8},
            patch=_fail("replace", errno.ENOSPC),
        ),
        Probe(
            "destinations",
            "report to a read-only run",
            lambda d: ["report", _good_run(d)],
            {8},
            patch=_fail("mkstemp", errno.EROFS),
        ),
        Probe(
            "destinations",
            "stray sqlite error",
            lambda d: ["rules", "list"],
            {8},
            patch=_dispatch_raises("sqlite"),
        ),
        Probe(
            "destinations",
            "stray OSError",
            lambda d: ["rules", "list"],
            {8},
            patch=_dispatch_raises("oserror"),
        ),
    ]

    # --- credentials in URLs
    for url in ("http://user:pass@127.0.0.1:9/v1", "https://tok@h/v1", "http://:pw@h/v1", "HTTP://U:P@H/v1"):
        out.append(
            Probe(
                "credentials",
                url[:30],
                lambda d, u=url: [*_advise(d), "--backend", "openai", "--base-url", u],
                {2},
            )
        )

    # --- hostile text that runs to a verdict: report.md and the console must stay safe
    hostile = [
        "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "[x](javascript:alert(1))",
        "![p](https://evil.example/p.png)", "`tick``", "\x1b[2J\x1b]8;;https://evil.example\x07L\x1b]8;;\x07",
        "a|b\rc", "\u202eevil",
    ]  # fmt: skip
    for text in hostile:
        out.append(
            Probe(
                "hostile text",
                f"label {text!r}"[:40],
                lambda d, t=text: _advise(d, data=_labels(d, t)),
                VERDICTS,
            )
        )
    for text in ("<b>x</b>", "[l](javascript:x)", "\x1b[31mred"):
        out.append(
            Probe(
                "hostile text",
                f"--domain {text!r}"[:40],
                lambda d, t=text: _advise(d, "--domain", t),
                VERDICTS,
            )
        )
    for name in ("a`b<img src=x>.jsonl", "e\x1b[2Jvil.jsonl", "[x](javascript:y).jsonl"):
        out.append(
            Probe(
                "hostile text",
                f"file {name!r}"[:40],
                lambda d, n=name: _advise(d, data=_write(d, n, _rows())),
                VERDICTS,
            )
        )
    return out


def _bytes(d: Path, name: str, data: bytes) -> str:
    p = d / name
    p.write_bytes(data)
    return str(p)


def _fifo(d: Path, name: str) -> str:
    p = d / name
    os.mkfifo(p)
    return str(p)


def _fifo_dir(d: Path) -> str:
    r = d / "rules"
    r.mkdir()
    os.mkfifo(r / "a.toml")
    return str(r)


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _devlink(d: Path) -> str:
    p = d / "null.jsonl"
    p.symlink_to("/dev/null")
    return str(p)


def _dangling(d: Path) -> str:
    p = d / "dangling.jsonl"
    p.symlink_to(d / "missing-target.jsonl")
    return str(p)


def _garbage_run(d: Path) -> str:
    (d / "g").mkdir()
    (d / "g" / "decision.json").write_text(
        '{"schema_version": "1.0", "decision": ' + "[" * 5000, encoding="utf-8"
    )
    return str(d / "g")


def _partial_run(d: Path, how: str) -> str:
    run = Path(_good_run(d))
    doc = json.loads((run / "decision.json").read_text(encoding="utf-8"))
    if how == "keys":
        del doc["decision"]["fired"], doc["provenance"]
    elif how == "types":
        doc["decision"] = {**doc["decision"], "fired": 3, "confidence": "high"}
    else:
        doc = [doc]
    (run / "decision.json").write_text(json.dumps(doc), encoding="utf-8")
    return str(run)


def _good_run(d: Path) -> str:
    from advisor.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main(_advise(d))
    return str(d / "run")


def _advise_out(d: Path, out: str) -> list[str]:
    return ["advise", _good(d), "--no-model", "--out", out]


def _labels(d: Path, text: str) -> str:
    rows = "".join(
        json.dumps({"prompt": f"item {i}", "completion": text if i % 2 else "plain"}) + "\n"
        for i in range(30)
    )
    return _write(d, "h.jsonl", rows)


def _rules_dir(d: Path, weight: str, operand: str) -> str:
    r = d / "rules"
    r.mkdir(exist_ok=True)
    (r / "r.toml").write_text(
        f'[[rule]]\nid = "r1"\nkind = "vote"\nverdict = "prompt"\nweight = {weight}\nmessage = "m"\n'
        'source = { title = "t", url = "https://example.org" }\n'
        f'[[rule.when]]\nsignal = "n_examples"\nop = "gt"\n{operand}\n',
        encoding="utf-8",
    )
    return str(r)


def _fail(where: str, code: int) -> Callable[[Patch], None]:
    def setup(p: Patch) -> None:
        def fail(*a: Any, **k: Any) -> Any:
            raise OSError(code, os.strerror(code))

        p.setattr(tempfile if where == "mkstemp" else os, where, fail)

    return setup


def _dispatch_raises(kind: str) -> Callable[[Patch], None]:
    def setup(p: Patch) -> None:
        import sqlite3

        import advisor.cli as cli

        def boom(args: Any) -> int:
            if kind == "sqlite":
                raise sqlite3.DatabaseError("file is not a database")
            raise OSError(errno.ENOSPC, "No space left on device", "/cache/responses.sqlite")

        p.setattr(cli, "_dispatch", boom)

    return setup


@dataclass
class Outcome:
    probe: Probe
    rc: int | None
    err: str
    problem: str | None  # None: clean


def _judge(probe: Probe, rc: int | None, err: str, run_dir: Path | None) -> str | None:
    if rc is None:
        return "hung (timeout) or crashed"
    if rc == 70 or "Traceback" in err:
        return f"exit {rc} with a traceback"
    if rc not in probe.expect:
        return f"exit {rc}, expected {sorted(probe.expect)}"
    for line in err.splitlines():
        if CONTROL.search(line):
            return "a control character reached stderr"
    errors = [ln for ln in err.splitlines() if re.match(r"tunegate( \w+)*: error: ", ln)]
    if rc not in VERDICTS and not errors:
        return "no error message"
    if rc in VERDICTS and run_dir is not None:
        md = (run_dir / "report.md").read_text(encoding="utf-8")
        if CONTROL.search(md.replace("\n", "")):
            return "a control character reached report.md"
        unsafe = _unsafe_markdown(md)
        if unsafe:
            return f"report.md: {unsafe}"
    return None


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


_MD_TAGS = {"h1", "h2", "h3", "p", "strong", "em", "code", "ul", "ol", "li", "a", "img", "pre", "hr", "br"}
_MD_TAGS |= {"table", "thead", "tbody", "tr", "th", "td"}


def _unsafe_markdown(md: str) -> str | None:
    """What a GitHub-like renderer (raw HTML on) would show from the data: a tag, a link, an image."""
    from markdown_it import MarkdownIt

    page = _Tags()
    page.feed(MarkdownIt("commonmark", {"html": True}).enable("table").render(md))
    for tag, attrs in page.tags:
        if tag not in _MD_TAGS or any(k.startswith("on") for k in attrs):
            return f"raw <{tag}> from the data"
        if tag == "a" and not (attrs.get("href") or "").startswith("https://"):
            return f"a live link to {attrs.get('href')!r}"
        if tag == "img" and not (attrs.get("src") or "").startswith("plots/"):
            return f"an image from {attrs.get('src')!r}"
    return None


def run_probe(probe: Probe, folder: Path) -> Outcome:
    argv = probe.argv(folder)
    run_dir = folder / "run"
    if probe.subprocess:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "advisor.cli", *argv],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
                check=False,
            )
            rc, err = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired:
            rc, err = None, "timeout"
        return Outcome(probe, rc, err, _judge(probe, rc, err, None))
    from advisor.cli import main

    patch = Patch()
    stderr, stdout = io.StringIO(), io.StringIO()
    try:
        if probe.patch is not None:
            probe.patch(patch)
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
            rc: int | None = main(argv)
    except BaseException as exc:  # an exception escaping main is what `entry` turns into exit 70
        rc = 70
        stderr.write(f"Traceback: {type(exc).__name__}: {exc}")
    finally:
        patch.restore()
    err = stderr.getvalue()
    return Outcome(probe, rc, err, _judge(probe, rc, err, run_dir if rc in VERDICTS else None))


def run_all(base: Path) -> list[Outcome]:
    outcomes = []
    for i, probe in enumerate(probes()):
        folder = base / f"p{i:03d}"
        folder.mkdir()
        outcomes.append(run_probe(probe, folder))
    return outcomes


def table(outcomes: list[Outcome]) -> str:
    cats: dict[str, list[Outcome]] = {}
    for o in outcomes:
        cats.setdefault(o.probe.category, []).append(o)
    lines = [f"| {'category':<20} | tried | clean | failures |", f"|{'-' * 22}|------:|------:|----------|"]
    for cat, items in cats.items():
        bad = [f"{o.probe.name}: {o.problem}" for o in items if o.problem]
        lines.append(
            f"| {cat:<20} | {len(items):>5} | {len(items) - len(bad):>5} | {'; '.join(bad) or 'none'} |"
        )
    n_bad = sum(1 for o in outcomes if o.problem)
    lines.append(f"| {'total':<20} | {len(outcomes):>5} | {len(outcomes) - n_bad:>5} | {n_bad} |")
    codes = sorted({o.rc for o in outcomes if o.rc is not None})
    lines.append(f"exit codes seen: {codes}")
    return "\n".join(lines)


def failures(outcomes: list[Outcome]) -> list[str]:
    """One line per probe that did not end cleanly (shared by the probe modules' tests)."""
    return [
        f"{o.probe.category} / {o.probe.name}: {o.problem} (exit {o.rc}): {o.err[-300:]}"
        for o in outcomes
        if o.problem
    ]


@pytest.mark.slow
def test_every_probe_ends_cleanly(tmp_path: Path) -> None:
    outcomes = run_all(tmp_path)
    print("\n" + table(outcomes))
    assert len(outcomes) >= 100
    assert not [o for o in outcomes if o.rc == 70]
    problems = failures(outcomes)
    assert not problems, "\n".join(problems)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory() as tmp:
        print(table(run_all(Path(tmp))))
