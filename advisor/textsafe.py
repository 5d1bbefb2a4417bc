"""Text that leaves the process: Markdown escaping and terminal-safe strings.

Anything that came from outside (data labels and inputs, file names, rule text, flags such as
``--domain``) is untrusted. Before it goes into report.md it passes through `md_escape` (inline text)
or `md_code` (a code span); before it goes to a terminal it passes through `term_safe`.

- `md_escape` backslash-escapes every Markdown punctuation character (so ``[x](javascript:..)``,
  ``![](http://..)``, ``*``, ``|`` and ``#`` are shown, not interpreted) and writes ``<``, ``>`` and
  ``&`` as character references, so no raw HTML from the data reaches a Markdown renderer
  (GitHub, GitLab, MkDocs). Line breaks become spaces: an untrusted string never starts a new block.
- `md_code` puts text in a code span whose backtick fence is longer than any backtick run inside,
  so a backtick in a file name cannot break out of it.
- `md_link` makes a link only for an ``http(s)`` address (from rule files), with the address escaped;
  anything else is shown as text.
- `term_safe` makes control characters visible (``\\x1b``, ``\\r``, ``\\x9b``, ...): no escape
  sequence, OSC-8 hyperlink, carriage return or bidirectional override from the data reaches the
  terminal. Newlines and tabs are kept unless ``single_line``.
"""

from __future__ import annotations

import re
from typing import Any

# C0 controls, DEL and C1 controls, plus the Unicode bidirectional overrides/isolates ("Trojan
# Source") and the line/paragraph separators, which some terminals and renderers treat as breaks.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_CONTROL_ALL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
# Lone UTF-16 surrogates cannot be encoded as UTF-8: shown as their code point.
_SURROGATE = re.compile("[\ud800-\udfff]")
# Characters that make Markdown syntax anywhere in a line: code spans, emphasis, links and images,
# tables, strikethrough, headings inside list items, and the backslash itself.
_MD_INLINE = re.compile(r"([\\`*\[\]|~#]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")
# `<` that could open an HTML tag, comment or autolink, and `&` that could start a character reference.
_MD_ANGLE = re.compile(r"([<&])(?=[A-Za-z/!?#])")
# Block markers at the start of the text: list items, block quotes, thematic breaks, setext underlines.
_MD_LEADING = re.compile(r"^(\s*)(\d*)([-+>=.)])")
# Bare addresses GitHub/GitLab would turn into live links: shown as code instead.
_BARE_URL = re.compile(r"(?i)\b(?:[a-z][a-z0-9+.\-]*://|www\.)\S+|\b[\w.+-]+@[\w-]+\.[\w.-]+")


def _visible(m: re.Match[str]) -> str:
    c = m.group(0)
    if c == "\t":
        return "\\t"
    if c == "\n":
        return "\\n"
    if c == "\r":
        return "\\r"
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def term_safe(text: object, *, single_line: bool = False) -> str:
    """`text` with control characters (and lone surrogates) made visible, for a terminal.

    Newlines and tabs are kept unless `single_line`, which makes them visible too (for one-line
    error messages).
    """
    s = str(text)
    s = (_CONTROL_ALL if single_line else _CONTROL).sub(_visible, s)
    return _SURROGATE.sub(_visible, s)


def md_escape(text: object) -> str:
    """Inline Markdown for an untrusted string: shown as written, never interpreted.

    Control characters are made visible and line breaks become spaces (an untrusted string never
    starts a new block); characters that make Markdown or HTML syntax are backslash-escaped; bare
    URLs and e-mail addresses become code spans, so no renderer turns them into live links. Safe
    inside table cells.
    """
    s = str(text).replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("\t", " ")
    s = term_safe(s, single_line=True)
    out = []
    last = 0
    for m in _BARE_URL.finditer(s):
        out.append(_md_plain(s[last : m.start()], first=last == 0))
        out.append(md_code(m.group(0)).replace("|", "\\|"))  # a pipe would still split a table cell
        last = m.end()
    out.append(_md_plain(s[last:], first=last == 0))
    return "".join(out)


def _md_plain(s: str, *, first: bool) -> str:
    s = _MD_ANGLE.sub(r"\\\1", _MD_INLINE.sub(r"\\\1", s))
    return _MD_LEADING.sub(_leading, s, count=1) if first else s


def _leading(m: re.Match[str]) -> str:
    space, digits, mark = m.groups()
    if digits and mark not in ".)":
        return m.group(0)
    if not digits and mark in ".)":
        return m.group(0)
    return f"{space}{digits}\\{mark}"


def md_code(text: object) -> str:
    """An inline code span holding `text` exactly (one line), whatever backticks it contains.

    Inside a code span nothing is interpreted (no HTML, no links), so only the fence needs care:
    it is one backtick longer than the longest run of backticks in the text, and padded with a space
    when the text starts or ends with a backtick (CommonMark strips one such space).
    """
    s = str(text).replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    s = term_safe(s, single_line=True)
    longest = max((len(run) for run in re.findall(r"`+", s)), default=0)
    fence = "`" * (longest + 1)
    if s.startswith("`") or s.endswith("`") or (s.startswith(" ") and s.endswith(" ") and s.strip()):
        s = f" {s} "
    if not s:
        s = " "
    return f"{fence}{s}{fence}"


