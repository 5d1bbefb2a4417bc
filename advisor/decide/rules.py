"""Rules as data: load, validate and evaluate the TOML rule files.

A rule file holds a `[thresholds]` table of named defaults, a `[limits]` table of the range each must lie
in (NAME = [LOW, HIGH]), and `[[rule]]` entries. Each rule has
an id, a kind (`vote` with a weight, `stop` that decides the verdict when it fires, or `veto` that
forbids a verdict), one sentence for the user, structured conditions (`signal`, `op`, and one of
`value`, `threshold` or `than_signal`; all ANDed) and a source. There is no expression language.

Loading validates every file as a whole and raises one `RulesError` listing every problem found
(file, line, field), so `tunegate rules validate` answers in one run. Rule sets are layered: the
shipped rules (package `rules`), then each user folder in order; a later rule with the same id
replaces the earlier one in place, a later threshold overrides the earlier value. Finally,
`overrides` (command line or config file) replace threshold values; they must name an existing
threshold.
"""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from advisor.decide.signals import CATALOGUE, SignalSpec, SignalValue, value_matches
from advisor.errors import ConfigError, Problem, RulesError
from advisor.files import MAX_TOML_BYTES, read_regular
from advisor.report import fmt
from advisor.textsafe import surrogate_path, term_safe
from advisor.types import Verdict

ThresholdValue = float | int | bool | str | tuple[float | int | str, ...]

MAX_WEIGHT = 1000.0
"""Largest rule weight. Shipped weights are 0.5-20; a bound keeps sums of weights finite."""
MAX_NUMBER = 1e15
"""Largest magnitude of a number in a condition or threshold: beyond any signal tunegate measures,
and far from float overflow, so comparisons and the report's arithmetic stay finite."""


def number_problem(v: Any) -> str | None:
    """Why a rule number (value, threshold, list item) is not usable: NaN, infinite or absurdly large."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    try:
        f = float(v)
    except OverflowError:
        return f"must be a number of magnitude at most {MAX_NUMBER:g}"
    if f != f:
        return "must be a number, not NaN"
    if f in (float("inf"), float("-inf")):
        return "must be a finite number"
    if abs(f) > MAX_NUMBER:
        return f"must be a number of magnitude at most {MAX_NUMBER:g}, got {f:g}"
    return None


class Op(StrEnum):
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    EQ = "eq"
    NE = "ne"
    IN = "in"


OP_SYMBOLS = {Op.LT: "<", Op.LE: "<=", Op.GT: ">", Op.GE: ">=", Op.EQ: "==", Op.NE: "!=", Op.IN: "in"}
NUMERIC_OPS = frozenset({Op.LT, Op.LE, Op.GT, Op.GE})


class RuleKind(StrEnum):
    VOTE = "vote"
    STOP = "stop"
    VETO = "veto"


class Status(StrEnum):
    FIRED = "fired"
    NOT_FIRED = "not_fired"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Source:
    title: str
    url: str | None = None
    citation: str | None = None

    def to_dict(self) -> dict[str, str]:
        d = {"title": self.title}
        if self.url:
            d["url"] = self.url
        if self.citation:
            d["citation"] = self.citation
        return d

    def __str__(self) -> str:
        parts = [self.title]
        if self.citation:
            parts.append(self.citation)
        if self.url:
            parts.append(self.url)
        return ". ".join(parts)


@dataclass(frozen=True)
class Condition:
    """`signal op operand`; the operand is exactly one of value, threshold (a name) or than_signal."""

    signal: str
    op: Op
    value: ThresholdValue | None = None
    threshold: str | None = None
    than_signal: str | None = None
    line: int | None = field(default=None, compare=False)

    def operand(self, thresholds: Mapping[str, ThresholdValue], signals: Mapping[str, SignalValue]) -> Any:
        if self.threshold is not None:
            return thresholds[self.threshold]
        if self.than_signal is not None:
            return signals.get(self.than_signal)
        return self.value

    def holds(self, thresholds: Mapping[str, ThresholdValue], signals: Mapping[str, SignalValue]) -> bool:
        left = signals[self.signal]
        right = self.operand(thresholds, signals)
        if self.op is Op.LT:
            return left < right  # type: ignore[operator]
        if self.op is Op.LE:
            return left <= right  # type: ignore[operator]
        if self.op is Op.GT:
            return left > right  # type: ignore[operator]
        if self.op is Op.GE:
            return left >= right  # type: ignore[operator]
        if self.op is Op.EQ:
            return left == right
        if self.op is Op.NE:
            return left != right
        return left in right  # Op.IN

    def describe(self, thresholds: Mapping[str, ThresholdValue] | None = None) -> str:
        """Human form, e.g. `n_examples < min_examples (500)`."""
        if self.threshold is not None:
            rhs = self.threshold
            if thresholds is not None and self.threshold in thresholds:
                rhs += f" ({fmt.value(thresholds[self.threshold])})"
        elif self.than_signal is not None:
            rhs = self.than_signal
        else:
            rhs = fmt.value(self.value)
        return f"{self.signal} {OP_SYMBOLS[self.op]} {rhs}"


@dataclass(frozen=True)
class Rule:
    id: str
    kind: RuleKind
    message: str
    when: tuple[Condition, ...]
    sources: tuple[Source, ...]
    verdict: Verdict | None = None  # vote and stop rules
    vetoes: Verdict | None = None  # veto rules
    weight: float = 0.0  # vote and stop rules; vetoes have none
    note: str = ""
    file: str = field(default="", compare=False)
    line: int | None = field(default=None, compare=False)

    @property
    def argues_for(self) -> Verdict:
        """The verdict a vote or stop rule argues for, or the one a veto rule forbids."""
        v = self.vetoes if self.kind is RuleKind.VETO else self.verdict
        assert v is not None  # guaranteed by the loader
        return v

    @property
    def signal_names(self) -> tuple[str, ...]:
        """Every signal the conditions read, in order, without repeats."""
        names: list[str] = []
        for c in self.when:
            for n in (c.signal, c.than_signal):
                if n is not None and n not in names:
                    names.append(n)
        return tuple(names)

    @property
    def threshold_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.threshold for c in self.when if c.threshold is not None))


@dataclass(frozen=True)
class RuleSet:
    thresholds: Mapping[str, ThresholdValue]
    rules: tuple[Rule, ...]
    sha256: str  # over the rule files' names and bytes, in load order
    files: tuple[str, ...] = ()
    overrides: Mapping[str, ThresholdValue] = field(default_factory=dict)

    def get(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)


@dataclass(frozen=True)
class RuleOutcome:
    """One rule's result on one set of signals, with the evidence it used."""

    rule: Rule
    status: Status
    signals: tuple[tuple[str, SignalValue], ...]
    thresholds: tuple[tuple[str, ThresholdValue], ...]
    missing: tuple[str, ...] = ()

    @property
    def fired(self) -> bool:
        return self.status is Status.FIRED

    def evidence(self) -> dict[str, dict[str, Any]]:
        return {
            "signals": dict(self.signals),
            "thresholds": {k: _jsonable(v) for k, v in self.thresholds},
        }


