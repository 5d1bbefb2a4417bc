"""The run folder: the only code that reads or writes one.

A run folder holds everything one `advise` (and later `train`) produced:

    decision.json        the typed report (advisor.document.Report)
    config.json          the resolved advise config
    split.json           train/dev/eval source lines, the data file's path and sha256
    prompts.json         the prompts advise sent: every arm's spec, demonstrations by line, calibration
    predictions/*.jsonl  per-item results of every scored arm
    report.md, plots/, report.html   renderings of decision.json
    train/               config.json, metrics.jsonl, checkpoints/, best/, adapter/ (+ README.md), merged/
    mlruns/, tensorboard/, wandb/   a tracker's local files (--report-to), written by its library
    .tunegate-run        the marker: written when tunegate creates the folder
    .lock                held by the process writing the folder, removed when it ends

What "only" means. Every file and folder under a run folder is named, read, written, swapped into place
and removed by a method here, with the policy below; the modules that compute them (the audit, the
evaluation, the renderers, the training loop, the pipeline's export) pass data in and get data back.
Binary formats owned by a library (peft's and transformers' `save_pretrained`, `torch.save`) are written
by that library into a temporary folder or file that `TrainDir` hands it, and swapped in here; the
training loop takes any output folder (a `TrainDir`), so it can be tested and run on its own.

One error policy: a missing, damaged or foreign file is a `DataError` (exit 3) naming the file and,
for decision.json, the field; a folder another process holds is a `ConfigError` (exit 2) at once,
never a wait. Paths recorded inside the folder (the adapter, say) are resolved relative to it and must
stay inside it, so a crafted folder cannot point a reader at other files.

Containment: a run never touches what is not its own.
- Every path read, written, swapped in or removed below the folder is checked (`_contained`) to lie
  inside it and neither to be nor to pass through a symbolic link: a link planted at `train/`,
  `predictions/`, `.lock` or any other name stops the command (DataError, exit 3, naming the link)
  before anything is followed. Removal (`rmtree`) touches only what `lstat` says is a real folder there.
  (The folder itself may be reached through a link: that is the user's choice of --out.)
- `--out` (`create`) must be missing, empty, or a tunegate run: one holding the marker `.tunegate-run`,
  or, from before the marker existed, a decision.json that validates. Anything else stops with exit 2
  before a byte is written, naming the folder and a file in the way; so does an input of the run (the
  data file, --config, --prices, ...) that sits inside the folder under a name the run writes.
- `lock(create=True)` makes the folder only for a run about to write it, and when the run fails before
  writing anything (a missing data file, a bad --model) it removes what it made: the marker, the folders
  it created. `.lock` is opened without following links or truncating, and is removed when the run ends
  (while still held; a process that locked the removed file sees it is gone and opens the new one).
- A read-only folder is a `FilesError` (exit 8), like every other write the environment refuses.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from advisor.document import SCHEMA_VERSION, Report
from advisor.errors import ConfigError, DataError, FilesError
from advisor.files import json_text, os_error_reason, write_text_atomic

M = TypeVar("M", bound=BaseModel)  # a file format validated by the stage that owns it

DECISION = "decision.json"
CONFIG = "config.json"
SPLIT = "split.json"
PROMPTS = "prompts.json"
PREDICTIONS = "predictions"
TRAIN = "train"
PILOT = "pilot"  # the pilot fine-tunes advise runs: pilot/n-<examples>/ (a TrainDir each), pilot/result.json
LOCK = ".lock"
MARKER = ".tunegate-run"
# train/: the training loop's outputs (advisor.finetune.loop writes them into the folder it is given)
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
BEST = "best"
ADAPTER = "adapter"
MERGED = "merged"
TRAIN_CONFIG = "config.json"
STATE_FILE = "state.pt"  # a checkpoint's file (checkpoints/step-NNNNNNN/state.pt)
MODEL_CARD = "README.md"
ADAPTER_CONFIG = "adapter_config.json"
SPLITS = ("train", "dev", "eval")
TRAIN_OUTPUTS = (CHECKPOINTS, BEST, ADAPTER, METRICS)
"""What a fresh (not resumed) training run replaces."""
TRACKER_DIRS = {"mlflow": "mlruns", "tensorboard": "tensorboard", "wandb": ""}
MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
PLOTS_DIR = "plots"  # the Markdown report's plots, as SVG files beside it
RENDERINGS = (MARKDOWN_FILE, HTML_FILE)
_OWN_FILES = {
    DECISION,
    CONFIG,
    SPLIT,
    PROMPTS,
    PREDICTIONS,
    TRAIN,
    PILOT,
    LOCK,
    MARKER,
    PLOTS_DIR,
    *RENDERINGS,
}
_RUN_NAMES = _OWN_FILES | {name for name in TRACKER_DIRS.values() if name} | {"wandb"}
"""Every name a run writes at the top of its folder: an input file there would be overwritten."""
MARKER_TEXT = (
    "This folder is a tunegate run folder (see decision.json); tunegate writes only into such folders.\n"
)
_HELD: set[Path] = set()  # folders this process holds: `run` = advise then train, one lock


class RunDir:
    """One run folder. Cheap to create; nothing is read until asked."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        # Absolute from the start: every path handed out (and compared with `inside`) is then the same
        # whatever the working directory, and a recorded path is made relative to the folder, not to it.
        self.path = Path(path).absolute()

    @classmethod
    def of(cls, folder: RunDir | str | os.PathLike[str]) -> RunDir:
        """`folder` as a RunDir (callers may hold either)."""
        return folder if isinstance(folder, RunDir) else cls(folder)

    def create(self, *, inputs: Iterable[str | os.PathLike[str] | None] = ()) -> RunDir:
        """Make the folder (and its parents) for a run about to write it, with its marker.

        Refused before anything is written: a folder that is neither empty nor a tunegate run, or an
        input of the run (`inputs`: the data file, --config, ...) inside it under a name the run writes
        (ConfigError, exit 2); a path that is not a folder or cannot be made (FilesError, exit 8).
        """
        self._claim(inputs)
        return self

    def _claim(self, inputs: Iterable[str | os.PathLike[str] | None]) -> tuple[list[Path], bool]:
        """`create`, returning what it made for `lock` to undo on a failed start: the folders (innermost
        last) and whether it wrote the marker."""
        self._check_inputs(inputs)
        made: list[Path] = []
        try:
            st = os.stat(self.path)  # follows a link: --out may name a folder through one
        except FileNotFoundError:
            if os.path.lexists(self.path):
                raise FilesError(
                    "the run folder (--out) is a symbolic link to nothing, not a folder", file=str(self.path)
                ) from None
            made = _make_folders(self.path)
        except OSError as exc:  # a part of the path is a file, permission denied, ...
            raise FilesError(
                f"cannot use the run folder (--out): {os_error_reason(exc)}", file=str(self.path)
            ) from None
        else:
            if not stat.S_ISDIR(st.st_mode):
                kind = "a file" if stat.S_ISREG(st.st_mode) else "a pipe, device or socket"
                raise FilesError(f"the run folder (--out) is {kind}, not a folder", file=str(self.path))
            self._check_is_run()
            self._check_links()
        return made, self._write_marker()

    def _check_is_run(self) -> None:
        """An existing --out must be empty or a tunegate run; else ConfigError naming a file in the way."""
        names = self._entries()
        if not names - {LOCK}:  # empty, or holding only the lock of an earlier tunegate that stopped
            return
        if self._has_marker():
            return
        if DECISION in names:
            try:
                self.read_report()  # a run folder from before the marker: its decision.json validates
                return
            except DataError:
                pass
        in_the_way = sorted(names & _RUN_NAMES) or sorted(names)
        more = f" and {len(names) - 1} more" if len(names) > 1 else ""
        raise ConfigError(
            f"not a tunegate run folder and not empty: it holds {in_the_way[0]!r}{more}, which tunegate "
            "would overwrite or mix with its own files; choose a new or empty folder for --out",
            file=str(self.path),
            field="--out",
        )

    def _check_inputs(self, inputs: Iterable[str | os.PathLike[str] | None]) -> None:
        """An input file inside the folder under a name the run writes would be overwritten: refuse it."""
        root = os.path.normpath(self.path)
        real_root = os.path.realpath(self.path)
        for given in inputs:
            if not given:
                continue
            for path, base in (
                (os.path.normpath(os.path.abspath(given)), root),
                (os.path.realpath(given), real_root),
            ):
                rel = os.path.relpath(path, base)
                first = rel.split(os.sep)[0]
                if first in _RUN_NAMES:
                    raise ConfigError(
                        f"an input of the run sits inside the run folder as {rel!r}, which the run writes; "
                        "move it out of the folder or choose another --out",
                        file=str(given),
                        field="--out",
                    )

    def _check_existing(self) -> None:
        """An existing run's folder (train, verify): with the marker, or a decision.json that validates."""
        if not self.path.is_dir():
            raise DataError("no such run folder; run `tunegate advise` first", file=str(self.path))
        if not self._has_marker():
            self.read_report()  # names what is missing or damaged
        self._check_links()

    def _check_links(self) -> None:
        """The run's own names (and train/'s) checked before any work: a link planted at one of them
        stops the command at once, naming it, instead of midway."""
        for name in sorted(_RUN_NAMES):
            self._contained(self.path / name)
        for name in (*TRAIN_OUTPUTS, MERGED, TRAIN_CONFIG):
            self._contained(self.train_dir / name)

    def _entries(self) -> set[str]:
        try:
            return set(os.listdir(self.path))
        except OSError as exc:
            raise FilesError(
                f"cannot read the run folder: {os_error_reason(exc)}", file=str(self.path)
            ) from None

    def _has_marker(self) -> bool:
        try:
            return stat.S_ISREG(os.lstat(self.path / MARKER).st_mode)
        except FileNotFoundError:
            return False

    def _write_marker(self) -> bool:
        """Write the marker unless it is there; True when it was written now."""
        path = self._contained(self.path / MARKER)
        if self._has_marker():
            return False
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            if self._has_marker():  # written meanwhile by another tunegate starting on this folder
                return False
            raise DataError("is not tunegate's marker file; remove it", file=str(path)) from None
        except OSError as exc:
            raise FilesError(
                f"cannot write in the run folder: {os_error_reason(exc)}", file=str(path)
            ) from None
        try:
            os.write(fd, MARKER_TEXT.encode())
        finally:
            os.close(fd)
        return True

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ------------------------------------------------------------------ paths

    @property
    def decision_path(self) -> Path:
        return self.path / DECISION

    @property
    def train_dir(self) -> Path:
        return self.path / TRAIN

    @property
    def train(self) -> TrainDir:
        """train/: the training loop's outputs."""
        return TrainDir(self.train_dir, root=self.path)

    def predictions_path(self, arm: str) -> Path:
        if not arm or "/" in arm or "\\" in arm or arm.startswith("."):
            raise DataError(f"not an arm name: {arm!r}", file=str(self.path / PREDICTIONS), field="arm")
        return self.path / PREDICTIONS / f"{arm}.jsonl"

    def inside(self, recorded: str | os.PathLike[str], *, field: str) -> Path:
        """A path recorded in the folder, resolved against it (links followed, so a link cannot lead a
        reader out); DataError when it leads outside."""
        p = Path(recorded)
        resolved = (p if p.is_absolute() else self.path / p).resolve()
        root = self.path.resolve()
        if resolved != root and root not in resolved.parents:
            raise DataError(
                f"points outside the run folder ({recorded}); refusing to follow it",
                file=str(self.decision_path),
                field=field,
            )
        return resolved

    def relative(self, path: str | os.PathLike[str]) -> str:
        """How a path inside the folder is recorded: relative to it (the folder can move)."""
        return str(Path(path).resolve().relative_to(self.path.resolve()))

    def _contained(self, path: Path) -> Path:
        return _contained(self.path, path)

    def _write(self, path: Path, text: str) -> Path:
        """Every text file of the folder is written here: inside it, through no link, atomically."""
        _make_folders(self._contained(path).parent, root=self.path)
        return write_text_atomic(self._contained(path), text)

    # ------------------------------------------------------------------ the lock

    @contextmanager
    def lock(
        self, *, create: bool = False, inputs: Iterable[str | os.PathLike[str] | None] = ()
    ) -> Iterator[None]:
        """Hold the folder for this process; a second process fails at once with a clear message.

        `create`: a new run (advise, run) claims the folder (`create`), and when it fails before writing
        anything, what the claim made is removed again; else the folder must hold a run (train, verify).
        Re-entrant within one process, so `tunegate run` holds one lock through advise and train.
        """
        if self.path.resolve() in _HELD:
            yield
            return
        made, wrote_marker = self._claim(inputs) if create else ([], False)
        if not create:
            self._check_existing()
        key = self.path.resolve()
        try:
            fd = self._hold()
        except BaseException:
            if create:
                self._undo_claim(made, wrote_marker)
            raise
        _HELD.add(key)
        ok = False
        try:
            yield
            ok = True
        finally:
            _HELD.discard(key)
            self._release(fd)
            if not ok and create:
                self._undo_claim(made, wrote_marker)

    def _hold(self) -> int:
        """The locked descriptor of .lock (opened without following a link, never truncated before it is
        known to be our own lock file)."""
        path = self._contained(self.path / LOCK)
        for _ in range(10):  # a lock file removed by its holder between our open and our flock: again
            try:
                fd = os.open(
                    path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644
                )
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                    raise DataError(
                        "is not tunegate's lock file (a link, folder or device); remove it", file=str(path)
                    ) from None
                raise FilesError(
                    f"cannot lock the run folder: {os_error_reason(exc)}", file=str(path)
                ) from None
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                    raise DataError(
                        "is not tunegate's lock file (not a plain file, or a hard link to another file); "
                        "remove it",
                        file=str(path),
                    )
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise ConfigError(
                            "another tunegate process is using this run folder; "
                            "wait for it or choose another --out",
                            file=str(self.path),
                        ) from None
                    raise FilesError(
                        f"cannot lock the run folder: {os_error_reason(exc)}", file=str(path)
                    ) from None
                if _same_file(path, st):
                    os.set_blocking(fd, True)
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()}\n".encode())
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        raise ConfigError(
            "the run folder's lock keeps changing; another process is using it", file=str(self.path)
        )

    def _release(self, fd: int) -> None:
        """Remove .lock while still holding it (a process that opened it before sees it gone), then let go."""
        path = self.path / LOCK
        try:
            if _same_file(path, os.fstat(fd)):
                path.unlink()
        except OSError:
            pass  # a read-only folder keeps its .lock: harmless, the next run locks it again
        finally:
            os.close(fd)

    def _undo_claim(self, made: list[Path], wrote_marker: bool) -> None:
        """A run that failed before writing anything leaves nothing: its marker and the folders it made."""
        try:
            if self._entries() - {MARKER, LOCK}:  # a .lock here now is another's: never ours to remove
                return  # the run wrote something (or the folder held a run): keep the folder as it is
            if wrote_marker:
                (self.path / MARKER).unlink(missing_ok=True)
            for folder in reversed(made):
                folder.rmdir()
        except (OSError, FilesError):
            pass  # best effort: a folder someone else wrote into meanwhile stays

    # ------------------------------------------------------------------ decision.json

    def write_report(self, report: Report) -> Path:
        return self._write(self.decision_path, report.to_json())

    def read_report(self) -> Report:
        text = self._read_text(self.decision_path, missing="no decision.json here: is this a run folder?")
        try:
            version = json.loads(text).get("schema_version")
        except (ValueError, AttributeError, RecursionError):  # ValueError: JSON errors, huge integers
            version = SCHEMA_VERSION  # let validation name the problem
        if version != SCHEMA_VERSION:
            raise DataError(
                f"unsupported schema_version {version!r} (this tunegate reads {SCHEMA_VERSION})",
                file=str(self.decision_path),
                field="schema_version",
            )
        try:
            return Report.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or None
            more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
            raise DataError(
                f"damaged or foreign decision.json: {first['msg']}{more}",
                file=str(self.decision_path),
                field=where,
            ) from None

    def update_report(self, **sections: Any) -> Report:
        """Replace top-level sections of decision.json (typed sections, e.g. `training=Training(...)`, or
        plain data such as `signals={...}`), validate the whole and write it back."""
        current = dict(self.read_report())  # the top-level fields, typed
        current.update(sections)
        try:
            report = Report.model_validate(current)
        except ValidationError as exc:  # our own data failing our own model is a bug, not a user error
            raise RuntimeError(f"internal error: an updated report does not validate: {exc}") from exc
        self.write_report(report)
        return report

    # ------------------------------------------------------------------ config.json and split.json

    @property
    def split_path(self) -> Path:
        return self.path / SPLIT

    def write_config(self, config: dict[str, Any]) -> Path:
        return self._write(self.path / CONFIG, json_text(config))

    def read_config(self) -> dict[str, Any]:
        return self._read_object(self.path / CONFIG)

    def write_split(self, split: dict[str, Any]) -> Path:
        return self._write(self.split_path, json_text(split, compact=True))  # thousands of line numbers

    def read_split(self) -> dict[str, Any]:
        """split.json, whose train, dev and eval are lists of data lines with no line in two of them."""
        doc = self._read_object(self.split_path, missing="no split file; run `tunegate advise` first")
        name = str(self.split_path)
        seen: dict[int, str] = {}
        for key in SPLITS:
            value = doc.get(key)
            if not isinstance(value, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in value
            ):
                raise DataError("expected a list of line numbers", file=name, field=key)
            for line in value:
                if line in seen:
                    where = (
                        f"twice in {key!r}" if seen[line] == key else f"in both {seen[line]!r} and {key!r}"
                    )
                    raise DataError(
                        f"line {line} is listed {where}: the splits must be disjoint", file=name, field=key
                    )
                seen[line] = key
        return doc

    def check_held_out(
        self,
        split: Mapping[str, Any],
        key_of: Mapping[int, str],
        demos: Sequence[Mapping[int, Sequence[int]]] = (),
    ) -> None:
        """The held-out items are held out, by content: no two splits share an input (`key_of`: each
        data line's normalised input), and no eval item is among its own demonstrations in prompts.json
        (`demos`: each recorded arm's eval line -> demonstration lines, in the file's arm order).
        A tampered or foreign file is a DataError (exit 3) naming it and the field, before any training
        or verification uses it."""
        owner: dict[str, tuple[str, int]] = {}
        for key in SPLITS:
            for line in split[key]:
                content = key_of.get(line)
                if content is None:
                    continue  # a line not in the data: the loaders name it
                first = owner.setdefault(content, (key, line))
                if first[0] != key:
                    raise DataError(
                        f"line {line} has the same input as line {first[1]} in {first[0]!r}: an item held "
                        "out for evaluation would be trained on or seen; the splits must be disjoint",
                        file=str(self.split_path),
                        field=key,
                    )
        for i, arm_demos in enumerate(demos):
            for line, shown in arm_demos.items():
                own = key_of.get(line)
                for demo in shown:
                    if demo == line or (own is not None and key_of.get(demo) == own):
                        raise DataError(
                            f"eval item {line} is its own demonstration (line {demo})",
                            file=str(self.path / PROMPTS),
                            field=f"arms.{i}.demos.{line}",
                        )

    # ------------------------------------------------------------------ pilot/

    def pilot_train(self, n_examples: int) -> TrainDir:
        """pilot/n-<examples>/: the training loop's outputs for the pilot on that many examples."""
        return TrainDir(self.path / PILOT / f"n-{int(n_examples)}", root=self.path)

    def write_pilot(self, result: dict[str, Any]) -> Path:
        """pilot/result.json: the pilots' per-item scores, under the key that says what they measured."""
        return self._write(self.path / PILOT / "result.json", json_text(result, compact=True))

    def read_pilot(self) -> dict[str, Any] | None:
        """The recorded pilot result (None: none recorded, or unreadable, so the pilot runs again)."""
        path = self.path / PILOT / "result.json"
        if not path.is_file():
            return None
        try:
            return self._read_object(path)
        except DataError:
            return None

    # ------------------------------------------------------------------ prompts.json

    def write_prompts(self, record: BaseModel) -> Path:
        return self._write(self.path / PROMPTS, record.model_dump_json(indent=1) + "\n")

    def read_prompts(self, schema: type[M]) -> M:
        """The prompts advise recorded, validated by `schema` (advisor.measure.prompt_record's
        PromptRecord: the run folder owns the file, the measuring stage its format). A folder from before
        the record existed is refused (exit 3): re-deriving the prompts from config.json is what the record
        replaces."""
        path = self.path / PROMPTS
        text = self._read_text(
            path,
            missing="no record of the prompts advise sent (a run folder from an older tunegate, or advise "
            "ran without a model); run `tunegate advise` again: the model's answers come from its cache",
        )
        try:
            return schema.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise DataError(
                f"damaged or foreign prompts.json: {first['msg']}",
                file=str(path),
                field=".".join(str(p) for p in first["loc"]) or None,
            ) from None

    # ------------------------------------------------------------------ predictions

    def write_predictions(self, arm: str, rows: list[dict[str, Any]]) -> Path:
        lines = [json.dumps(r, ensure_ascii=False, allow_nan=False) for r in rows]
        return self._write(self.predictions_path(arm), "".join(line + "\n" for line in lines))

    def has_predictions(self, arm: str) -> bool:
        return self._contained(self.predictions_path(arm)).is_file()

    def read_predictions(self, arm: str) -> list[dict[str, Any]]:
        path = self.predictions_path(arm)
        text = self._read_text(path, missing=f"no predictions for arm {arm!r} in this run folder")
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                raise DataError(f"not valid JSON: {exc}", file=str(path), line=i) from None
            if not isinstance(row, dict):
                raise DataError("each line must be a JSON object", file=str(path), line=i)
            rows.append(row)
        return rows

    def write_input(self, name: str, text: str) -> Path:
        """A data file the run will read, kept in the folder (the demo's bundled sample)."""
        if not name or "/" in name or "\\" in name or name.startswith(".") or name in _RUN_NAMES:
            raise ValueError(f"not a name for an input file: {name!r}")
        return self._write(self.path / name, text)

    # ------------------------------------------------------------------ train/

    def write_train_config(self, doc: dict[str, Any]) -> Path:
        """train/config.json: the training config, the base model and the provenance."""
        return self._write(self.train_dir / TRAIN_CONFIG, json_text(doc))

    def write_model_card(self, adapter_dir: str | os.PathLike[str], text: str) -> Path:
        """The model card, README.md in the adapter folder (which must be inside this run folder)."""
        folder = self.inside(adapter_dir, field="training.adapter_dir")
        self._write(self.path / folder.relative_to(self.path.resolve()) / MODEL_CARD, text)
        return folder / MODEL_CARD

    def tracker_dir(self, tracker: str) -> Path:
        """Where a tracker's library writes its local files (--report-to): mlruns/ or tensorboard/; for
        wandb the run folder itself (wandb makes its own wandb/ inside the folder it is given)."""
        if tracker not in TRACKER_DIRS:
            raise ValueError(f"not a tracker: {tracker!r}")
        return self._contained(self.path / TRACKER_DIRS[tracker])

    # ------------------------------------------------------------------ renderings of decision.json

    def write_rendering(self, name: str, text: str) -> Path:
        """report.md or report.html, written atomically."""
        if name not in RENDERINGS:
            raise ValueError(f"not a rendering of this run folder: {name!r}")
        return self._write(self.path / name, text)

    def write_plot(self, name: str, svg: str) -> str:
        """plots/<name>.svg, written atomically; returns its path relative to the folder (as report.md
        links it)."""
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"not a plot name: {name!r}")
        rel = f"{PLOTS_DIR}/{name}.svg"
        self._write(self.path / rel, svg)
        return rel

    # ------------------------------------------------------------------ reading, one policy

    def _read_text(self, path: Path, *, missing: str) -> str:
        return _read_text(self.path, path, missing=missing)

    def _read_object(
        self, path: Path, *, missing: str = "missing from the run folder (run `tunegate advise` first)"
    ) -> dict[str, Any]:
        text = self._read_text(path, missing=missing)
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON: {exc.msg}", file=str(path), line=exc.lineno) from None
        except (RecursionError, ValueError):  # nested too deeply, or an integer of thousands of digits
            raise DataError("beyond the JSON parser's limits", file=str(path)) from None
        if not isinstance(doc, dict):
            raise DataError("must be a JSON object", file=str(path))
        return doc


