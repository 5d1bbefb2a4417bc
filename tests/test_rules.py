"""Rules as data: loading, validation of every problem at once, layering, overrides, evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest

from advisor.decide.rules import (
    RULES_TABLE_COLUMNS,
    RuleKind,
    Status,
    evaluate,
    format_rules_table,
    load_rules,
)
from advisor.decide.signals import CATALOGUE
from advisor.errors import ConfigError, ExitCode, RulesError
from advisor.types import Verdict

VALID_USER_RULE = """
[thresholds]
min_examples = 50

[[rule]]
id = "data.min_examples"
kind = "stop"
verdict = "collect_data"
weight = 12
message = "Our team's floor: below 50 examples, collect more."

[[rule.when]]
signal = "n_examples"
op = "lt"
threshold = "min_examples"

[rule.source]
title = "Team policy"
citation = "Internal review, 2026"
"""

# Line 6 is a syntax error (a value is missing).
BROKEN_SYNTAX = """\
[thresholds]
floor = 10

[[rule]]
id = "x.syntax"
weight =
"""

BROKEN_FIELDS = """\
[[rule]]
id = "x.fields"
kind = "vote"
verdict = "maybe"
weight = 1
colour = "red"

[[rule.when]]
signal = "n_exampels"
op = "lte"
value = 3

[rule.source]
title = "Somewhere"

[[rule]]
id = "x.no_message"
kind = "shout"
weight = 1

[[rule.when]]
signal = "n_examples"
op = "lt"
value = 10
"""

BROKEN_REFS = """\
[thresholds]
names = ["a", "b"]

[[rule]]
id = "x.refs"
kind = "vote"
verdict = "fine_tune"
weight = 2
message = "Compares a count with a word."

[[rule.when]]
signal = "n_examples"
op = "lt"
value = "many"

[[rule.when]]
signal = "volume_per_day"
op = "gt"
threshold = "no_such_threshold"

[[rule.when]]
signal = "n_examples"
op = "gt"
threshold = "names"

[rule.source]
title = "Somewhere"
url = "https://example.org/rules"

[[rule]]
id = "x.refs"
kind = "veto"
vetoes = "fine_tune"
weight = 3
message = "Duplicate id, and a veto with a weight."

[[rule.when]]
signal = "prompting_measured"
op = "eq"
value = "no"

