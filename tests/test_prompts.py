"""Arms, rendering and demonstration selection (no model: the fake backend's tokenizer and template)."""

from __future__ import annotations

from collections import Counter

import pytest
from fakes import FakeBackend, rotten_tomatoes

from advisor.errors import ConfigError
from advisor.measure.prompts import (
    Arm,
    ArmKind,
    DemoSelector,
    build_arms,
    format_hint,
    render_messages,
    stratified_order,
    system_instruction,
)
from advisor.types import Example, Message, TaskKind

LABELS = ("negative", "positive")


@pytest.fixture(scope="module")
def data() -> tuple[list[Example], list[Example]]:
    rows = rotten_tomatoes(120, seed=1)
    return rows[:80], rows[80:]


def _arms(train: list[Example], max_context_tokens: int = 100_000, **kw: object) -> tuple[Arm, ...]:
    return build_arms(
        FakeBackend(), TaskKind.CLASSIFY, LABELS, train, max_context_tokens=max_context_tokens, **kw
    )  # type: ignore[arg-type]


def test_ladder_names_and_order(data):
    train, _ = data
    arms = _arms(train, k_ladder=(1, 2, 4, 8))
    assert [a.name for a in arms] == [
        "zero_shot",
        "system",
        "few_shot_k1",
        "few_shot_k2",
        "few_shot_k4",
        "few_shot_k8",
    ]
    assert [a.k for a in arms] == [0, 0, 1, 2, 4, 8]
    assert arms[0].instruction is None and arms[1].instruction == arms[2].instruction


def test_k_bounded_by_context(data):
    train, _ = data
    fake = FakeBackend()
    big = _arms(train, k_ladder=(1, 2, 4, 8, 16, 32))
    assert max(a.k for a in big) == 32
    # The k=32 prompt is far longer than 250 whitespace tokens; the bound must drop the big k.
    small = _arms(train, max_context_tokens=250, k_ladder=(1, 2, 4, 8, 16, 32))
    ks = [a.k for a in small if a.kind is ArmKind.FEW_SHOT]
    assert ks and max(ks) < 32
    sel = DemoSelector(train, seed=0)
    for arm in small:
        demos = sel.select(arm, train[0])
        # the estimate uses 95th-percentile lengths, so typical prompts fit
        n = fake.count_tokens([fake.render(render_messages(arm, train[0], demos))])[0]
        assert n <= 250 + 50
    # A context too small for even one demonstration leaves zero-shot and system only.
    tiny = _arms(train, max_context_tokens=40)
    assert [a.name for a in tiny] == ["zero_shot", "system"]


def test_k_bounded_by_train_size(data):
    train, _ = data
    arms = _arms(train[:5], k_ladder=(1, 2, 4, 8))
    assert max(a.k for a in arms) == 4


def test_render_zero_system_few(data):
    train, evals = data
    ex = Example(7, (Message("system", "Be terse."), Message("user", "A gem.")), "positive", "positive")
    zero, system, k2 = _arms(train, k_ladder=(2,))
    z = render_messages(zero, ex)
    assert z == (Message("user", "A gem.\n\n" + format_hint(TaskKind.CLASSIFY, LABELS, 0)),)
    s = render_messages(system, ex)
    assert s[0].role == "system" and s[0].content.startswith(system.instruction or "")
    assert s[0].content.endswith("Be terse.")  # the dataset's own system turn is kept after the instruction
    assert s[1:] == z
    demos = DemoSelector(train, seed=0).select(k2, ex)
    f = render_messages(k2, ex, demos)
    assert f[0] == s[0] and f[-1] == z[-1]
    assert [m.role for m in f] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert [f[2].content, f[4].content] == [d.target for d in demos]
    assert f[1].content.startswith(demos[0].input_text) and f[1].content.endswith(
        format_hint(TaskKind.CLASSIFY, LABELS, 0)
    )


def test_system_instruction_sources():
    built = system_instruction(TaskKind.CLASSIFY, LABELS, description="Film review snippets.")
    assert built.startswith("Film review snippets.") and "negative, positive" in built
    assert system_instruction(TaskKind.CLASSIFY, LABELS, system_file_text="  Mine.\n") == "Mine."
    assert format_hint(TaskKind.GENERATE, ()) == ""


def test_stratified_is_balanced_nested_and_seeded(data):
    train, _ = data
    order = stratified_order(train, seed=3)
    assert sorted(e.line for e in order) == sorted(e.line for e in train)
    for k in (2, 4, 8):
        counts = Counter(e.label for e in order[:k])
        assert counts["positive"] == counts["negative"] == k // 2
    assert [e.line for e in stratified_order(train, seed=3)] == [e.line for e in order]
    assert [e.line for e in stratified_order(train, seed=4)] != [e.line for e in order]
    sel = DemoSelector(train, seed=3)
    arms = {a.k: a for a in _arms(train, k_ladder=(1, 2, 4)) if a.k}
    d1, d2, d4 = (sel.select(arms[k], train[0]) for k in (1, 2, 4))
    assert d2[:1] == d1 and d4[:2] == d2  # nested across k: a shared, cacheable prefix


def test_demos_only_from_train(data):
    train, evals = data
    train_lines = {e.line for e in train}
    for selection in ("stratified", "nearest"):
        arms = _arms(train, k_ladder=(1, 4, 8), demo_selection=selection)
        sel = DemoSelector(train, seed=0)
        for arm in arms:
            for ex in evals:
                assert {d.line for d in sel.select(arm, ex)} <= train_lines


def test_nearest_picks_similar_and_skips_duplicates(data):
    train, _ = data
    arm = [a for a in _arms(train, k_ladder=(2,), demo_selection="nearest") if a.k][0]
    assert arm.name == "few_shot_k2_nearest"
    sel = DemoSelector(train, seed=0)
    query = train[5]
    demos = sel.select(arm, query)
    assert len(demos) == 2 and query.line not in {d.line for d in demos}  # its own text is skipped
    # A query made of a train snippet plus one word: that snippet is a neighbour, most similar last.
    probe = Example(10_000, (Message("user", train[9].input_text + " indeed"),), "x", None)
    assert sel.select(arm, probe)[-1].line == train[9].line


def test_arm_validation():
    with pytest.raises(ValueError, match="k must be"):
        Arm("few_shot_k0", ArmKind.FEW_SHOT, k=0, instruction="x")
    with pytest.raises(ValueError, match="instruction"):
        Arm("system", ArmKind.SYSTEM)
    with pytest.raises(ValueError, match="selection"):
        Arm("few_shot_k1", ArmKind.FEW_SHOT, k=1, selection="random", instruction="x")


def test_system_file_and_bad_selection(data, tmp_path):
    train, _ = data
    f = tmp_path / "system.txt"
    f.write_text("You grade film reviews.\n", encoding="utf-8")
    arms = _arms(train, k_ladder=(1,), system_file=f)
    assert arms[1].instruction == "You grade film reviews." == arms[2].instruction
    with pytest.raises(ConfigError):
        _arms(train, system_file=tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="empty"):
        _arms(train, system_file=tmp_path / "empty.txt")
    with pytest.raises(ConfigError):
        _arms(train, demo_selection="random")
    described = _arms(train, k_ladder=(), description="Film review snippets.")
    assert (described[1].instruction or "").startswith("Film review snippets.")
