"""The run folder: the only code that reads or writes one.

A run folder holds everything one `advise` (and later `train`) produced:

    decision.json        the typed report (advisor.report.document.Report)
    config.json          the resolved advise config
    split.json           train/dev/eval source lines, the data file's path and sha256
    prompts.json         the prompts advise sent: every arm's spec, demonstrations by line, calibration
    predictions/*.jsonl  per-item results of every scored arm
    report.md, plots/, report.html   renderings of decision.json
    train/               config.json, metrics.jsonl, checkpoints/, best/, adapter/ (+ README.md), merged/
    mlruns/, tensorboard/, wandb/   a tracker's local files (--report-to), written by its library
    .lock                held by the process writing the folder

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
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from advisor.errors import ConfigError, DataError
from advisor.files import ensure_dir, write_json_atomic, write_text_atomic
from advisor.measure.prompt_record import PromptRecord
from advisor.report.document import SCHEMA_VERSION, Report

DECISION = "decision.json"
CONFIG = "config.json"
SPLIT = "split.json"
PROMPTS = "prompts.json"
PREDICTIONS = "predictions"
TRAIN = "train"
PILOT = "pilot"  # the pilot fine-tunes advise runs: pilot/n-<examples>/ (a TrainDir each), pilot/result.json
LOCK = ".lock"
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
TRAIN_OUTPUTS = (CHECKPOINTS, BEST, ADAPTER, METRICS)
"""What a fresh (not resumed) training run replaces."""
TRACKER_DIRS = {"mlflow": "mlruns", "tensorboard": "tensorboard", "wandb": ""}
MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
PLOTS_DIR = "plots"  # the Markdown report's plots, as SVG files beside it
RENDERINGS = (MARKDOWN_FILE, HTML_FILE)
_OWN_FILES = {DECISION, CONFIG, SPLIT, PREDICTIONS, TRAIN, PILOT, LOCK, PLOTS_DIR, *RENDERINGS}
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

    def create(self) -> RunDir:
        """Make the folder (and its parents); FilesError (exit 8) when it cannot be made."""
        ensure_dir(self.path, "run folder (--out)")
        return self

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
        return TrainDir(self.train_dir)

    def predictions_path(self, arm: str) -> Path:
        if not arm or "/" in arm or "\\" in arm or arm.startswith("."):
            raise DataError(f"not an arm name: {arm!r}", file=str(self.path / PREDICTIONS), field="arm")
        return self.path / PREDICTIONS / f"{arm}.jsonl"

    def inside(self, recorded: str | os.PathLike[str], *, field: str) -> Path:
        """A path recorded in the folder, resolved against it; DataError when it leads outside."""
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

    # ------------------------------------------------------------------ the lock

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder for this process; a second process fails at once with a clear message.

        Re-entrant within one process, so `tunegate run` holds one lock through advise and train.
        """
        key = self.path.resolve()
        if key in _HELD:
            yield
            return
        ensure_dir(self.path, "run folder (--out)")
        lock_path = self.path / LOCK
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot use the run folder: {exc.strerror}", file=str(self.path)) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise ConfigError(
                        "another tunegate process is using this run folder; "
                        "wait for it or choose another --out",
                        file=str(self.path),
                    ) from None
                raise
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            _HELD.add(key)
            try:
                yield
            finally:
                _HELD.discard(key)
        finally:
            os.close(fd)  # closing releases the lock

    # ------------------------------------------------------------------ decision.json

    def write_report(self, report: Report) -> Path:
        return write_text_atomic(self.decision_path, report.to_json())

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
        return write_json_atomic(self.path / CONFIG, config)

    def read_config(self) -> dict[str, Any]:
        return self._read_object(self.path / CONFIG)

    def write_split(self, split: dict[str, Any]) -> Path:
        return write_json_atomic(self.split_path, split, compact=True)  # thousands of line numbers

    def read_split(self) -> dict[str, Any]:
        return self._read_object(self.split_path, missing="no split file; run `tunegate advise` first")

    # ------------------------------------------------------------------ pilot/

    def pilot_train(self, n_examples: int) -> TrainDir:
        """pilot/n-<examples>/: the training loop's outputs for the pilot on that many examples."""
        return TrainDir(self.path / PILOT / f"n-{int(n_examples)}")

    def write_pilot(self, result: dict[str, Any]) -> Path:
        """pilot/result.json: the pilots' per-item scores, under the key that says what they measured."""
        return write_json_atomic(self.path / PILOT / "result.json", result, compact=True)

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

    def write_prompts(self, record: PromptRecord) -> Path:
        return write_text_atomic(self.path / PROMPTS, record.model_dump_json(indent=1) + "\n")

    def read_prompts(self) -> PromptRecord:
        """The prompts advise recorded. A folder from before the record existed is refused (exit 3):
        re-deriving the prompts from config.json is what the record replaces."""
        path = self.path / PROMPTS
        text = self._read_text(
            path,
            missing="no record of the prompts advise sent (a run folder from an older tunegate, or advise "
            "ran without a model); run `tunegate advise` again: the model's answers come from its cache",
        )
        try:
            return PromptRecord.model_validate_json(text)
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
        return write_text_atomic(self.predictions_path(arm), "".join(line + "\n" for line in lines))

    def has_predictions(self, arm: str) -> bool:
        return self.predictions_path(arm).is_file()

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
        if not name or "/" in name or "\\" in name or name.startswith(".") or name in _OWN_FILES:
            raise ValueError(f"not a name for an input file: {name!r}")
        return write_text_atomic(self.path / name, text)

    # ------------------------------------------------------------------ train/

    def write_train_config(self, doc: dict[str, Any]) -> Path:
        """train/config.json: the training config, the base model and the provenance."""
        return write_json_atomic(self.train_dir / TRAIN_CONFIG, doc)

    def write_model_card(self, adapter_dir: str | os.PathLike[str], text: str) -> Path:
        """The model card, README.md in the adapter folder (which must be inside this run folder)."""
        folder = self.inside(adapter_dir, field="training.adapter_dir")
        return write_text_atomic(folder / MODEL_CARD, text)

    def tracker_dir(self, tracker: str) -> Path:
        """Where a tracker's library writes its local files (--report-to): mlruns/ or tensorboard/; for
        wandb the run folder itself (wandb makes its own wandb/ inside the folder it is given)."""
        if tracker not in TRACKER_DIRS:
            raise ValueError(f"not a tracker: {tracker!r}")
        return self.path / TRACKER_DIRS[tracker]

    # ------------------------------------------------------------------ renderings of decision.json

    def write_rendering(self, name: str, text: str) -> Path:
        """report.md or report.html, written atomically."""
        if name not in RENDERINGS:
            raise ValueError(f"not a rendering of this run folder: {name!r}")
        return write_text_atomic(self.path / name, text)

    def write_plot(self, name: str, svg: str) -> str:
        """plots/<name>.svg, written atomically; returns its path relative to the folder (as report.md
        links it)."""
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"not a plot name: {name!r}")
        rel = f"{PLOTS_DIR}/{name}.svg"
        write_text_atomic(self.path / rel, svg)
        return rel

    # ------------------------------------------------------------------ reading, one policy

    def _read_text(self, path: Path, *, missing: str) -> str:
        try:
            if not path.is_file():
                raise FileNotFoundError
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DataError(missing, file=str(path)) from None
        except UnicodeDecodeError as exc:
            raise DataError(f"not UTF-8 text: {exc.reason}", file=str(path)) from None
        except OSError as exc:
            raise DataError(f"cannot read: {exc.strerror}", file=str(path)) from None

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
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).absolute()

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

    def clear(self) -> None:
        """Remove an earlier training run's outputs (before a fresh, not resumed, run)."""
        for name in TRAIN_OUTPUTS:
            p = self.path / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    # ------------------------------------------------------------------ metrics.jsonl

    def open_metrics(self, *, keep_until_step: int | None) -> MetricsLog:
        """The metrics log for appending: emptied for a fresh run (None); for a resumed run, the lines past
        the checkpoint's step are dropped first."""
        ensure_dir(self.path, "training output folder")
        path = self.metrics_path
        if keep_until_step is None:
            write_text_atomic(path, "")
        elif path.exists():
            kept = [ln for ln in self.read_metrics() if _step_of(ln) <= keep_until_step]
            write_text_atomic(path, "".join(ln + "\n" for ln in kept))
        return MetricsLog(path)

    def read_metrics(self) -> list[str]:
        """The log's non-empty lines; [] when there is none."""
        try:
            return [ln for ln in self.metrics_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except FileNotFoundError:
            return []

    # ------------------------------------------------------------------ adapters and the merged model

    def write_adapter(self, name: str, model: Any) -> Path:
        """`model.save_pretrained` (a peft model) into best/ or adapter/, swapped in whole.

        peft records "all-linear" as full module paths (model.layers.0.self_attn.q_proj, ...); they are
        written as the short names, which select the same modules under peft's suffix matching and are
        what vLLM's LoRA loader checks against its supported modules.
        """

        def fill(tmp: Path) -> None:
            model.save_pretrained(tmp)
            conf_path = tmp / ADAPTER_CONFIG
            conf = json.loads(conf_path.read_text(encoding="utf-8"))
            if isinstance(conf.get("target_modules"), list):
                conf["target_modules"] = sorted({m.rsplit(".", 1)[-1] for m in conf["target_modules"]})
                conf_path.write_text(json.dumps(conf, indent=2) + "\n", encoding="utf-8")

        return self._write_folder(self._named(name, (BEST, ADAPTER)), fill)

    def keep_best_as_adapter(self) -> Path:
        """best/ copied to adapter/ (the result when there was a dev set)."""
        return self._write_folder(self.adapter, lambda tmp: shutil.copytree(self.best, tmp))

    def write_merged(self, fill: Callable[[Path], None]) -> Path:
        """merged/: `fill(tmp)` saves the merged model and tokenizer into `tmp`, then it is swapped in."""
        return self._write_folder(self.merged, fill)

    def name_base_model(self, adapter_dir: str | os.PathLike[str], base_id: str) -> Path:
        """Record `base_id` as the adapter's base_model_name_or_path (peft records the folder it loaded,
        which for the embedded model is a converted copy in one user's cache), so a server finds the base."""
        path = Path(adapter_dir) / ADAPTER_CONFIG
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(
                f"cannot read the adapter's config ({type(exc).__name__})", file=str(path)
            ) from None
        config["base_model_name_or_path"] = base_id
        return write_json_atomic(path, config)

    # ------------------------------------------------------------------ checkpoints

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint folder (one holding its state file), or None."""
        done = sorted(p for p in (self.path / CHECKPOINTS).glob("step-*") if (p / STATE_FILE).is_file())
        return done[-1] if done else None

    @staticmethod
    def checkpoint_state(checkpoint: Path) -> Path:
        """The state file of a checkpoint folder."""
        return checkpoint / STATE_FILE

    def write_checkpoint(self, step: int, save: Callable[[Path], None], *, keep: int = 2) -> Path:
        """checkpoints/step-NNNNNNN/: `save(file)` writes the state file (torch.save) into a temporary
        folder that is then swapped in; the newest `keep` checkpoints are kept."""
        root = ensure_dir(self.path / CHECKPOINTS, "checkpoint folder")
        final = root / f"step-{step:07d}"

        def fill(tmp: Path) -> None:
            tmp.mkdir()
            save(tmp / STATE_FILE)

        self._write_folder(final, fill)
        olds = sorted(p for p in root.glob("step-*") if p.name < final.name)
        for old in olds[: max(0, len(olds) - (keep - 1))]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    # ------------------------------------------------------------------ atomic folders

    def _named(self, name: str, allowed: tuple[str, ...]) -> Path:
        if name not in allowed:
            raise ValueError(f"not a folder of train/: {name!r}")
        return self.path / name

    def _write_folder(self, final: Path, fill: Callable[[Path], Any]) -> Path:
        ensure_dir(final.parent, "training output folder")
        tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        try:
            fill(tmp)
            for f in tmp.rglob("*"):
                if f.is_file():
                    with open(f, "rb") as fh:
                        os.fsync(fh.fileno())
            old = final.with_name(f".{final.name}.old{os.getpid()}")
            if final.exists():
                os.replace(final, old)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
            if old.exists():
                shutil.rmtree(old)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final


class MetricsLog:
    """train/metrics.jsonl for appending: one JSON record per line, flushed per line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
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
