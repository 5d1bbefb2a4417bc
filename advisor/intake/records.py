"""The JSON Lines record formats: how one JSON object shaped as chat (OpenAI messages, with list content
and tool turns), ShareGPT, prompt/completion (text, or TRL's conversational form) or alpaca becomes an
`Example`, or the `Problem` naming the field at fault.

The formats and the tool-turn rule are described in `advisor.intake.data`'s docstring, which is the public
face of intake; detecting a file's format and reading its lines stay there too.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from advisor.errors import Problem
from advisor.intake.reading import type_name
from advisor.textsafe import preview
from advisor.types import ROLES, Example, Message


def _text_field(
    obj: dict[str, Any],
    key: str,
    field: str,
    name: str,
    line: int,
    *,
    allow_empty: bool = False,
    required: bool = True,
) -> str | Problem:
    if key not in obj or (obj[key] is None and not required):
        if required:
            return Problem("missing", file=name, line=line, field=field)
        return ""
    value = obj[key]
    if not isinstance(value, str):
        return Problem(
            f"wrong type: expected a string, got {type_name(value)}", file=name, line=line, field=field
        )
    if not allow_empty and not value.strip():
        return Problem("empty", file=name, line=line, field=field)
    return value


_ROLE_SET = frozenset(ROLES)


def from_chat(obj: dict[str, Any], name: str, line: int) -> Example | Problem:
    """The common case, checked with as little work per turn as possible; anything odd goes to the
    detailed check, which names the problem."""
    msgs = obj.get("messages")
    if type(msgs) is list and len(msgs) >= 2:
        last = msgs[-1]
        if type(last) is dict and last.get("role") == "assistant" and type(last.get("content")) is str:
            turns = []
            user = False
            for m in msgs[:-1]:
                if type(m) is not dict:
                    break
                role, content = m.get("role"), m.get("content")
                if type(role) is not str or role not in _ROLE_SET or type(content) is not str:
                    break
                if not content or content.isspace():
                    break
                if role == "user":
                    user = True
                    turns.append(Message(role, content))
                else:
                    turns.append(_shared_message(role, content))
            else:
                if user:
                    return Example(line=line, messages=tuple(turns), target=last["content"])
    return _check_chat(obj, name, line)


@functools.lru_cache(maxsize=1024)
def _shared_message(role: str, content: str) -> Message:
    """System prompts and shared history repeat on every record: build each such turn once."""
    return Message(role, content)


@dataclass(frozen=True)
class _Dialect:
    """How one conversational format spells a turn: its keys and its role names (mapped to ours)."""

    role_key: str
    content_key: str
    roles: dict[str, str]  # the format's role name -> system/user/assistant, or "tool" (dropped)


_TOOL = "tool"
_OPENAI = _Dialect(
    "role",
    "content",
    {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": _TOOL},
)
_SHAREGPT = _Dialect(
    "from",
    "value",
    {
        "system": "system",
        "human": "user",
        "user": "user",
        "gpt": "assistant",
        "assistant": "assistant",
        "tool": _TOOL,
    },
)


def _check_chat(obj: dict[str, Any], name: str, line: int) -> Example | Problem:
    return _from_conversation(obj, "messages", _OPENAI, name, line)


def from_sharegpt(obj: dict[str, Any], name: str, line: int) -> Example | Problem:
    return _from_conversation(obj, "conversations", _SHAREGPT, name, line)


def _from_conversation(
    obj: dict[str, Any], key: str, dialect: _Dialect, name: str, line: int
) -> Example | Problem:
    """A record holding one conversation: its last turn (the assistant's) is the target."""
    msgs = obj.get(key)
    if msgs is None:
        return Problem("missing", file=name, line=line, field=key)
    turns = _turns(msgs, key, dialect, name, line, target_last=True)
    if isinstance(turns, Problem):
        return turns
    if not any(t.role == "user" for t in turns[:-1]):
        return Problem("no user turn before the assistant's reply", file=name, line=line, field=key)
    return Example(line=line, messages=tuple(turns[:-1]), target=turns[-1].content)


def _turns(
    msgs: Any, field: str, dialect: _Dialect, name: str, line: int, *, target_last: bool
) -> list[Message] | Problem:
    """The text turns of a list of messages, tool turns dropped (see `advisor.intake.data`'s docstring).

    With `target_last`, the last item must be the assistant's reply, kept even when empty."""
    if not isinstance(msgs, list):
        return Problem(
            f"wrong type: expected a list of messages, got {type_name(msgs)}",
            file=name,
            line=line,
            field=field,
        )
    if not msgs:
        need = "a user turn and a final assistant turn" if target_last else "at least one turn"
        return Problem(f"empty: need {need}", file=name, line=line, field=field)
    turns: list[Message] = []
    last = len(msgs) - 1
    for i, m in enumerate(msgs):
        where = f"{field}[{i}]"
        if not isinstance(m, dict):
            return Problem(
                f"wrong type: expected an object, got {type_name(m)}", file=name, line=line, field=where
            )
        role_field = f"{where}.{dialect.role_key}"
        given = _text_field(m, dialect.role_key, role_field, name, line)
        if isinstance(given, Problem):
            return given
        role = dialect.roles.get(given)
        if role is None:
            return Problem(
                f"unknown role '{preview(given)}'; expected one of {', '.join(dialect.roles)}",
                file=name,
                line=line,
                field=role_field,
            )
        is_target = target_last and i == last
        if is_target and role != "assistant":
            return Problem(
                f"the last turn is '{preview(given)}'; it must be the assistant's reply (the target)",
                file=name,
                line=line,
                field=role_field,
            )
        if role == _TOOL:
            continue
        raw = m.get(dialect.content_key)
        if role == "assistant" and not is_target and m.get("tool_calls") and (raw is None or raw == ""):
            continue  # a turn that only calls tools
        content = _content(m, dialect.content_key, f"{where}.{dialect.content_key}", name, line, is_target)
        if isinstance(content, Problem):
            return content
        turns.append(Message(role, content))
    return turns


def _content(
    m: dict[str, Any], key: str, field: str, name: str, line: int, allow_empty: bool
) -> str | Problem:
    """A turn's text: a string, or OpenAI's list of text parts joined with no separator."""
    parts = m.get(key)
    if not isinstance(parts, list):
        return _text_field(m, key, field, name, line, allow_empty=allow_empty)
    texts = []
    for j, part in enumerate(parts):
        where = f"{field}[{j}]"
        if not isinstance(part, dict):
            return Problem(
                f"wrong type: expected a content part object, got {type_name(part)}",
                file=name,
                line=line,
                field=where,
            )
        kind = part.get("type")
        if kind != "text":
            shown = f"'{preview(kind)}'" if isinstance(kind, str) else type_name(kind)
            return Problem(
                f"content part of type {shown} is not text; tunegate benchmarks text only, so remove "
                "the part or describe it in a text part",
                file=name,
                line=line,
                field=f"{where}.type",
            )
        text = _text_field(part, "text", f"{where}.text", name, line, allow_empty=True)
        if isinstance(text, Problem):
            return text
        texts.append(text)
    joined = "".join(texts)
    if not allow_empty and not joined.strip():
        return Problem("empty", file=name, line=line, field=field)
    return joined


def from_prompt_completion(obj: dict[str, Any], name: str, line: int) -> Example | Problem:
    if isinstance(obj.get("prompt"), list):
        return _from_conversational_pc(obj, name, line)
    prompt = _text_field(obj, "prompt", "prompt", name, line)
    if isinstance(prompt, Problem):
        return prompt
    completion = _text_field(obj, "completion", "completion", name, line, allow_empty=True)
    if isinstance(completion, Problem):
        return completion
    return Example(line=line, messages=(Message("user", prompt),), target=completion)


def _from_conversational_pc(obj: dict[str, Any], name: str, line: int) -> Example | Problem:
    """TRL's conversational prompt/completion: both fields are lists of chat messages."""
    prompt = _turns(obj["prompt"], "prompt", _OPENAI, name, line, target_last=False)
    if isinstance(prompt, Problem):
        return prompt
    if not any(t.role == "user" for t in prompt):
        return Problem("no user turn in the prompt", file=name, line=line, field="prompt")
    if "completion" not in obj:
        return Problem("missing", file=name, line=line, field="completion")
    if not isinstance(obj["completion"], list):
        return Problem(
            f"wrong type: the prompt is a list of messages, so the completion must be one too, got "
            f"{type_name(obj['completion'])}",
            file=name,
            line=line,
            field="completion",
        )
    completion = _turns(obj["completion"], "completion", _OPENAI, name, line, target_last=True)
    if isinstance(completion, Problem):
        return completion
    if len(completion) != 1:
        return Problem(
            f"expected one assistant turn (the target) besides tool turns, got {len(completion)} text turns",
            file=name,
            line=line,
            field="completion",
        )
    return Example(line=line, messages=tuple(prompt), target=completion[0].content)


def from_alpaca(obj: dict[str, Any], name: str, line: int) -> Example | Problem:
    instruction = _text_field(obj, "instruction", "instruction", name, line)
    if isinstance(instruction, Problem):
        return instruction
    extra = _text_field(obj, "input", "input", name, line, allow_empty=True, required=False)
    if isinstance(extra, Problem):
        return extra
    output = _text_field(obj, "output", "output", name, line, allow_empty=True)
    if isinstance(output, Problem):
        return output
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return Example(line=line, messages=(Message("user", user),), target=output)
