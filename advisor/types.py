"""The shared value types every stage passes around: examples, splits, signals.

Everything here is a frozen dataclass or an enum; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class TaskKind(StrEnum):
    CLASSIFY = "classify"
    GENERATE = "generate"


class Verdict(StrEnum):
    PROMPT = "prompt"
    FEW_SHOT = "few_shot"
    FINE_TUNE = "fine_tune"
    COLLECT_DATA = "collect_data"
    INCONCLUSIVE = "inconclusive"


ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class Example:
    """One normalised task example, whatever format it came from.

    `messages` are the input turns (optionally a system turn, then user/assistant history, ending
    with a user turn); `target` is the text the model should produce; `label` is set for
    classification tasks (equal to the stripped target).
    """

    line: int  # 1-based line (JSONL) or data row (tables) in the source file
    messages: tuple[Message, ...]
    target: str
    label: str | None = None

    @property
    def input_text(self) -> str:
        """The user-visible input: the last user turn's content."""
        for m in reversed(self.messages):
            if m.role == "user":
                return m.content
        return ""

    @property
    def system(self) -> str | None:
        if self.messages and self.messages[0].role == "system":
            return self.messages[0].content
        return None
