"""The prompts `advise` sent, recorded once in the run folder (prompts.json) so nothing re-derives them.

Verification scores the best prompting arm's latency, and `tunegate verify --prompts best` scores another
model, with exactly the turns the arm was measured with. Rebuilding them from config.json would repeat
`advise`'s choices with whatever defaults and files are current then (a system prompt file edited since,
a different ladder); the record holds what was actually used instead:

- per arm: its kind, k and demonstration selection, the system instruction text verbatim, the answer-
  format hint (the label list in the order the prompt shows it), the label-bias correction chosen on the
  dev split (variant and per-label offsets), and for few-shot arms the demonstrations of every eval item
  by data line;
- the task, the label set in scoring order, the eval lines, and which arm was best.

With the data file (its sha256 is checked against split.json) the record rebuilds every request exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from advisor.errors import DataError
from advisor.measure.calibration import Variant
from advisor.measure.prompts import Arm, ArmKind, render_messages
from advisor.types import Example, Message, TaskKind


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RecordedArm(_Frozen):
    """One prompting arm as it was sent: enough to render each eval item's request again."""

    name: str
    kind: ArmKind
    k: int
    selection: str
    instruction: str | None
    format_hint: str
    variant: Variant
    offsets: dict[str, float] | None
    demos: dict[int, list[int]]  # eval line -> the demonstrations' data lines, in prompt order

    def to_arm(self) -> Arm:
        return Arm(self.name, self.kind, self.k, self.selection, self.instruction, self.format_hint)

    def render(
        self, eval_items: Sequence[Example], by_line: Mapping[int, Example]
    ) -> list[tuple[Message, ...]]:
        """The chat turns this arm sent for each eval item (demonstrations looked up by data line)."""
        arm = self.to_arm()
        out = []
        for ex in eval_items:
            lines = self.demos.get(ex.line, [])
            missing = [ln for ln in lines if ln not in by_line]
            if missing:
                raise DataError(
                    f"arm {self.name!r}: demonstration line {missing[0]} is not in the data file",
                    field=f"arms.{self.name}.demos",
                )
            out.append(render_messages(arm, ex, tuple(by_line[ln] for ln in lines)))
        return out


class PromptRecord(_Frozen):
    """prompts.json: every arm `advise` measured on the eval items, and the best of them."""

    version: Literal[1] = 1
    task: TaskKind
    labels: list[str]  # scoring order
    seed: int
    eval_lines: list[int]
    best_arm: str | None  # the best honest arm; None when every arm was degenerate
    arms: list[RecordedArm]

    def arm(self, name: str) -> RecordedArm:
        for a in self.arms:
            if a.name == name:
                return a
        raise DataError(f"no arm {name!r} in the recorded prompts", field="arms")


def record_prompts(prompting: Any) -> PromptRecord:
    """The record of a measured `evaluate.PromptingResult` (each arm result carries the `Arm` it rendered)."""
    arms = []
    for result in prompting.arms:
        arm: Arm = result.arm
        arms.append(
            RecordedArm(
                name=result.name,
                kind=arm.kind,
                k=arm.k,
                selection=arm.selection,
                instruction=arm.instruction,
                format_hint=arm.format_hint,
                variant=Variant(result.variant),
                offsets=None if result.offsets is None else dict(result.offsets),
                demos={it.line: list(it.demo_lines) for it in result.items if it.demo_lines},
            )
        )
    first = prompting.arms[0]
    return PromptRecord(
        task=prompting.task,
        labels=list(prompting.labels),
        seed=prompting.seed,
        eval_lines=[it.line for it in first.items],
        best_arm=prompting.plateau.best_arm,
        arms=arms,
    )