# --------------------------------------------------------------------------- evaluation


def evaluate(ruleset: RuleSet, signals: Mapping[str, SignalValue]) -> list[RuleOutcome]:
    """Evaluate every rule. A rule whose signals are not all measured (None or absent) is skipped."""
    bad = [
        f"{name}={value!r} (expected {CATALOGUE[name].type})"
        for name, value in signals.items()
        if value is not None and name in CATALOGUE and not value_matches(CATALOGUE[name], value)
    ]
    if bad:
        raise ValueError("signals of the wrong type: " + ", ".join(bad))
    outcomes = []
    for rule in ruleset.rules:
        names = rule.signal_names
        used = tuple((n, signals.get(n)) for n in names)
        thresholds = tuple((t, ruleset.thresholds[t]) for t in rule.threshold_names)
        missing = tuple(n for n, v in used if v is None)
        if missing:
            status = Status.SKIPPED
        elif all(c.holds(ruleset.thresholds, signals) for c in rule.when):
            status = Status.FIRED
        else:
            status = Status.NOT_FIRED
        outcomes.append(RuleOutcome(rule, status, used, thresholds, missing))
    return outcomes


# --------------------------------------------------------------------------- listing


RULES_TABLE_COLUMNS = ("id", "kind", "verdict", "weight", "when", "source", "file")


def format_rules_table(ruleset: RuleSet) -> list[dict[str, str]]:
    """One row per rule (keys: RULES_TABLE_COLUMNS), for `tunegate rules list`."""
    rows = []
    for r in ruleset.rules:
        rows.append(
            {
                "id": r.id,
                "kind": str(r.kind),
                "verdict": f"not {r.vetoes}" if r.kind is RuleKind.VETO else str(r.verdict),
                "weight": "" if r.kind is RuleKind.VETO else fmt.value(r.weight),
                "when": " and ".join(c.describe(ruleset.thresholds) for c in r.when),
                "source": "; ".join(s.title for s in r.sources),
                "file": r.file,
            }
        )
    return rows


