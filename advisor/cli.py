"""The `tunegate` command line. `main(argv) -> int` so tests call it in-process.

Only argparse and the standard library are imported at module level: torch, transformers and rich are
imported inside the commands that need them, so `tunegate --help` answers instantly.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import errno
import io
import os
import sqlite3
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

from advisor import progress
from advisor.errors import ConfigError, DeprecatedSetting, ExitCode, TunegateError
from advisor.files import os_error_message, os_error_reason
from advisor.textsafe import json_for_terminal, term_safe
from advisor.types import Verdict
from advisor.version import __version__

if TYPE_CHECKING:
    from advisor.document import Report

EXIT_CODES_HELP = """exit codes:
  0   verdict prompt (and success for train/verify/report/rules/demo)
  10  verdict few_shot        11  verdict fine_tune
  12  verdict collect_data    13  verdict inconclusive
  2   usage or configuration error      3  bad input data (file, line and field are named)
  4   invalid rules files               5  train refused: the run's verdict is not fine_tune
  6   model backend error               7  request/token budget would be exceeded
  8   a file or folder cannot be written or read (permission denied, disk full, read-only,
      --out is a file, a broken cache database): the path and the reason are named
  14  train: verification vetoed fine-tuning (the adapter did not beat the best prompting arm)
  70  internal error (a bug: please report it with the traceback)   130  interrupted
  141 stdout or stderr was closed by its reader (`tunegate ... | head -1`): nothing more is printed
  with --fail-on V1,V2 (advise, run): 0 unless the verdict is listed, then its code above