class TrainDir:
    """train/ of a run folder (or any folder the training loop is given): metrics.jsonl, checkpoints/,
    best/, adapter/ and merged/.

    Folders are written beside their final place and swapped in with a rename, after an fsync of every
    file, so a reader (or a resumed run after a crash) sees the old folder or the new one, never half.
    Every path is checked as in the run folder: inside `root` (the run folder; by default the folder
    holding this one), through no symbolic link, and only real folders are removed.
    """

    def __init__(self, path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).absolute()
        self.root = Path(root).absolute() if root is not None else self.path.parent

    def __repr__(self) -> str:
        return f"TrainDir({str(self.path)!r})"

    @property
    def adapter(self) -> Path:
        return self.path / ADAPTER

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def merged(self) -> Path:
        return self.path / MERGED

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    def _contained(self, path: Path) -> Path:
        return _contained(self.root, path)

    def clear(self) -> None:
        """Remove an earlier training run's outputs (before a fresh, not resumed, run)."""
        self._contained(self.path)  # a train/ that is a link stops here, before anything is removed
        for name in TRAIN_OUTPUTS:
            _remove(self.root, self.path / name)

    # ------------------------------------------------------------------ metrics.jsonl

    def open_metrics(self, *, keep_until_step: int | None) -> MetricsLog:
        """The metrics log for appending: emptied for a fresh run (None); for a resumed run, the lines past
        the checkpoint's step are dropped first."""
        _make_folders(self.path, root=self.root)
        path = self._contained(self.metrics_path)
        if keep_until_step is None:
            write_text_atomic(path, "")
        elif path.exists():
            kept = [ln for ln in self.read_metrics() if _step_of(ln) <= keep_until_step]
            write_text_atomic(path, "".join(ln + "\n" for ln in kept))
        return MetricsLog(path)

    def read_metrics(self) -> list[str]:
        """The log's non-empty lines; [] when there is none."""
        path = self._contained(self.metrics_path)
        if not os.path.lexists(path):
            return []
        text = _read_text(self.root, path, missing="no training log")
        return [ln for ln in text.splitlines() if ln.strip()]

    # ------------------------------------------------------------------ adapters and the merged model

    def write_adapter(self, name: str, model: Any, state_dict: dict[str, Any] | None = None) -> Path:
        """`model.save_pretrained` (a peft model) into best/ or adapter/, swapped in whole; `state_dict`:
        its trainable tensors gathered whole, when the model holds only its shard of them (FSDP).

        peft records "all-linear" as full module paths (model.layers.0.self_attn.q_proj, ...); they are
        written as the short names, which select the same modules under peft's suffix matching and are
        what vLLM's LoRA loader checks against its supported modules.
        """

        def fill(tmp: Path) -> None:
            model.save_pretrained(tmp, **({"state_dict": state_dict} if state_dict is not None else {}))
            conf_path = tmp / ADAPTER_CONFIG
            conf = json.loads(conf_path.read_text(encoding="utf-8"))
            if isinstance(conf.get("target_modules"), list):
                conf["target_modules"] = sorted({m.rsplit(".", 1)[-1] for m in conf["target_modules"]})
                conf_path.write_text(json.dumps(conf, indent=2) + "\n", encoding="utf-8")

        return self._write_folder(self._named(name, (BEST, ADAPTER)), fill)

    def keep_best_as_adapter(self) -> Path:
        """best/ copied to adapter/ (the result when there was a dev set)."""
        best = self._contained(self.best)
        return self._write_folder(self.adapter, lambda tmp: shutil.copytree(best, tmp, symlinks=True))

    def write_merged(self, fill: Callable[[Path], None]) -> Path:
        """merged/: `fill(tmp)` saves the merged model and tokenizer into `tmp`, then it is swapped in."""
        return self._write_folder(self.merged, fill)

    def name_base_model(self, adapter_dir: str | os.PathLike[str], base_id: str) -> Path:
        """Record `base_id` as the adapter's base_model_name_or_path (peft records the folder it loaded,
        which for the embedded model is a converted copy in one user's cache), so a server finds the base."""
        path = self._contained(Path(adapter_dir).absolute() / ADAPTER_CONFIG)
        text = _read_text(self.root, path, missing="the adapter has no config")
        try:
            config = json.loads(text)
        except ValueError as exc:
            raise DataError(
                f"cannot read the adapter's config ({type(exc).__name__})", file=str(path)
            ) from None
        if not isinstance(config, dict):
            raise DataError("the adapter's config is not a JSON object", file=str(path))
        config["base_model_name_or_path"] = base_id
        return write_text_atomic(self._contained(path), json_text(config))

    # ------------------------------------------------------------------ checkpoints

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint folder (one holding its state file), or None."""
        root = self._contained(self.path / CHECKPOINTS)
        if not root.is_dir():
            return None
        done = sorted(
            p for p in root.glob("step-*") if stat.S_ISREG(_lstat_mode(self._contained(p / STATE_FILE)))
        )
        return done[-1] if done else None

    @staticmethod
    def checkpoint_state(checkpoint: Path) -> Path:
        """The state file of a checkpoint folder."""
        return checkpoint / STATE_FILE

    def write_checkpoint(self, step: int, save: Callable[[Path], None], *, keep: int = 2) -> Path:
        """checkpoints/step-NNNNNNN/: `save(file)` writes the state file (torch.save) into a temporary
        folder that is then swapped in; the newest `keep` checkpoints are kept."""
        root = self.path / CHECKPOINTS
        _make_folders(root, root=self.root)
        final = root / f"step-{step:07d}"

        def fill(tmp: Path) -> None:
            tmp.mkdir()
            save(tmp / STATE_FILE)

        self._write_folder(final, fill)
        olds = sorted(p for p in root.glob("step-*") if p.name < final.name)
        for old in olds[: max(0, len(olds) - (keep - 1))]:
            _remove(self.root, old)
        return final

    # ------------------------------------------------------------------ atomic folders

    def _named(self, name: str, allowed: tuple[str, ...]) -> Path:
        if name not in allowed:
            raise ValueError(f"not a folder of train/: {name!r}")
        return self.path / name

    def _write_folder(self, final: Path, fill: Callable[[Path], Any]) -> Path:
        _make_folders(final.parent, root=self.root)
        final = self._contained(final)
        tmp = self._contained(final.with_name(f".{final.name}.tmp{os.getpid()}"))
        old = self._contained(final.with_name(f".{final.name}.old{os.getpid()}"))
        _remove(self.root, tmp)
        try:
            fill(tmp)
            for f in tmp.rglob("*"):
                if f.is_file() and not f.is_symlink():
                    with open(f, "rb") as fh:
                        os.fsync(fh.fileno())
            _remove(self.root, old)
            if os.path.lexists(final):
                os.replace(final, old)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
            _remove(self.root, old)
        finally:
            if os.path.lexists(tmp):
                _remove(self.root, tmp)
        return final


class MetricsLog:
    """train/metrics.jsonl for appending: one JSON record per line, flushed per line (opened without
    following a link)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o666)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise DataError(
                    "is a symbolic link inside the run folder; remove it", file=str(self.path)
                ) from None
            raise FilesError(f"cannot write: {os_error_reason(exc)}", file=str(self.path)) from None
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=str) + "\n")
            fh.flush()