[rule.source]
title = "Somewhere"
url = "https://example.org/rules"
"""


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_shipped_rules_load_with_sources_and_a_stable_hash() -> None:
    rs = load_rules()
    ids = [r.id for r in rs.rules]
    assert len(ids) == len(set(ids)) >= 15
    assert {"data.min_examples", "prompting.meets_target", "prompting.unmeasured_blocks_fine_tune"} <= set(
        ids
    )
    assert all(r.sources and r.message for r in rs.rules)
    assert rs.thresholds["min_examples"] == 500
    floor = rs.get("data.min_examples")
    assert floor.kind is RuleKind.STOP and floor.verdict is Verdict.COLLECT_DATA
    # the published spectrum is stated beside the floor
    for fact in ("10", "50-100", "100-500", "1,000"):
        assert fact in floor.note
    assert len(floor.sources) == 3
    # every verdict has at least one rule arguing for it
    argued = {r.verdict for r in rs.rules if r.kind is not RuleKind.VETO}
    assert argued == set(Verdict)
    assert len(rs.sha256) == 64 and load_rules().sha256 == rs.sha256


def test_three_broken_files_report_every_problem_in_one_error(tmp_path: Path) -> None:
    folder = _write(
        tmp_path / "broken",
        {"a_syntax.toml": BROKEN_SYNTAX, "b_fields.toml": BROKEN_FIELDS, "c_refs.toml": BROKEN_REFS},
    )
    with pytest.raises(RulesError) as info:
        load_rules([folder], include_shipped=False)
    err = info.value
    assert err.exit_code is ExitCode.BAD_RULES
    by_file: dict[str, list] = {}
    for p in err.problems:
        by_file.setdefault(Path(p.file).name, []).append(p)
    assert set(by_file) == {"a_syntax.toml", "b_fields.toml", "c_refs.toml"}

    (syntax,) = by_file["a_syntax.toml"]
    assert syntax.line == 6 and "TOML syntax error" in syntax.message

    text_b = "\n".join(str(p) for p in by_file["b_fields.toml"])
    for expected in (
        "unknown verdict 'maybe'",
        "unknown key 'colour'",
        "unknown signal 'n_exampels' (did you mean 'n_examples'?)",
        "unknown op 'lte'",
        "needs a 'url' or a 'citation'",
        "unknown kind 'shout'",
        "'message' is required",
        "'source' is required",
    ):
        assert expected in text_b, expected
    # problems point at lines: the bad op sits on line 10, the source table on 13, the bad kind on 18
    lines = {p.line for p in by_file["b_fields.toml"]}
    assert {4, 9, 10, 13, 18} <= lines

    text_c = "\n".join(str(p) for p in by_file["c_refs.toml"])
    for expected in (
        "needs a number to compare 'n_examples' with",
        "duplicate rule id 'x.refs'",
        "a veto rule has no weight",
        "value 'no' does not match signal 'prompting_measured' (bool)",
    ):
        assert expected in text_c, expected
    # the second rule is dropped as a duplicate only after its own checks; threshold checks run on
    # the merged set, so the unknown threshold and the wrong-typed threshold are reported too
    assert "unknown threshold 'no_such_threshold'" in text_c
    assert "threshold 'names'" in text_c
    # one str() shows file:line for each problem
    assert "a_syntax.toml:6:" in str(err)


def test_rules_folder_missing_or_empty_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RulesError) as info:
        load_rules([tmp_path / "missing", tmp_path / "empty"], include_shipped=False)
    messages = [p.message for p in info.value.problems]
    assert "rules folder not found" in messages
    assert "no *.toml rule files in this folder" in messages


def test_user_rule_replaces_shipped_rule_and_threshold(tmp_path: Path) -> None:
    shipped = load_rules()
    folder = _write(tmp_path / "mine", {"floor.toml": VALID_USER_RULE})
    rs = load_rules([folder])
    rule = rs.get("data.min_examples")
    assert rule.weight == 12 and rule.message.startswith("Our team's floor")
    assert rule.file.endswith("floor.toml")
    assert rs.thresholds["min_examples"] == 50
    # same number of rules, same position: replaced in place, not appended
    assert [r.id for r in rs.rules] == [r.id for r in shipped.rules]
    assert rs.sha256 != shipped.sha256
    assert rs.files[-1].endswith("floor.toml")


def test_validate_a_single_folder_without_the_shipped_rules(tmp_path: Path) -> None:
    folder = _write(tmp_path / "mine", {"floor.toml": VALID_USER_RULE})
    rs = load_rules([folder], include_shipped=False)
    assert [r.id for r in rs.rules] == ["data.min_examples"]
    assert dict(rs.thresholds) == {"min_examples": 50}
    # a user rule that uses a shipped threshold needs the shipped set to validate
    uses_shipped = VALID_USER_RULE.replace("[thresholds]\nmin_examples = 50\n", "").replace(
        'threshold = "min_examples"', 'threshold = "comfortable_examples"'
    )
    other = _write(tmp_path / "other", {"r.toml": uses_shipped})
    with pytest.raises(RulesError, match="unknown threshold 'comfortable_examples'"):
        load_rules([other], include_shipped=False)
    assert load_rules([other]).get("data.min_examples").weight == 12


def test_threshold_overrides() -> None:
    rs = load_rules(overrides={"min_examples": "300", "max_conflict_share": 0.1})
    assert rs.thresholds["min_examples"] == 300 and isinstance(rs.thresholds["min_examples"], int)
    assert rs.thresholds["max_conflict_share"] == 0.1
    assert dict(rs.overrides) == {"min_examples": 300, "max_conflict_share": 0.1}
    lists = load_rules(overrides={"specialist_domains": "legal, finance"})
    assert lists.thresholds["specialist_domains"] == ("legal", "finance")

    with pytest.raises(ConfigError) as info:
        load_rules(overrides={"min_exampels": 3, "min_examples": "lots"})
    text = str(info.value)
    assert "unknown threshold 'min_exampels'" in text
    assert "expected a number" in text and "'lots'" in text
    assert info.value.exit_code is ExitCode.USAGE


def test_evaluate_reports_fired_not_fired_and_skipped_with_evidence() -> None:
    rs = load_rules()
    outcomes = {o.rule.id: o for o in evaluate(rs, {"n_examples": 120, "task_kind": "classify"})}
    floor = outcomes["data.min_examples"]
    assert floor.status is Status.FIRED
    assert floor.evidence() == {"signals": {"n_examples": 120}, "thresholds": {"min_examples": 500}}
    assert outcomes["data.small_for_fine_tuning"].status is Status.NOT_FIRED
    skipped = outcomes["prompting.plateau_below_target"]
    assert skipped.status is Status.SKIPPED
    assert skipped.missing == (
        "prompting_plateaued",
        "prompt_meets_target",
        "few_shot_meets_target",
        "eval_items_needed",  # a plateau claim needs the power to have seen a gain
        "n_eval",
    )
    # signal against signal
    curve = {o.rule.id: o for o in evaluate(rs, _curve_signals(examples_needed=900))}
    assert curve["data.learning_curve_short"].status is Status.FIRED
    curve = {o.rule.id: o for o in evaluate(rs, _curve_signals(examples_needed=600))}
    assert curve["data.learning_curve_short"].status is Status.NOT_FIRED
    # `in` over a list threshold
    dom = {o.rule.id: o for o in evaluate(rs, {"domain": "legal"})}
    assert dom["domain.specialist_language"].status is Status.FIRED


def _curve_signals(examples_needed: int) -> dict[str, object]:
    return {
        "n_examples": 800,
        "examples_needed": examples_needed,
        "prompt_meets_target": False,
        "few_shot_meets_target": False,
    }


def test_evaluate_rejects_wrong_signal_types() -> None:
    with pytest.raises(ValueError, match="n_examples='120'"):
        evaluate(load_rules(), {"n_examples": "120"})
    with pytest.raises(ValueError, match="prompting_measured=1"):
        evaluate(load_rules(), {"prompting_measured": 1})


def test_rules_table_rows() -> None:
    rs = load_rules()
    rows = format_rules_table(rs)
    assert len(rows) == len(rs.rules)
    assert all(tuple(r) == RULES_TABLE_COLUMNS for r in rows)
    floor = next(r for r in rows if r["id"] == "data.min_examples")
    assert floor["when"] == "n_examples < min_examples (500)"
    assert floor["kind"] == "stop" and floor["verdict"] == "collect_data"
    veto = next(r for r in rows if r["kind"] == "veto")
    assert veto["verdict"] == "not fine_tune" and veto["weight"] == ""


def test_every_condition_names_a_catalogued_signal() -> None:
    for rule in load_rules().rules:
        assert set(rule.signal_names) <= set(CATALOGUE), rule.id


def test_print_rules_shows_list_thresholds_as_data() -> None:
    import io

    from rich.console import Console

    from advisor.decide.rules import print_rules

    buf = io.StringIO()
    print_rules(load_rules(overrides={"min_examples": 300}), Console(file=buf, width=220, color_system=None))
    out = buf.getvalue()
    assert "data.min_examples" in out and "300 (overridden)" in out
    assert "[legal, medical, clinical, biomedical, code]" in out


def test_inline_conditions_and_a_bom_are_accepted(tmp_path: Path) -> None:
    text = (
        "\ufeff[[rule]]\n"
        'id = "team.inline"\n'
        'kind = "vote"\n'
        'verdict = "few_shot"\n'
        "weight = 1\n"
        'message = "Inline conditions work too."\n'
        'when = [{signal = "n_examples", op = "ge", value = 10}, '
        '{signal = "domain", op = "ne", value = "code"}]\n'
        'source = {title = "Team policy", citation = "Internal, 2026"}\n'
    )
    folder = _write(tmp_path / "inline", {"r.toml": text})
    rule = load_rules([folder], include_shipped=False).get("team.inline")
    assert [c.describe() for c in rule.when] == ["n_examples >= 10", "domain != code"]
    bad = text.replace('"ne", value = "code"', '"ne", value = 3')
    (folder / "r.toml").write_text(bad, encoding="utf-8")
    with pytest.raises(RulesError) as info:
        load_rules([folder], include_shipped=False)
    (problem,) = info.value.problems
    assert problem.line == 7 and problem.field == "rule[1].when[2].value"