"""


ADVISE_FLAGS = (
    "data",
    "fmt",
    "input_col",
    "output_col",
    "dataset_split",
    "task",
    "latency_budget_ms",
    "domain",
    "needs_consistent_style",
    "pilot",
    "finetune_model",
    "task_description",
    "system_prompt_file",
    "out",
    "seed",
    "eval_size",
    "dev_size",
    "backend",
    "model",
    "base_url",
    "api_key_env",
    "tokenizer",
    "concurrency",
    "k_ladder",
    "demo_selection",
    "max_requests",
    "max_total_tokens",
    "timeout",
    "prices",
    "rules_dirs",
)
"""The flags that set an AdviseConfig field of the same name (their help is the field's description)."""


COMMANDS = ("advise", "train", "verify", "run", "report", "rules", "demo")
WITH_SETTINGS = ("advise", "train", "run")
"""Commands whose flags and --help come from the config models (pydantic): built only when asked for,
so `tunegate --help`, `rules` and `report` start without building the models."""


def _settings_help(advise: bool, train: bool) -> str:
    from advisor.config import AdviseConfig, settings_help
    from advisor.finetune.config import TrainConfig

    parts = []
    if advise:
        parts.append(
            settings_help(
                AdviseConfig,
                "settings (--set KEY=VALUE, or KEY = VALUE in the config file's [advise] table):",
            )
        )
    if train:
        parts.append(
            settings_help(
                TrainConfig,
                "training settings (--train-set KEY=VALUE, or KEY = VALUE in the config file's [train] "
                "table):",
            )
        )
    return "\n\n".join(parts)


def _help(name: str) -> str:
    from advisor.config import AdviseConfig, describe

    return describe(AdviseConfig, name).replace("%", "%%")  # argparse %-formats help


def _add_advise_args(p: argparse.ArgumentParser) -> None:
    """advise's (and run's) flags, grouped as --help lists them. A flag whose short name differs from
    its setting also answers to the setting's own name (`--k` and `--k-ladder` set `k_ladder`), so
    one name works everywhere: the flag, --set, the config file and the Python API."""
    g = p.add_argument_group("data")
    g.add_argument("data", help=_help("data"))
    g.add_argument("--format", "--fmt", dest="fmt", help=_help("fmt"))
    g.add_argument("--input-col", help=_help("input_col"))
    g.add_argument("--output-col", help=_help("output_col"))
    g.add_argument("--split", "--dataset-split", dest="dataset_split", help=_help("dataset_split"))
    g.add_argument("--task", choices=("classify", "generate"), help=_help("task"))
    g.add_argument("--seed", type=int, help=_help("seed"))
    g.add_argument("--eval-size", type=int, help=_help("eval_size"))
    g.add_argument("--dev-size", type=int, help=_help("dev_size"))

    g = p.add_argument_group("the requirement (what the verdict is held against)")
    g.add_argument(
        "--target",
        metavar="METRIC=VALUE",
        help="quality target, e.g. accuracy=0.85 or chrf=0.6 (settings target_metric and quality_target)",
    )
    g.add_argument(
        "--volume", metavar="N/day", help="expected request volume, e.g. 20000/day, 500/hour (volume_per_day)"
    )
    g.add_argument("--latency-budget-ms", type=float, help=_help("latency_budget_ms"))
    g.add_argument("--prices", metavar="FILE", help=_help("prices"))
    g.add_argument("--domain", help=_help("domain"))
    g.add_argument(
        "--needs-consistent-style",
        action="store_true",
        default=None,
        help=_help("needs_consistent_style"),
    )

    g = p.add_argument_group("model: A, the model prompted, and B, the model fine-tuned")
    which = g.add_mutually_exclusive_group()  # `--no-model --backend openai` would call the server
    which.add_argument("--backend", choices=("hf", "openai", "none"), help=_help("backend"))
    which.add_argument(
        "--no-model",
        action="store_const",
        const="none",
        dest="backend",
        help="data-only advice: audit and data rules, no model calls",
    )
    g.add_argument("--model", help=_help("model"))
    g.add_argument("--base-url", help=_help("base_url"))
    g.add_argument("--api-key-env", help=_help("api_key_env"))
    g.add_argument("--tokenizer", metavar="ID|DIR", help=_help("tokenizer"))
    g.add_argument("--finetune-model", metavar="ID|DIR|GGUF", help=_help("finetune_model"))
    g.add_argument(
        "--no-pilot",
        action="store_const",
        const=False,
        dest="pilot",
        help="train no pilot fine-tune: the fine-tuning side is then not measured (proxies only)",
    )

    g = p.add_argument_group("prompting")
    g.add_argument(
        "--description", "--task-description", dest="task_description", help=_help("task_description")
    )
    g.add_argument(
        "--system-prompt",
        "--system-prompt-file",
        dest="system_prompt_file",
        metavar="FILE",
        help=_help("system_prompt_file"),
    )
    g.add_argument("--k", "--k-ladder", dest="k_ladder", metavar="1,2,4,8", help=_help("k_ladder"))
    g.add_argument(
        "--demos",
        "--demo-selection",
        dest="demo_selection",
        choices=("stratified", "nearest"),
        help=_help("demo_selection"),
    )

    g = p.add_argument_group("budget (a run stops with exit 7 before it would pass one)")
    g.add_argument("--max-requests", type=int, metavar="N", help=_help("max_requests"))
    g.add_argument("--max-total-tokens", type=int, metavar="N", help=_help("max_total_tokens"))
    g.add_argument(
        "--max-tokens",
        type=int,
        dest="max_total_tokens",
        action=_Renamed,
        new="--max-total-tokens",
        help=argparse.SUPPRESS,
    )
    g.add_argument("--concurrency", type=int, metavar="N", help=_help("concurrency"))
    g.add_argument("--timeout", type=float, metavar="SECONDS", help=_help("timeout"))
    g.add_argument(
        "--dry-run",
        action="store_true",
        help="print the model requests, tokens, estimated cost and time of the run, make no model call, "
        "write nothing, exit 0",
    )

    g = p.add_argument_group("rules and settings")
    g.add_argument(
        "--rules", "--rules-dirs", dest="rules_dirs", action="append", metavar="DIR", help=_help("rules_dirs")
    )
    g.add_argument(
        "--threshold", action="append", default=[], metavar="NAME=VALUE", help="override a rule threshold"
    )
    g.add_argument("--config", metavar="FILE", help="TOML config file ([advise] and [train] tables)")
    g.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any setting listed below",
    )

    g = p.add_argument_group("output and gating")
    g.add_argument("--out", help=_help("out"))
    g.add_argument("--json", action="store_true", help="print decision.json to stdout instead of the summary")
    g.add_argument(
        "--fail-on",
        type=_verdict_list,
        metavar="VERDICT[,VERDICT...]",
        help="CI gating: exit 0 unless the verdict is one of these (then its own code); "
        "default: every verdict exits with its own code",
    )