def _step_of(line: str) -> int:
    try:
        rec = json.loads(line)
    except ValueError:  # a line cut short by a crash mid-write
        return 10**12
    return int(rec.get("step", 0)) if isinstance(rec, dict) else 10**12


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _contained(root: Path, path: str | os.PathLike[str]) -> Path:
    """`path`, which must lie inside `root` and neither be nor pass through a symbolic link below it
    (the parts that exist are checked with lstat; a part that does not exist yet is made by us)."""
    rel = os.path.relpath(os.path.normpath(path), os.path.normpath(root))
    if rel == os.curdir:
        return root
    parts = Path(rel).parts
    if os.pardir in parts:
        raise DataError("lies outside the run folder; refusing to use it", file=str(path))
    cur = root
    for part in parts:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except (FileNotFoundError, NotADirectoryError):
            break
        if stat.S_ISLNK(st.st_mode):
            raise DataError(
                "is a symbolic link inside the run folder; tunegate does not follow links there "
                "(remove it, or choose another folder)",
                file=str(cur),
            )
    return root.joinpath(*parts)


def _make_folders(path: Path, root: Path | None = None) -> list[Path]:
    """Make `path` and its missing parents; returns the folders made, outermost first. Below `root` no
    part may be a link (`_contained`); FilesError when a folder cannot be made."""
    if root is not None:
        path = _contained(root, path)
    missing: list[Path] = []
    p = path
    while not os.path.lexists(p) and p.parent != p:
        missing.append(p)
        p = p.parent
    made: list[Path] = []
    for folder in reversed(missing):
        try:
            os.mkdir(folder)
        except FileExistsError:
            if not folder.is_dir() or (root is not None and folder.is_symlink()):
                raise FilesError("a file is in the way of a folder", file=str(folder)) from None
            continue  # made meanwhile by another process
        except OSError as exc:
            raise FilesError(f"cannot create the folder: {os_error_reason(exc)}", file=str(folder)) from None
        made.append(folder)
    if not path.is_dir():
        raise FilesError("a file is in the way of a folder", file=str(path))
    return made