def md_link(title: object, url: object) -> str:
    """A Markdown link when `url` is an http(s) address, else the escaped title and address as text."""
    u = str(url)
    if re.fullmatch(r"https?://[^\s<>]+", u) and term_safe(u, single_line=True) == u:
        # Percent-encode what could end the destination or open HTML; the rest of a URL is kept.
        safe = u.replace("\\", "%5C").replace("(", "%28").replace(")", "%29").replace('"', "%22")
        safe = safe.replace("'", "%27").replace("`", "%60")
        return f"[{md_escape(title)}](<{safe}>)"
    return f"{md_escape(title)} ({md_escape(u)})"


def surrogate_path(obj: Any) -> str | None:
    """The path (``messages[0].content``) of the first key or string in parsed JSON/TOML that holds a
    lone UTF-16 surrogate, or None. Such text cannot be written as UTF-8, so it is refused at load.
    Iterative, so any nesting depth the parser accepted is walked without recursion."""
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return where or "(value)"
        elif isinstance(value, dict):
            items = []
            for k, v in value.items():
                path = f"{where}.{k}" if where else str(k)
                if _SURROGATE.search(str(k)):
                    return _SURROGATE.sub("?", path)
                items.append((path, v))
            stack.extend(reversed(items))
        elif isinstance(value, list):
            stack.extend(reversed([(f"{where}[{i}]", v) for i, v in enumerate(value)]))
    return None


_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s?#@]*@")
_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.\-]*://[^\s]*")
# Path segments that name a secret: the segment after one of these is a credential.
_SECRET_NAMES = frozenset(
    [
        "key",
        "keys",
        "apikey",
        "api-key",
        "api_key",
        "token",
        "tokens",
        "access_token",
        "access-token",
        "auth",
        "secret",
        "secrets",
        "password",
        "passwd",
        "pass",
        "credential",
        "credentials",
        "bearer",
        "sig",
        "signature",
    ]
)
# A path segment that is itself a credential: a known key prefix (OpenAI, Anthropic, Hugging Face, GitHub,
# Slack, Google, Groq ...), or a long opaque mix of letters and digits.
_KEY_LIKE = re.compile(
    r"(?i)(?:sk|pk|rk)[-_].+|hf_.+|gh[pousr]_.+|github_pat_.+|xox[abpr]-.+|AIza.+|gsk_.+|key-.+|"
    r"(?=[^/]*\d)(?=[^/]*[a-z])[a-z0-9_\-.~+=%]{24,}"
)


def has_url_credentials(url: str) -> bool:
    """True when `url` carries a user name or password (``https://user:pass@host``)."""
    return bool(_URL_USERINFO.search(url))


def redact_url(text: str, secrets: tuple[str | None, ...] = ()) -> str:
    """`text` with the secrets of every URL in it replaced by ``***``: the user-info part
    (``user:pass@``), every query value (``?key=***``), the fragment, and path segments that hold a
    credential (the one after ``/key/``, ``/token/``, ...; one that looks like an API key, such as
    ``sk-...``); and any of `secrets` (the API key itself) wherever it appears."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _URL.sub(lambda m: _redact_one(m.group(0)), text)


def _redact_one(url: str) -> str:
    url = _URL_USERINFO.sub(r"\1***@", url)
    scheme, sep, rest = url.partition("://")
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    location, tail = rest[:cut], rest[cut:]
    host, slash, path = location.partition("/")
    segments = path.split("/") if slash else []
    for i, seg in enumerate(segments):
        before = segments[i - 1].lower() if i else ""
        if seg and seg != "***" and (before in _SECRET_NAMES or _KEY_LIKE.fullmatch(seg)):
            segments[i] = "***"
    if tail:
        query, hash_, _fragment = tail.lstrip("?").partition("#") if tail.startswith("?") else ("", "#", "")
        shown = []
        for part in query.split("&") if query else []:
            name, eq, _value = part.partition("=")
            shown.append(f"{name}=***" if eq else "***")
        tail = ("?" + "&".join(shown) if tail.startswith("?") else "") + ("#***" if hash_ else "")
    return scheme + sep + host + (slash + "/".join(segments) if slash else "") + tail


_PREVIEW = 16


def preview(text: object, limit: int = _PREVIEW) -> str:
    """At most `limit` characters of untrusted text (a header cell, a role name from a data file), on
    one line with control characters made visible, and how long it was when cut: enough to recognise
    it in an error message, too little to print a secret a data file turned out to hold (a symlink
    into ``~/.env`` or ``~/.netrc`` whose first line became "the header")."""
    s = str(text)
    if len(s) <= limit:
        return term_safe(s, single_line=True)
    return f"{term_safe(s[:limit], single_line=True)}... ({len(s):,} characters)"


def preview_list(items: list[str], limit: int = 8) -> str:
    """The first `limit` of `items`, each a `preview`, and how many more there are."""
    shown = ", ".join(preview(x) for x in items[:limit])
    return shown + (f" and {len(items) - limit:,} more" if len(items) > limit else "") if items else "(none)"


def shorten(value: object, limit: int = 60) -> str:
    """`repr(value)`, cut to about `limit` characters with the full length said (for error messages
    about values that may be thousands of characters long)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text):,} characters)"


_JSON_UNSAFE = re.compile("[\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff]")


def json_for_terminal(text: str) -> str:
    """JSON text (from `json.dumps(..., ensure_ascii=False)`) with the characters a terminal could act
    on written as ``\\uXXXX`` escapes: still the same JSON value, safe to print."""
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)