def _verdict_list(text: str) -> frozenset[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    known = [v.value for v in Verdict if v is not Verdict.PROMPT]
    if "prompt" in names:
        raise argparse.ArgumentTypeError("'prompt' exits 0 in any case; list only " + ", ".join(known))
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        shown = ", ".join(f"'{name}'" for name in unknown) or "nothing"
        raise argparse.ArgumentTypeError(f"unknown verdict {shown}; expected some of {', '.join(known)}")
    return frozenset(names)


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--force", action="store_true", help="train even if the verdict is not fine_tune (recorded)"
    )
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument(
        "--train-set",
        dest="train_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a training setting listed below",
    )
    p.add_argument(
        "--report-to",
        choices=("mlflow", "tensorboard", "wandb"),
        help="also send the training metrics, verdict and scores to this experiment tracker when the run "
        "ends (its library must be installed; default: none)",
    )


class _Renamed(argparse.Action):
    """A flag's old name: still read, for one release, with a one-line warning naming the new one."""

    def __init__(self, *args: Any, new: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.new = new

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        warnings.warn(
            f"{option_string} is now {self.new} (the old name goes in the next release)",
            DeprecatedSetting,
            stacklevel=2,
        )
        setattr(namespace, self.dest, values)


class _Parser(argparse.ArgumentParser):
    """argparse echoes bad values in its usage errors: show their control characters escaped."""

    def _print_message(self, message: str, file: Any = None) -> None:
        super()._print_message(term_safe(message) if message else message, file)

    def error(self, message: str) -> NoReturn:
        """A usage error is one `tunegate: error:` line, like every other error, and exit 2."""
        where = self.prog.removeprefix("tunegate").strip()
        self.exit(
            2, f"tunegate: error: {where + ': ' if where else ''}{message} (see `{self.prog} --help`)\n"
        )


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `command`, only that command's flags are built (None: every command's)."""
    parser = _Parser(
        prog="tunegate",
        description="Should we fine-tune a model for this task, or is prompting enough? Measured evidence, "
        "a verdict with the rule behind each reason, and gated LoRA training.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tunegate {__version__}")
    _add_output_args(parser, default=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def settings_parser(name: str, help: str, advise: bool, train: bool) -> argparse.ArgumentParser | None:
        built = command is None or command == name
        epilog = _settings_help(advise, train) if built else None
        p = sub.add_parser(
            name, help=help, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        return p if built else None

    p = settings_parser("advise", "audit the data, benchmark prompting, and give a verdict", True, False)
    if p is not None:
        _add_advise_args(p)

    p = settings_parser(
        "train", "train a LoRA adapter for an advise run whose verdict is fine_tune", False, True
    )
    if p is not None:
        p.add_argument("run_dir", help="the advise run folder")
        p.add_argument("--config", metavar="FILE", help="TOML config file ([train] table)")
        _add_train_args(p)
        p.add_argument("--json", action="store_true", help="print the updated decision.json to stdout")

    p = sub.add_parser(
        "verify",
        help="score a fine-tuned model (the run's adapter, another adapter, a local or served model) "
        "against the run's best prompting arm, then decide again",
    )
    p.add_argument("run_dir", help="the advise run folder")
    p.add_argument(
        "--adapter", metavar="DIR", help="a peft adapter trained elsewhere, on the run's base model"
    )
    p.add_argument(
        "--backend",
        choices=("hf", "openai"),
        default="hf",
        help="hf: a local model (default: the run's own adapter); openai: a model behind a server",
    )
    p.add_argument(
        "--model",
        help="hf: a local model folder (the base of --adapter, else the model verified as it is); "
        "openai: the served model's name (default: the server's only model)",
    )
    p.add_argument("--base-url", help="OpenAI-compatible server URL (or env OPENAI_BASE_URL)")
    p.add_argument("--api-key-env", help="environment variable holding the API key (default OPENAI_API_KEY)")
    p.add_argument(
        "--tokenizer",
        metavar="ID|DIR",
        help="openai: the served model's tokenizer (a Hub id or a local folder), for exact prompt-logprob "
        "scoring",
    )
    p.add_argument(
        "--concurrency", type=int, metavar="N", help="openai: requests in flight at once (default 4)"
    )
    p.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="openai: limit for each server request (default 60)"
    )
    p.add_argument(
        "--prompts",
        default="finetune",
        metavar="finetune|best|ARM",
        help="finetune (default): prompted as tunegate trains adapters; best, or an arm's name: that "
        "arm's recorded prompts, demonstrations and label-bias correction",
    )
    p.add_argument(
        "--latency-samples", type=int, default=10, metavar="N", help="requests timed per model (0: none)"
    )
    p.add_argument("--json", action="store_true", help="print the updated decision.json to stdout")

    p = settings_parser(
        "run", "advise, then (if the verdict is fine_tune) train, verify and report", True, True
    )
    if p is not None:
        _add_advise_args(p)
        _add_train_args(p)

    p = sub.add_parser("report", help="render a run folder's report again")
    p.add_argument("run_dir")
    p.add_argument("--format", choices=("html", "md"), action="append", help="default: both")

    p = sub.add_parser("rules", help="list or validate rules")
    rsub = p.add_subparsers(dest="rules_command", metavar="SUBCOMMAND")
    rsub.required = True
    rl = rsub.add_parser("list", help="list the rules in force")
    rl.add_argument("--rules", dest="rules_dirs", action="append", metavar="DIR", help="extra rules folder")
    rv = rsub.add_parser("validate", help="validate rule files, reporting every problem in every file")
    rv.add_argument("dir", nargs="?", help="folder of *.toml rule files (default: the shipped rules)")

    p = sub.add_parser(
        "demo", help="the main job on bundled real data (Rotten Tomatoes) with the embedded model"
    )
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--no-train", action="store_true", help="advise only")
    for each in sub.choices.values():  # -q/-v also after the command (`tunegate advise -q ...`)
        _add_output_args(each, default=argparse.SUPPRESS)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The command argv names ("" for none, as in `tunegate --help`); None when it is not one we know."""
    first = next((a for a in argv if not a.startswith("-")), "")
    return first if first in COMMANDS or first == "" else None