def _same_file(path: Path, st: os.stat_result) -> bool:
    """Whether `path` (not followed) is still the file `st` describes."""
    try:
        now = os.lstat(path)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


def _remove(root: Path, path: Path) -> None:
    """Remove `path` inside `root`: a real folder with rmtree, a file with unlink; a link is refused."""
    path = _contained(root, path)
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)  # never follows a link inside (fd-based on Linux)
    else:
        path.unlink()


def _read_text(root: Path, path: Path, *, missing: str) -> str:
    """A text file inside `root`, opened without following a link; DataError naming it on any problem."""
    path = _contained(root, path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise DataError(missing, file=str(path)) from None
    except OSError as exc:
        raise DataError(f"cannot read: {os_error_reason(exc)}", file=str(path)) from None
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if stat.S_ISDIR(mode):
            raise DataError(missing, file=str(path))
        if not stat.S_ISREG(mode):
            raise DataError("not a plain file (a pipe or a device)", file=str(path))
        try:
            data = fh.read()
        except OSError as exc:
            raise DataError(f"cannot read: {os_error_reason(exc)}", file=str(path)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text: {exc.reason}", file=str(path)) from None


def _lstat_mode(path: Path) -> int:
    try:
        return os.lstat(path).st_mode
    except OSError:
        return 0