def print_rules(ruleset: RuleSet, console: Any = None) -> None:
    """`tunegate rules list`: the rules and thresholds in force, as rich tables on stdout."""
    import sys

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text  # cells as Text: "[legal, code]" is data, not console markup

    console = console or Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160)
    table = Table(title=f"{len(ruleset.rules)} rules (sha256 {ruleset.sha256[:12]})")
    for col in RULES_TABLE_COLUMNS:
        table.add_column(col, overflow="fold")
    for row in format_rules_table(ruleset):
        table.add_row(*(Text(term_safe(row[c])) for c in RULES_TABLE_COLUMNS))
    console.print(table)
    thresholds = Table(title="Thresholds (override with --threshold NAME=VALUE)")
    thresholds.add_column("name")
    thresholds.add_column("value")
    for name, value in ruleset.thresholds.items():
        mark = " (overridden)" if name in ruleset.overrides else ""
        thresholds.add_row(Text(term_safe(name)), Text(term_safe(fmt.value(value)) + mark))
    console.print(thresholds)


# --------------------------------------------------------------------------- loading


def shipped_rules_dir() -> Traversable:
    """The rule files shipped as package data (package `rules`)."""
    return resources.files("rules")


def load_rules(
    dirs: Sequence[Path] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    include_shipped: bool = True,
) -> RuleSet:
    """Load the shipped rules, then each folder in `dirs` on top, then threshold `overrides`.

    `include_shipped=False` loads only `dirs` (what `tunegate rules validate DIR` checks).
    Raises `RulesError` listing every problem in every file, or `ConfigError` for an override
    that names no threshold or cannot be read as the threshold's type.
    """
    problems: list[Problem] = []
    layers: list[list[tuple[str, bytes]]] = []
    if include_shipped:
        shipped = shipped_rules_dir()
        files = sorted((t for t in shipped.iterdir() if t.name.endswith(".toml")), key=lambda t: t.name)
        layers.append([(f"rules/{t.name}", t.read_bytes()) for t in files])
    for d in dirs or ():
        layers.append(_read_folder(Path(d), problems))

    digest = hashlib.sha256()
    names: list[str] = []
    thresholds: dict[str, ThresholdValue] = {}
    limits: dict[str, tuple[float, float]] = {}
    rules: dict[str, Rule] = {}
    refs: list[_ThresholdRef] = []
    for layer in layers:
        layer_thresholds: dict[str, tuple[ThresholdValue, str, int | None]] = {}
        layer_rules: dict[str, Rule] = {}
        layer_ids: dict[str, tuple[str, int | None]] = {}
        for name, data in layer:
            digest.update(name.encode() + b"\0" + data + b"\0")
            names.append(name)
            parsed = _parse_file(name, data, problems)
            if parsed is None:
                continue
            refs.extend(parsed.refs)
            limits.update(parsed.limits)
            for tname, (tvalue, tline) in parsed.thresholds.items():
                if tname in layer_thresholds:
                    _, other_file, other_line = layer_thresholds[tname]
                    problems.append(
                        Problem(
                            f"threshold '{tname}' is also defined in {_where(other_file, other_line)}",
                            file=name,
                            line=tline,
                            field=f"thresholds.{tname}",
                        )
                    )
                    continue
                layer_thresholds[tname] = (tvalue, name, tline)
            for rid, rline, index in parsed.ids:  # every id, valid rule or not
                if rid in layer_ids:
                    problems.append(
                        Problem(
                            f"duplicate rule id '{rid}' (first defined in {_where(*layer_ids[rid])})",
                            file=name,
                            line=rline,
                            field=f"rule[{index + 1}].id",
                        )
                    )
                    continue
                layer_ids[rid] = (name, rline)
            for rule in parsed.rules:
                layer_rules.setdefault(rule.id, rule)
        thresholds.update({k: v for k, (v, _, _) in layer_thresholds.items()})
        rules.update(layer_rules)  # same id: replaced in place, keeping the earlier position

    # Threshold references are checked against the merged thresholds, for every rule parsed.
    problems.extend(_check_threshold_refs(refs, thresholds))
    problems.extend(
        Problem(f"limits.{t}: no such threshold", field=f"limits.{t}") for t in limits if t not in thresholds
    )
    problems.extend(
        Problem(why, field=f"thresholds.{t}")
        for t, v in thresholds.items()
        if (why := _outside(v, limits.get(t))) is not None
    )
    if problems:
        raise RulesError(problems=problems)

    resolved = _apply_overrides(thresholds, overrides or {}, limits)
    return RuleSet(
        thresholds=resolved,
        rules=tuple(rules.values()),
        sha256=digest.hexdigest(),
        files=tuple(names),
        overrides={k: resolved[k] for k in overrides or {}},
    )