def _add_output_args(p: argparse.ArgumentParser, default: Any) -> None:
    p.add_argument("-q", "--quiet", action="store_true", default=default, help="print nothing but the result")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="keep the model libraries' own warnings, logs and progress bars (silenced by default)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    with warnings.catch_warnings():
        _show_deprecations()
        return _main(argv)


def _show_deprecations() -> None:
    """An old flag or setting name: one line on stderr (other warnings as before)."""
    shown = warnings.showwarning

    def show(
        message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        if issubclass(category, DeprecatedSetting):
            print(f"tunegate: warning: {term_safe(str(message), single_line=True)}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    warnings.simplefilter("always", DeprecatedSetting)


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_of(argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return int(exc.code or 0)
    try:
        with _output(args):
            return _dispatch(args)
    except TunegateError as exc:
        for problem in exc.problems:
            _error(str(problem))
        if len(exc.problems) > 1:
            print(f"tunegate: {len(exc.problems)} problems", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("tunegate: interrupted; finished model calls are cached, re-run to resume", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    # The environment and the parsers' own limits, where no edge check caught them first. Anything
    # else is a bug and reaches `entry`, which prints the traceback and exits 70.
    except OSError as exc:
        _error(os_error_message(exc))
        return int(ExitCode.FILES)
    except sqlite3.Error as exc:
        _error(f"the response cache database cannot be used: {exc}")
        return int(ExitCode.FILES)
    except UnicodeError as exc:
        _error(f"text that is not valid Unicode reached an output: {exc}")
        return int(ExitCode.BAD_INPUT)
    except RecursionError:
        _error("an input is nested too deeply to process")
        return int(ExitCode.BAD_INPUT)
    except ValueError as exc:
        if "integer string conversion" not in str(exc):
            raise
        _error(f"an input holds a number too large to read ({str(exc).split(':')[0]})")
        return int(ExitCode.BAD_INPUT)


@contextmanager
def _output(args: argparse.Namespace) -> Iterator[None]:
    """Progress on stderr for this command (bars on a terminal, none with -q; no bars with --json),
    and the model libraries' own bars, warnings and FutureWarnings silenced unless -v."""
    if not args.verbose:
        import os
        import warnings

        # Read by huggingface_hub and transformers when they are first imported (later, lazily).
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        warnings.filterwarnings("ignore", category=FutureWarning)
    if args.command in ("rules", "report") or progress.installed():  # instant, or `demo` calling main
        yield
        return
    from advisor.progress_bars import shown

    with shown(quiet=args.quiet, bars=not getattr(args, "json", False)):
        yield


MAX_ERROR_CHARS = 2000
"""An error line quoting data (a role, a column name) is cut here: one line, not megabytes."""


def _error(message: str) -> None:
    """One line on stderr, with control characters from file names and data made visible."""
    line = term_safe(message, single_line=True)
    if len(line) > MAX_ERROR_CHARS:
        line = f"{line[:MAX_ERROR_CHARS]}... ({len(line):,} characters)"
    print(f"tunegate: error: {line}", file=sys.stderr)


def entry() -> None:
    """The `tunegate` command: `main` between guarded standard streams (below)."""
    guard_streams()
    try:
        code = main()
    except StreamError as exc:
        code = exc.exit_code()
    except Exception:  # a bug, not a user error: show the traceback and a distinct exit code
        with _quiet_if_unwritable():
            traceback.print_exc()
        code = int(ExitCode.INTERNAL)
    try:  # what is still buffered fails here, not at interpreter shutdown (which would exit 120)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    except StreamError as exc:
        code = exc.exit_code()
    sys.exit(code)


# --------------------------------------------------------------------------- the standard streams
#
# The environment decides what stdout and stderr are. `guard_streams` makes every case end with a
# documented code: a closed stream (`>&-`, `2>&-`) becomes /dev/null (its file descriptor filled, so
# no file the run opens can take its number and receive output), text the stream's encoding cannot
# hold is written with replacement characters (`PYTHONIOENCODING=ascii`), a reader that went away
# (`| head -1`) ends the command quietly with 141, and any other failed write (a full device) is
# exit 8 naming the stream.


class StreamError(Exception):
    """A write to stdout or stderr failed. Deliberately not an OSError: no handler meant for files
    (nor rich, which turns a BrokenPipeError into SystemExit(1)) mistakes it for one of its own."""

    def __init__(self, stream: str, error: OSError) -> None:
        super().__init__(f"cannot write to {stream}: {os_error_reason(error)}")
        self.stream = stream
        self.error = error

    def exit_code(self) -> int:
        """Silence the stream (so nothing fails at shutdown); a broken pipe is quiet, else one line."""
        _silence(self.stream)
        if self.error.errno == errno.EPIPE:
            return int(ExitCode.BROKEN_PIPE)
        if self.stream == "stdout":
            with _quiet_if_unwritable():
                _error(str(self))
        return int(ExitCode.FILES)


class _GuardedStream(io.TextIOWrapper):
    """stdout or stderr: unencodable text replaced, a failed write raised as `StreamError`."""

    def __init__(self, fd: int, label: str, encoding: str, line_buffering: bool) -> None:
        super().__init__(
            open(fd, "wb", closefd=False),  # noqa: SIM115 (the stream lives as long as the process)
            encoding=encoding,
            errors="replace",
            line_buffering=line_buffering,
        )
        self.label = label

    def write(self, text: str) -> int:
        try:
            return super().write(text)
        except OSError as exc:
            raise StreamError(self.label, exc) from None

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as exc:
            raise StreamError(self.label, exc) from None


def guard_streams() -> None:
    """Install the guarded stdout and stderr (see above); called once, by `entry`."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:  # closed by the caller: /dev/null takes the number
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    for fd, label in ((1, "stdout"), (2, "stderr")):
        old = getattr(sys, label)
        if old is not None:
            with contextlib.suppress(OSError, ValueError):
                old.flush()
        encoding = getattr(old, "encoding", None) or "utf-8"
        line_buffering = bool(getattr(old, "line_buffering", True))
        setattr(sys, label, _GuardedStream(fd, label, encoding, line_buffering))


def _silence(stream: str) -> None:
    """Point a failed stream's descriptor at /dev/null: what is still buffered is discarded there."""
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1 if stream == "stdout" else 2)
    finally:
        os.close(null)


@contextmanager
def _quiet_if_unwritable() -> Iterator[None]:
    """For the last words on stderr: when stderr itself cannot be written, say nothing."""
    try:
        yield
    except StreamError as exc:
        _silence(exc.stream)


def _unicode_stream(stream: Any) -> bool:
    """Whether `stream` encodes every character (UTF-8, -16, -32); else JSON is written as ASCII."""
    try:
        return codecs.lookup(getattr(stream, "encoding", None) or "utf-8").name.startswith("utf")
    except LookupError:
        return False


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "rules":
        return _cmd_rules(args)
    if args.command == "report":
        return _cmd_report(args)
    if args.command == "advise":
        return _cmd_advise(args)
    if args.command == "train":
        return _cmd_train(args)
    if args.command == "verify":
        return _cmd_verify(args)
    if args.command == "run":
        return _cmd_run(args)
    if args.command == "demo":
        return _cmd_demo(args)
    raise AssertionError(f"unhandled command {args.command}")


def _advise_config(args: argparse.Namespace) -> Any:
    from advisor import config as cfg

    file_layer = cfg.read_config_file(args.config) if args.config else {}
    flags: dict[str, Any] = {key: getattr(args, key, None) for key in ADVISE_FLAGS}
    if args.target:
        flags["target_metric"], flags["quality_target"] = cfg.parse_target(args.target)
    if args.volume:
        from advisor.measure.cost import parse_volume

        flags["volume_per_day"] = parse_volume(args.volume)
    thresholds = cfg.parse_overrides(args.threshold, "--threshold")
    return cfg.resolve(
        (args.config, file_layer),
        (None, flags),
        ("--threshold", {f"thresholds.{k}": v for k, v in thresholds.items()}),
        ("--set", cfg.parse_overrides(args.overrides)),
    )


def _emit(report: Report, as_json: bool) -> None:
    """The report on stdout: the decision.json document with --json, else the console summary."""
    if as_json:
        _print_json(report.as_dict())
    else:
        from advisor.report.console import print_summary

        print_summary(report)


def _print_json(doc: Any) -> None:
    """A JSON document on stdout. JSON escapes C0 controls itself; C1 controls and bidi overrides are
    escaped here, so the text stays valid JSON and a terminal showing it runs no escape sequence. On a
    stdout that cannot encode every character (`PYTHONIOENCODING=ascii`) the JSON is written as ASCII,
    with \\u escapes, so it still reads back exactly."""
    import json

    ascii_only = not _unicode_stream(sys.stdout)
    sys.stdout.write(json_for_terminal(json.dumps(doc, indent=2, ensure_ascii=ascii_only)) + "\n")


def verdict_exit_code(verdict: str) -> int:
    return int(
        {
            "prompt": ExitCode.PROMPT,
            "few_shot": ExitCode.FEW_SHOT,
            "fine_tune": ExitCode.FINE_TUNE,
            "collect_data": ExitCode.COLLECT_DATA,
            "inconclusive": ExitCode.INCONCLUSIVE,
        }[verdict]
    )


def _cmd_advise(args: argparse.Namespace) -> int:
    from advisor.recipe import advise

    config = _advise_config(args)
    if args.dry_run:
        return _dry_run(args, config)
    with _new_run(args, config):
        report = advise(config)
    _emit(report, args.json)
    return _gated_exit_code(report.decision.verdict, args.fail_on)


def _new_run(args: argparse.Namespace, config: Any) -> Any:
    """The lock of a new run's folder (--out): claimed only if it is missing, empty or a tunegate run, and
    holds none of the run's inputs under a name the run writes (advisor/rundir.py)."""
    from advisor.recipe import input_paths
    from advisor.rundir import RunDir

    return RunDir(config.out).lock(create=True, inputs=[args.config, *input_paths(config)])


def _dry_run(args: argparse.Namespace, config: Any) -> int:
    """What the run would send to the model (and for `run`, what training would do), before any call."""
    from advisor.plan import plan_run, render

    plan = plan_run(config)
    training = _training_plan(args, plan) if args.command == "run" else None
    if args.json:
        _print_json({"dry_run": plan.to_dict(), **({"training": training} if training else {})})
    else:
        print(term_safe(render(plan)))
        if training:
            print(term_safe(training["summary"]))
    return int(ExitCode.OK)


def _training_plan(args: argparse.Namespace, plan: Any) -> dict[str, Any]:
    """`run`'s second half, only on a fine_tune verdict (or --force): local training and verification."""
    from advisor.finetune.config import TrainConfig
    from advisor.plan import training_estimate

    cfg = TrainConfig.from_toml(args.config, list(args.train_overrides))
    steps = f"{cfg.max_steps} steps" if cfg.max_steps else f"{cfg.epochs} epochs of {plan.n_train:,} examples"
    verify = plan.n_eval * max(1, len(plan.labels))
    seconds = training_estimate(plan, cfg)
    timed = "training time not estimated: no pilot to take the tokens per example from"
    if seconds is not None:
        train_s, verify_s = seconds["train_seconds"] or 0.0, seconds["verify_seconds"]
        timed = (
            f"about {train_s / 60:.1f} min of training at an assumed {seconds['tokens_per_s']:.0f} "
            "trained tokens a second (two CPU cores; a GPU is much faster), and "
            + (f"{verify_s:.0f} s of scoring" if verify_s is not None else "scoring time not estimated")
        )
    summary = (
        f"Then, only on a fine_tune verdict (or --force): LoRA training for {steps} on this machine, "
        f"and verification: {verify:,} requests to the fine-tuned local model on the {plan.n_eval:,} eval "
        f"items, plus latency samples (no API cost; {timed})."
    )
    return {
        "gated_on": "fine_tune",
        "training": steps,
        "verification_requests": verify,
        "estimate": seconds,
        "summary": summary,
    }


def _gated_exit_code(verdict: str, fail_on: frozenset[str] | None) -> int:
    """The verdict's own code, or with --fail-on: 0 unless the verdict is listed."""
    if fail_on is not None and verdict not in fail_on:
        return int(ExitCode.OK)
    return verdict_exit_code(verdict)


def _train(args: argparse.Namespace, run_dir: str) -> Report | None:
    """gate → train → verify → report, with the training flags shared by `train` and `run`.

    None on the ranks other than 0 of a torchrun job: they trained their shard, rank 0 reports."""
    from pipeline import tracking
    from pipeline.run import train_and_verify

    if args.report_to:
        tracking.check_available(args.report_to)  # before the work, not after it
    report = train_and_verify(
        run_dir,
        force=args.force,
        resume=args.resume,
        config_file=args.config,
        overrides=args.train_overrides,
        report_to=args.report_to,  # the tracker follows the training as it runs (pipeline/tracking.py)
    )
    return report


def _cmd_train(args: argparse.Namespace) -> int:
    report = _train(args, args.run_dir)
    if report is None:  # a rank other than 0 under torchrun: rank 0 reports
        return int(ExitCode.OK)
    _emit(report, args.json)
    verification = report.verification
    if verification is not None and not verification.finetune_verified:
        progress.note(
            f"tunegate: verification vetoed fine-tuning: the verdict is now {report.decision.verdict}"
        )
        return int(ExitCode.VETOED)
    return int(ExitCode.OK)


def _cmd_verify(args: argparse.Namespace) -> int:
    from functools import partial

    from advisor.errors import ConfigError
    from advisor.rundir import RunDir
    from pipeline.run import verify_and_redecide
    from pipeline.verify import adapter_candidate, model_candidate, served_candidate

    if args.latency_samples < 0:
        raise ConfigError(f"must be 0 or more, got {args.latency_samples}", field="--latency-samples")
    run = RunDir(args.run_dir)
    candidate: Any = None  # the run's own adapter
    if args.backend == "openai":
        if args.adapter:
            raise ConfigError(
                "--adapter is for a local model; a served adapter is named by --model", field="--adapter"
            )
        served = dict(api_key_env=args.api_key_env, tokenizer=args.tokenizer, timeout=args.timeout or 60.0)
        served["concurrency"] = 4 if args.concurrency is None else args.concurrency
        candidate = partial(served_candidate, args.base_url, args.model, **served)
    elif args.base_url or args.api_key_env or args.tokenizer or args.timeout or args.concurrency is not None:
        raise ConfigError(
            "--base-url, --api-key-env, --tokenizer, --timeout, --concurrency need --backend openai",
            field="--backend",
        )
    elif args.adapter:

        def candidate() -> Any:
            return adapter_candidate(args.model or _run_base_model(run), args.adapter)

    elif args.model:
        candidate = partial(model_candidate, args.model)
    with run.lock():
        report = verify_and_redecide(
            run.path, candidate=candidate, prompts_from=args.prompts, latency_samples=args.latency_samples
        )
    _emit(report, args.json)
    return int(ExitCode.OK)


def _run_base_model(run: Any) -> str:
    """The local model an adapter of this run sits on: the one it trained on, else the one advise ran."""
    from advisor.backends.model import resolve_model_dir
    from advisor.errors import ConfigError

    report = run.read_report()
    if report.training is not None:
        return str(report.training.base_model)
    config = run.read_config()
    if config.get("backend", "hf") != "hf":
        raise ConfigError(
            "advise ran against a server: name the adapter's local base model folder with --model",
            field="--model",
        )
    return str(resolve_model_dir(config.get("model")))


def _cmd_run(args: argparse.Namespace) -> int:
    from advisor.finetune.distributed import launched_world

    config = _advise_config(args)
    _check_training(args, config)  # before any model call: a served model cannot be fine-tuned here
    if args.dry_run:
        return _dry_run(args, config)
    if launched_world() > 1:
        return _run_launched(args, config)
    with _new_run(args, config):  # one lock through advise and train
        return _advise_then_train(args, config)


def _check_training(args: argparse.Namespace, config: Any) -> None:
    """`run` ends by fine-tuning a local model: its training settings must read, and when the arms prompt
    a served model that local model must be named (--finetune-model, or model= in the training settings),
    before advise spends a request."""
    from advisor.finetune.config import TrainConfig
    from pipeline.run import NO_CANDIDATE

    # The training settings are read now, so a bad one (--train-set max_steps=abc) fails before advise runs.
    training = TrainConfig.from_toml(args.config, list(args.train_overrides))
    if config.backend != "openai" or config.finetune_model is not None:
        return
    if training.model is None:
        raise ConfigError(NO_CANDIDATE, field="--finetune-model")


def _run_launched(args: argparse.Namespace, config: Any) -> int:
    """`tunegate run` under torchrun or `accelerate launch`: rank 0 advises while the other ranks wait,
    then every rank trains if the gate opens; rank 0 alone writes and prints."""
    from advisor.finetune.distributed import init_distributed, rank0_channel, shutdown

    d = init_distributed()
    share = rank0_channel(d)
    if d.rank != 0:
        try:
            if share(None):  # rank 0's gate opened
                _train(args, config.out)
            return int(ExitCode.OK)
        finally:
            shutdown()
    told: list[bool] = []

    def tell(go: bool) -> None:
        told.append(share(go))

    try:
        with _new_run(args, config):
            return _advise_then_train(args, config, tell_ranks=tell)
    except BaseException:
        if not told:  # advise failed: release the waiting ranks, then fail with its error
            tell(False)
        raise
    finally:
        shutdown()


def _advise_then_train(args: argparse.Namespace, config: Any, tell_ranks: Any = None) -> int:
    from advisor.recipe import advise
    from pipeline import tracking

    if args.report_to:
        tracking.check_available(args.report_to)
    report = advise(config)
    verdict = report.decision.verdict
    go = verdict == "fine_tune" or args.force
    if tell_ranks is not None:
        tell_ranks(go)
    if not go:
        if args.report_to:
            tracking.report_to(args.report_to, report, config.out)
        _emit(report, args.json)
        progress.note(f"tunegate: verdict is {verdict}: not training (the gate opens only on fine_tune)")
        return _gated_exit_code(verdict, args.fail_on)
    trained = _train(args, config.out)
    if trained is None:  # a rank other than 0 under torchrun: rank 0 reports
        return int(ExitCode.OK)
    _emit(trained, args.json)
    # The verdict after verification: a fine-tuned model that did not beat prompting vetoes fine_tune.
    return _gated_exit_code(trained.decision.verdict, args.fail_on)


def _cmd_report(args: argparse.Namespace) -> int:
    from advisor.report.render import rerender

    for path in rerender(args.run_dir, formats=tuple(args.format or ("html", "md"))):
        print(term_safe(path, single_line=True))
    return int(ExitCode.OK)


def _cmd_rules(args: argparse.Namespace) -> int:
    from pathlib import Path

    from advisor.decide import rules

    if args.rules_command == "validate":
        if args.dir:
            ruleset = rules.load_rules([Path(args.dir)], include_shipped=False)
        else:
            ruleset = rules.load_rules()
        print(f"ok: {len(ruleset.rules)} rules, {len(ruleset.thresholds)} thresholds")
        return int(ExitCode.OK)
    ruleset = rules.load_rules([Path(d) for d in (args.rules_dirs or [])])
    rules.print_rules(ruleset)
    return int(ExitCode.OK)


def _cmd_demo(args: argparse.Namespace) -> int:
    from advisor.demo import demo_argv, write_demo_data

    data = write_demo_data(args.out)
    argv = demo_argv(data, args.out, train=not args.no_train)
    progress.note(term_safe("tunegate " + " ".join(argv), single_line=True))
    return _demo_exit(main(argv))


def _demo_exit(code: int) -> int:
    # The demo is a showcase: any verdict is a successful demo; errors stay errors.
    return 0 if code in (0, 10, 11, 12, 13) else code


if __name__ == "__main__":
    entry()
