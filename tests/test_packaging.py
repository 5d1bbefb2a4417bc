"""The wheel `pip install .` builds holds the whole program: every module and data file in the source
tree's packages (a hand-kept package list once left out advisor.finetune, so an installed tunegate could
not train)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHIPPED = ("advisor", "pipeline", "rules", "tunegate")
DATA = ("*.py", "*.toml", "*.json", "*.txt")


def test_the_wheel_holds_every_module_and_data_file(tmp_path: Path) -> None:
    tracked = subprocess.run(
        ["git", "ls-files", *SHIPPED, "pyproject.toml", "README.md", "LICENSE"],
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout.split()  # fmt: skip
    source = tmp_path / "source"  # a copy: setuptools builds inside the tree it is given
    for name in tracked:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / name, source / name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source),
         "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = tmp_path.glob("tunegate-*.whl")
    inside = set(zipfile.ZipFile(wheel).namelist())
    wanted = {f for f in tracked if f.split("/")[0] in SHIPPED and any(Path(f).match(p) for p in DATA)}
    assert len(wanted) > 80 and "advisor/finetune/loop.py" in wanted and "rules/pilot.toml" in wanted
    missing = sorted(wanted - inside)
    assert not missing, f"not in the wheel: {missing}"