def _read_folder(path: Path, problems: list[Problem]) -> list[tuple[str, bytes]]:
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".toml" and p.is_file())
        if not files:
            problems.append(Problem("no *.toml rule files in this folder", file=str(path)))
    else:
        problems.append(Problem("rules folder not found", file=str(path)))
        return []
    out = []
    for p in files:
        try:
            out.append((str(p), read_regular(p, RulesError, "rule file", max_bytes=MAX_TOML_BYTES)))
        except RulesError as e:
            problems.extend(e.problems)
    return out


def _apply_overrides(
    thresholds: Mapping[str, ThresholdValue],
    overrides: Mapping[str, Any],
    limits: Mapping[str, tuple[float, float]],
) -> dict[str, ThresholdValue]:
    resolved = dict(thresholds)
    problems: list[Problem] = []
    for name, raw in overrides.items():
        if name not in thresholds:
            known = ", ".join(sorted(thresholds))
            problems.append(Problem(f"unknown threshold '{name}' (known: {known})", field=name))
            continue
        try:
            resolved[name] = _coerce_like(thresholds[name], raw)
        except ValueError as e:
            problems.append(Problem(str(e), field=name))
            continue
        if (why := _outside(resolved[name], limits.get(name))) is not None:
            problems.append(Problem(why, field=name))
    if problems:
        raise ConfigError(problems=problems)
    return resolved


def _coerce_like(current: ThresholdValue, raw: Any) -> ThresholdValue:
    """Read an override as the type of the threshold it replaces ("500" for an int, "a,b" or a list for a
    list); ValueError saying what was expected."""
    want = type(current).__name__
    if isinstance(current, bool):
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
            return raw.strip().lower() == "true"
        raise ValueError(f"expected true or false, got {raw!r}")
    if isinstance(current, int | float):
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise ValueError(f"expected a number ({want}), got {raw!r}")
        number = _number(raw, f"expected a number ({want}), got {raw!r}")
        if isinstance(current, int):  # a count: 1.5 examples is a slip, not a threshold
            if not number.is_integer():
                raise ValueError(f"expected a whole number, got {raw!r}")
            return int(number)
        return number
    if isinstance(current, tuple):
        return _coerce_list(current, raw)
    return str(raw)


def _coerce_list(current: tuple[Any, ...], raw: Any) -> tuple[Any, ...]:
    """A list threshold: numbers stay numbers, words stay words; a number where words belong is refused
    (it would silently match nothing and disable the rule)."""
    numeric = bool(current) and all(isinstance(x, int | float) and not isinstance(x, bool) for x in current)
    if isinstance(raw, str):
        items: list[Any] = [s.strip() for s in raw.split(",") if s.strip()]
    elif isinstance(raw, list | tuple):
        items = list(raw)
    elif numeric and isinstance(raw, int | float) and not isinstance(raw, bool):
        items = [raw]
    else:
        raise ValueError(f"expected a list such as {_list_example(current)}, got {raw!r}")
    if numeric:
        return tuple(_number(x, f"expected comma-separated numbers, got {raw!r}") for x in items)
    for x in items:
        if not isinstance(x, str) or _reads_as_number(x):
            raise ValueError(f"expected a list of words such as {_list_example(current)}, got {raw!r}")
    return tuple(items)


def _number(raw: Any, expected: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ValueError(expected)
    try:
        number = float(raw)
    except (ValueError, OverflowError):
        raise ValueError(expected) from None
    error = number_problem(number)
    if error:
        raise ValueError(f"{error} (got {raw!r})")
    return number


def _reads_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _list_example(current: tuple[Any, ...]) -> str:
    return ",".join(fmt.value(x) for x in current[:2]) or "a,b"


# --------------------------------------------------------------------------- parsing one file

_TOP_KEYS = {"thresholds", "limits", "rule"}
_RULE_KEYS = {"id", "kind", "verdict", "vetoes", "weight", "message", "note", "when", "source"}
_COND_KEYS = {"signal", "op", "value", "threshold", "than_signal"}
_SOURCE_KEYS = {"title", "url", "citation"}
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
_VERDICTS = ", ".join(v.value for v in Verdict)


class _Locator:
    """Line numbers of tables and keys, found by scanning the text (tomllib keeps none)."""

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\- ]+?)\s*\]\]?")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")

    def __init__(self, text: str) -> None:
        self.thresholds: dict[str, int] = {}
        self.rules: list[dict[str, Any]] = []
        current: dict[str, int] | None = None
        section = ""
        for lineno, line in enumerate(text.splitlines(), start=1):
            m = self._HEADER.match(line)
            if m:
                section = m.group(2).replace(" ", "")
                if section == "rule":
                    self.rules.append({"line": lineno, "keys": {}, "when": []})
                    current = self.rules[-1]["keys"]
                elif section == "rule.when" and self.rules:
                    self.rules[-1]["when"].append({"line": lineno, "keys": {}})
                    current = self.rules[-1]["when"][-1]["keys"]
                elif section == "thresholds":
                    current = self.thresholds
                elif section == "rule.source" and self.rules:
                    self.rules[-1]["keys"].setdefault("source", lineno)
                    current = None
                else:
                    current = None
                continue
            k = self._KEY.match(line)
            if k and current is not None and k.group(1) not in current:
                current[k.group(1)] = lineno

    def rule(self, i: int, key: str | None = None) -> int | None:
        if i >= len(self.rules):
            return None
        r = self.rules[i]
        return r["keys"].get(key, r["line"]) if key else r["line"]

    def cond(self, i: int, j: int, key: str | None = None) -> int | None:
        if i >= len(self.rules):
            return None
        whens = self.rules[i]["when"]
        if j >= len(whens):  # inline `when = [...]`
            return self.rule(i, "when")
        return whens[j]["keys"].get(key, whens[j]["line"]) if key else whens[j]["line"]


@dataclass(frozen=True)
class _ThresholdRef:
    """A condition that names a threshold, checked once all layers are merged."""

    file: str
    line: int | None
    rule_id: str | None
    rule_index: int
    index: int
    signal: str | None
    op: Op | None
    threshold: str


@dataclass
class _ParsedFile:
    thresholds: dict[str, tuple[ThresholdValue, int | None]]
    rules: list[Rule]  # the valid ones
    ids: list[tuple[str, int | None, int]]  # (id, line, index) of every rule that has an id
    refs: list[_ThresholdRef]
    limits: dict[str, tuple[float, float]] = field(default_factory=dict)  # [limits]: (low, high), inclusive


def _parse_limits(name: str, raw: Any, problems: list[Problem]) -> dict[str, tuple[float, float]]:
    """`[limits]`: NAME = [LOW, HIGH], the range (inclusive; `inf` for none) a threshold's value must lie in,
    whoever sets it (a rule folder or an override)."""
    if not isinstance(raw, dict):
        problems.append(Problem("'limits' must be a table", file=name, field="limits"))
        return {}
    out: dict[str, tuple[float, float]] = {}
    for tname, pair in raw.items():
        ok = (
            isinstance(pair, list)
            and len(pair) == 2
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in pair)
            and not any(math.isnan(x) for x in pair)
            and pair[0] <= pair[1]
        )
        if not ok:
            problems.append(
                Problem(
                    f"expected [LOW, HIGH] with LOW <= HIGH (numbers, inf for none), got {pair!r}",
                    file=name,
                    field=f"limits.{tname}",
                )
            )
            continue
        out[tname] = (float(pair[0]), float(pair[1]))
    return out


def _outside(value: ThresholdValue, limit: tuple[float, float] | None) -> str | None:
    """Why a threshold value is outside its [limits] range (None: inside, or no range)."""
    if limit is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    low, high = limit
    if low <= value <= high:
        return None
    if math.isfinite(low) and math.isfinite(high):
        return f"must be between {fmt.value(low)} and {fmt.value(high)}, got {fmt.value(value)}"
    bound, word = (low, "least") if math.isfinite(low) else (high, "most")
    return f"must be at {word} {fmt.value(bound)}, got {fmt.value(value)}"


def _parse_file(name: str, data: bytes, problems: list[Problem]) -> _ParsedFile | None:
    start = len(problems)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        problems.append(Problem(f"not UTF-8 text (byte {e.start})", file=name))
        return None
    try:
        doc = tomllib.loads(text)
    except RecursionError:
        problems.append(Problem("TOML syntax error: nested too deeply", file=name))
        return None
    except tomllib.TOMLDecodeError as e:
        line = getattr(e, "lineno", None)
        msg = getattr(e, "msg", str(e))
        m = re.search(r"\(at line (\d+), column \d+\)", str(e))
        if line is None and m:
            line = int(m.group(1))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", msg) if m else msg
        problems.append(Problem(f"TOML syntax error: {msg}", file=name, line=line))
        return None
    except ValueError as e:  # an integer of thousands of digits (sys.get_int_max_str_digits)
        problems.append(Problem(f"a number is too large to read ({str(e).split(':')[0]})", file=name))
        return None
    bad = surrogate_path(doc)
    if bad is not None:
        problems.append(
            Problem(
                "holds a lone UTF-16 surrogate escape (such as \\ud800): not valid text", file=name, field=bad
            )
        )
        return None

    loc = _Locator(text)
    for key in doc:
        if key not in _TOP_KEYS:
            allowed = "allowed: thresholds, limits, rule"
            problems.append(Problem(f"unknown top-level key '{key}' ({allowed})", file=name, field=key))

    thresholds: dict[str, tuple[ThresholdValue, int | None]] = {}
    raw_thresholds = doc.get("thresholds", {})
    if not isinstance(raw_thresholds, dict):
        problems.append(Problem("'thresholds' must be a table", file=name, field="thresholds"))
        raw_thresholds = {}
    for tname, tvalue in raw_thresholds.items():
        line = loc.thresholds.get(tname)
        value, error = _threshold_value(tvalue)
        if not _NAME.match(tname):
            error = f"threshold name '{tname}' must start with a letter and use letters, digits, _ . -"
        if error:
            problems.append(Problem(error, file=name, line=line, field=f"thresholds.{tname}"))
            continue
        thresholds[tname] = (value, line)

    limits = _parse_limits(name, doc.get("limits", {}), problems)

    rules: list[Rule] = []
    raw_rules = doc.get("rule", [])
    if not isinstance(raw_rules, list):
        problems.append(Problem("'rule' must be an array of tables ([[rule]])", file=name, field="rule"))
        raw_rules = []
    ids: list[tuple[str, int | None, int]] = []
    refs: list[_ThresholdRef] = []
    for i, raw in enumerate(raw_rules):
        rule = _parse_rule(name, i, raw, loc, problems, refs)
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            ids.append((raw["id"], loc.rule(i), i))
        if rule is not None:
            rules.append(rule)
    if not thresholds and not raw_rules and len(problems) == start:
        problems.append(Problem("file defines neither thresholds nor rules", file=name))
    return _ParsedFile(thresholds, rules, ids, refs, limits)


def _threshold_value(v: Any) -> tuple[ThresholdValue, str | None]:
    if isinstance(v, bool | str):
        return v, None
    if isinstance(v, int | float):
        error = number_problem(v)
        if error:
            return 0, f"threshold {error}"
        return v, None
    if isinstance(v, list):
        if not v:
            return (), "threshold list must not be empty"
        if all(isinstance(x, str) for x in v):
            return tuple(v), None
        if all(isinstance(x, int | float) and not isinstance(x, bool) for x in v):
            errors = [e for e in map(number_problem, v) if e]
            return (tuple(v), f"threshold list item {errors[0]}") if errors else (tuple(v), None)
        return (), "threshold list must hold only strings or only numbers"
    return 0, f"threshold must be a number, true/false, a string or a list, not {type(v).__name__}"


def _parse_rule(
    name: str, i: int, raw: Any, loc: _Locator, problems: list[Problem], refs: list[_ThresholdRef]
) -> Rule | None:
    start = len(problems)
    fld = f"rule[{i + 1}]"

    def problem(msg: str, key: str | None = None, line: int | None = None) -> None:
        rid = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
        prefix = f"rule '{rid}': " if rid else ""
        problems.append(
            Problem(
                prefix + msg,
                file=name,
                line=line if line is not None else loc.rule(i, key),
                field=f"{fld}.{key}" if key else fld,
            )
        )

    if not isinstance(raw, dict):
        problem("each rule must be a table")
        return None
    for key in raw:
        if key not in _RULE_KEYS:
            problem(f"unknown key '{key}' (allowed: {', '.join(sorted(_RULE_KEYS))})", key)

    rid = raw.get("id")
    if not isinstance(rid, str) or not _NAME.match(rid):
        problem("'id' is required: a name of letters, digits, _ . - starting with a letter", "id")

    kind: RuleKind | None = None
    raw_kind = raw.get("kind")
    if raw_kind is None:
        problem("'kind' is required (vote, stop or veto)", "kind")
    elif raw_kind not in RuleKind._value2member_map_:
        problem(f"unknown kind {raw_kind!r} (allowed: vote, stop, veto)", "kind")
    else:
        kind = RuleKind(raw_kind)

    verdict = _verdict_field(raw, "verdict", problem)
    vetoes = _verdict_field(raw, "vetoes", problem)
    weight = raw.get("weight")
    if kind is RuleKind.VETO:
        if "verdict" in raw:
            problem("a veto rule names the verdict it forbids in 'vetoes', not 'verdict'", "verdict")
        if "vetoes" not in raw:
            problem("'vetoes' is required for a veto rule", "vetoes")
        if "weight" in raw:
            problem("a veto rule has no weight", "weight")
    elif kind is not None:
        if "verdict" not in raw:
            problem(f"'verdict' is required ({_VERDICTS})", "verdict")
        if "vetoes" in raw:
            problem("only veto rules take 'vetoes'", "vetoes")
        if weight is None:
            problem("'weight' is required for vote and stop rules", "weight")
        elif isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
            problem(f"'weight' must be a positive number, got {weight!r}", "weight")
        elif not weight <= MAX_WEIGHT:
            problem(f"'weight' must be at most {MAX_WEIGHT:g}, got {weight!r}", "weight")

    message = raw.get("message")
    if not isinstance(message, str) or not message.strip():
        problem("'message' is required: one sentence for the user", "message")
    note = raw.get("note", "")
    if not isinstance(note, str):
        problem("'note' must be a string", "note")

    sources = _parse_sources(raw.get("source"), problem)
    rule_id = rid if isinstance(rid, str) else None
    conditions = _parse_conditions(name, i, rule_id, raw.get("when"), loc, problems, problem, refs)

    if len(problems) > start:
        return None
    return Rule(
        id=rid,  # type: ignore[arg-type]
        kind=kind,  # type: ignore[arg-type]
        message=message.strip(),  # type: ignore[union-attr]
        when=conditions,
        sources=sources,
        verdict=verdict,
        vetoes=vetoes,
        weight=float(weight) if kind is not RuleKind.VETO else 0.0,  # type: ignore[arg-type]
        note=note.strip(),
        file=name,
        line=loc.rule(i),
    )


def _verdict_field(raw: dict[str, Any], key: str, problem: Any) -> Verdict | None:
    v = raw.get(key)
    if v is None:
        return None
    if v not in Verdict._value2member_map_:
        problem(f"unknown verdict {v!r} in '{key}' (allowed: {_VERDICTS})", key)
        return None
    return Verdict(v)


def _parse_sources(raw: Any, problem: Any) -> tuple[Source, ...]:
    if raw is None:
        problem("'source' is required: a table (or array of tables) with title and url or citation", "source")
        return ()
    items = raw if isinstance(raw, list) else [raw]
    out = []
    for k, s in enumerate(items):
        where = f"source[{k + 1}]" if isinstance(raw, list) else "source"
        if not isinstance(s, dict):
            problem(f"'{where}' must be a table with title and url or citation", "source")
            continue
        for key in s:
            if key not in _SOURCE_KEYS:
                problem(f"unknown key '{key}' in {where} (allowed: title, url, citation)", "source")
        title, url, citation = s.get("title"), s.get("url"), s.get("citation")
        ok = True
        if not isinstance(title, str) or not title.strip():
            problem(f"{where} needs a 'title'", "source")
            ok = False
        if url is not None and (not isinstance(url, str) or not url.startswith(("https://", "http://"))):
            problem(f"{where} 'url' must be an http(s) address", "source")
            ok = False
        if citation is not None and not isinstance(citation, str):
            problem(f"{where} 'citation' must be a string", "source")
            ok = False
        if url is None and citation is None:
            problem(f"{where} needs a 'url' or a 'citation'", "source")
            ok = False
        if ok:
            out.append(Source(str(title).strip(), url, str(citation).strip() if citation else None))
    return tuple(out)


def _parse_conditions(
    name: str,
    i: int,
    rule_id: str | None,
    raw: Any,
    loc: _Locator,
    problems: list[Problem],
    problem: Any,
    refs: list[_ThresholdRef],
) -> tuple[Condition, ...]:
    if not isinstance(raw, list) or not raw:
        problem("'when' is required: at least one condition ([[rule.when]])", "when")
        return ()
    out = []
    for j, c in enumerate(raw):
        where = f"when[{j + 1}]"

        def cproblem(msg: str, key: str | None = None, j: int = j, where: str = where) -> None:
            problem(f"{where}: {msg}", key=f"{where}.{key}" if key else where, line=loc.cond(i, j, key))

        if not isinstance(c, dict):
            cproblem("a condition must be a table {signal, op, value|threshold|than_signal}")
            continue
        before = len(problems)
        for key in c:
            if key not in _COND_KEYS:
                cproblem(f"unknown key '{key}' (allowed: {', '.join(sorted(_COND_KEYS))})", key)
        signal = c.get("signal")
        spec: SignalSpec | None = None
        if not isinstance(signal, str):
            cproblem("'signal' is required", "signal")
        elif signal not in CATALOGUE:
            cproblem(f"unknown signal '{signal}'{_suggest(signal, CATALOGUE)}", "signal")
        else:
            spec = CATALOGUE[signal]
        op: Op | None = None
        raw_op = c.get("op")
        if raw_op is None:
            cproblem("'op' is required (lt, le, gt, ge, eq, ne, in)", "op")
        elif raw_op not in Op._value2member_map_:
            cproblem(f"unknown op {raw_op!r} (allowed: lt, le, gt, ge, eq, ne, in)", "op")
        else:
            op = Op(raw_op)
        given = [k for k in ("value", "threshold", "than_signal") if k in c]
        if len(given) != 1:
            cproblem("give exactly one of 'value', 'threshold' or 'than_signal'", given[1] if given else None)
        value: Any = None
        if "value" in c:
            value = tuple(c["value"]) if isinstance(c["value"], list) else c["value"]
            if spec is not None and op is not None:
                err = check_operand(spec, op, value)
                if err:
                    cproblem(err, "value")
        threshold = c.get("threshold")
        if "threshold" in c and not isinstance(threshold, str):
            cproblem("'threshold' must be the name of a threshold", "threshold")
        elif isinstance(threshold, str):
            line = loc.cond(i, j, "threshold")
            refs.append(_ThresholdRef(name, line, rule_id, i, j, spec.name if spec else None, op, threshold))
        than = c.get("than_signal")
        if "than_signal" in c:
            if not isinstance(than, str) or than not in CATALOGUE:
                cproblem(f"unknown signal {than!r} in 'than_signal'", "than_signal")
            elif spec is not None and op is not None:
                other = CATALOGUE[than]
                if op is Op.IN:
                    cproblem("'in' needs a list value or threshold, not another signal", "op")
                elif op in NUMERIC_OPS and not (spec.numeric and other.numeric):
                    cproblem(f"'{op}' compares numbers; '{signal}' and '{than}' must both be numeric", "op")
                elif op not in NUMERIC_OPS and spec.type != other.type:
                    cproblem(f"'{signal}' ({spec.type}) and '{than}' ({other.type}) differ in type", "op")
        if len(problems) > before:
            continue
        out.append(
            Condition(
                signal=signal,  # type: ignore[arg-type]
                op=op,  # type: ignore[arg-type]
                value=value,
                threshold=threshold,
                than_signal=than,
                line=loc.cond(i, j),
            )
        )
    return tuple(out)


def check_operand(spec: SignalSpec, op: Op, operand: Any) -> str | None:
    """Why `spec.name op operand` cannot be evaluated, or None when it can."""
    if op in NUMERIC_OPS:
        if not spec.numeric:
            return f"'{op}' compares numbers but signal '{spec.name}' is {spec.type}"
        if isinstance(operand, bool) or not isinstance(operand, int | float):
            return f"'{op}' needs a number to compare '{spec.name}' with, got {_show(operand)}"
        error = number_problem(operand)
        return f"the number to compare '{spec.name}' with {error}" if error else None
    numbers = operand if isinstance(operand, tuple) else (operand,)
    errors = [e for e in map(number_problem, numbers) if e]
    if errors:
        return f"the value for '{spec.name}' {errors[0]}"
    if op is Op.IN:
        if not isinstance(operand, tuple) or not operand:
            return f"'in' needs a non-empty list, got {_show(operand)}"
        wrong = [x for x in operand if not value_matches(spec, x)]
        if wrong:
            return f"list items {wrong!r} do not match signal '{spec.name}' ({spec.type})"
        return None
    if not value_matches(spec, operand):
        return f"value {_show(operand)} does not match signal '{spec.name}' ({spec.type})"
    return None


def _check_threshold_refs(
    refs: Iterable[_ThresholdRef], thresholds: Mapping[str, ThresholdValue]
) -> Iterable[Problem]:
    for ref in refs:
        where = (f"rule '{ref.rule_id}': " if ref.rule_id else "") + f"when[{ref.index + 1}]"
        fld = f"rule[{ref.rule_index + 1}].when[{ref.index + 1}].threshold"
        if ref.threshold not in thresholds:
            yield Problem(
                f"{where}: unknown threshold '{ref.threshold}'{_suggest(ref.threshold, thresholds)}",
                file=ref.file,
                line=ref.line,
                field=fld,
            )
            continue
        if ref.signal is None or ref.op is None:
            continue  # already reported
        err = check_operand(CATALOGUE[ref.signal], ref.op, thresholds[ref.threshold])
        if err:
            yield Problem(
                f"{where}: threshold '{ref.threshold}': {err}", file=ref.file, line=ref.line, field=fld
            )


def _show(v: Any) -> str:
    return repr(list(v)) if isinstance(v, tuple) else repr(v)


def _suggest(name: str, known: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _where(file: str, line: int | None) -> str:
    return f"{file}:{line}" if line is not None else file


def _jsonable(v: ThresholdValue) -> Any:
    return list(v) if isinstance(v, tuple) else v
