"""Safe outputs (DESIGN.md, "Errors (contract)"; preserve_cp/outputs.py).

Writing never replaces a link, a device or a FIFO: a link is written through, a device or FIFO
is opened as it is, ``-`` is standard output, a regular file is replaced atomically and keeps
its mode. A missing folder or a folder given as a file is refused with the same one line
(exit 2) by every command that writes, before any work and with nothing written.

CLI solves run on the small workload of test_errors.py (about a second each); refusals run
``cli.main`` in-process (the same code path, no solve).
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from test_errors import SMALL, main_error, one_error_line
from test_trace import trace_problems

from preserve_cp.calibrate import MARKER, write_section
from preserve_cp.errors import InputError
from preserve_cp.hardware import HARDWARE_DIR, load_hardware
from preserve_cp.outputs import check_output, output_folder, write_output
from preserve_cp.sweep import Store, SweepSpec, expand

SOLVE = ["solve", "--model", "llama3-8b", "--hardware", "h100-sxm", *SMALL]


def run_cli(*args: str, stdin: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "preserve_cp.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=stdin,
    )


def missing_folder(flag: str, path: Path) -> str:
    """The one message every command gives for an output whose folder does not exist."""
    return f"{flag} {path}: folder {path.parent} does not exist (create it first)"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ----------------------------------------------------------------------------- library rules
def test_regular_file_is_replaced_atomically_and_keeps_its_mode(tmp_path: Path) -> None:
    f = tmp_path / "t.json"
    f.write_text("old")
    f.chmod(0o640)
    inode = f.stat().st_ino
    write_output(f, "new")
    assert f.read_text() == "new"
    assert _mode(f) == 0o640
    assert f.stat().st_ino != inode  # a new file renamed over the old one, not rewritten
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]  # no temporary file left


def test_new_file_gets_an_ordinary_mode(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        write_output(tmp_path / "new.csv", "a\n")
    finally:
        os.umask(umask)
    assert _mode(tmp_path / "new.csv") == 0o644  # 0666 less the umask, not mkstemp's 0600


def test_link_is_written_through(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "t.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(Path("real") / "t.json")  # relative, into another folder
    write_output(link, "new")
    assert link.is_symlink() and os.readlink(link) == str(Path("real") / "t.json")
    assert target.read_text() == "new"
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["t.json"]


def test_dangling_link_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "t.json")
    write_output(link, "x")
    assert link.is_symlink() and (tmp_path / "t.json").read_text() == "x"


def test_dangling_link_into_a_missing_folder_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "gone" / "t.json")
    with pytest.raises(InputError) as err:
        write_output(link, "x", "--trace")
    msg = str(err.value)
    assert msg == (
        f"--trace {link}: link target {tmp_path / 'gone' / 't.json'}: "
        f"folder {tmp_path / 'gone'} does not exist (create it first)"
    )
    assert link.is_symlink() and not (tmp_path / "gone").exists()


def test_fifo_is_written_as_it_is(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    check_output(fifo, "--trace")  # the early check does not open it (that would block)
    write_output(fifo, "through the pipe")
    reader.join(timeout=10)
    assert got == [b"through the pipe"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]


def test_dev_null_is_written_as_it_is() -> None:
    before = os.lstat("/dev/null")
    write_output("/dev/null", b"\x89PNG")
    after = os.lstat("/dev/null")
    assert stat.S_ISCHR(after.st_mode)
    assert (after.st_ino, after.st_rdev, after.st_mode) == (
        before.st_ino,
        before.st_rdev,
        before.st_mode,
    )


def test_dash_is_standard_output(capsys: pytest.CaptureFixture[str]) -> None:
    write_output("-", "hé\n")
    write_output("-", b"<svg/>\n", text=True)
    assert capsys.readouterr().out == "hé\n<svg/>\n"


class _Terminal(io.TextIOWrapper):
    def isatty(self) -> bool:
        return True


def test_binary_data_is_not_sent_to_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    term = _Terminal(io.BytesIO(), encoding="utf-8")
    monkeypatch.setattr(sys, "stdout", term)
    with pytest.raises(InputError, match=r"^--gantt -: standard output is a terminal"):
        write_output("-", b"\x89PNG", "--gantt")
    write_output("-", "text is fine\n")
    assert term.buffer.getvalue() == b"text is fine\n"  # type: ignore[attr-defined]


def test_missing_folder_and_folder_are_refused(tmp_path: Path) -> None:
    target = tmp_path / "no" / "t.json"
    with pytest.raises(InputError) as err:
        write_output(target, "x", "--trace")
    assert str(err.value) == missing_folder("--trace", target)
    with pytest.raises(InputError) as err:
        write_output(tmp_path, "x", "--trace")
    assert str(err.value) == f"--trace {tmp_path}: is a folder; expected a file name"
    assert list(tmp_path.iterdir()) == []


def test_output_folder_creates_only_the_last_folder(tmp_path: Path) -> None:
    assert output_folder(tmp_path / "out").is_dir()
    assert output_folder(tmp_path / "out").is_dir()  # an existing folder is fine
    deep = tmp_path / "a" / "b"
    with pytest.raises(InputError) as err:
        output_folder(deep, "--out")
    assert str(err.value) == missing_folder("--out", deep)
    assert not (tmp_path / "a").exists()
    (tmp_path / "f").write_text("")
    with pytest.raises(InputError, match="expected a folder, found a file"):
        output_folder(tmp_path / "f", "--out")
    with pytest.raises(InputError, match="not standard output"):
        output_folder("-", "--out")


def test_sweep_store_follows_the_folder_policy(tmp_path: Path) -> None:
    path = tmp_path / "no" / "r.sqlite"
    with pytest.raises(InputError) as err:
        Store(path)
    assert str(err.value) == f"{path}: folder {path.parent} does not exist (create it first)"
    assert not path.parent.exists()


def test_calibrate_write_keeps_a_link(tmp_path: Path) -> None:
    src = (HARDWARE_DIR / "h100-sxm.yaml").read_text(encoding="utf-8")
    assert MARKER in src
    section = MARKER + src.split(MARKER, 1)[1]
    real = tmp_path / "real.yaml"
    real.write_text(src.split(MARKER, 1)[0], encoding="utf-8")  # priors only
    link = tmp_path / "my-gpu.yaml"
    link.symlink_to(real.name)
    write_section(link, section)
    assert link.is_symlink()
    assert load_hardware(str(real)).calibrated
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my-gpu.yaml", "real.yaml"]


# ----------------------------------------------------------------------------- the CLI
def test_trace_link_stays_a_link_and_a_file_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "target.json"
    target.write_text("")
    link = tmp_path / "link.json"
    link.symlink_to(target.name)
    report = tmp_path / "report.html"
    report.write_text("old")
    report.chmod(0o600)
    p = run_cli(*SOLVE, "--trace", str(link), "--report", str(report))
    assert p.returncode == 0, p.stderr
    assert link.is_symlink() and os.readlink(link) == target.name
    doc = json.loads(target.read_text())
    assert trace_problems(doc) == []
    assert report.read_text().startswith("<!DOCTYPE html>")
    assert _mode(report) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "report.html", "target.json"]


@pytest.mark.parametrize("name", ["-", "/dev/stdout"])
def test_trace_to_standard_output(name: str) -> None:
    before = os.lstat("/dev/stdout")
    p = run_cli(*SOLVE, "--trace", name)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)  # the trace and nothing else
    assert trace_problems(doc) == []
    assert "optimised" in p.stderr  # the text summary moved to stderr
    after = os.lstat("/dev/stdout")
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)


def test_trace_into_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "trace.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    p = run_cli(*SOLVE, "--trace", str(fifo))
    if reader.is_alive():  # the CLI never opened it: let the reader go
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    reader.join(timeout=10)
    assert p.returncode == 0, p.stderr
    assert trace_problems(json.loads(got[0])) == []
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_one_thing_on_standard_output(capsys: pytest.CaptureFixture[str]) -> None:
    msg = main_error(capsys, *SOLVE, "--json", "--trace", "-")
    assert msg == "--trace -: standard output already carries --json; give one of them a file name"
    msg = main_error(capsys, *SOLVE, "--trace", "-", "--report", "-")
    assert msg.startswith("--report -: standard output already carries --trace -")


def _sweep_spec(tmp_path: Path) -> Path:
    spec = {
        "name": "t",
        "models": ["llama3-8b"],
        "phases": ["decode"],
        "batch": [1],
        "context": [512],
        "tp": [4],
        "dtype": ["int8"],
        "hardware": ["h100-sxm"],
        "solve": {"time_limit_s": 1},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_sweep_export_to_standard_output(tmp_path: Path) -> None:
    spec = _sweep_spec(tmp_path)
    store = tmp_path / "r.sqlite"
    st = Store(store)
    for pt in expand(SweepSpec(**yaml.safe_load(spec.read_text()))):
        st.put(pt.key, {**pt.describe(), "key": pt.key}, {"makespan_s": 1.5})
    st.close()
    p = run_cli("sweep", str(spec), "--store", str(store), "--export", "-", "--no-progress")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 2 and "makespan_s" in lines[0] and "1.5" in lines[1]
    assert "1 points, 1 already stored, 0 solved now" in p.stderr


WRITERS = [
    "solve --trace",
    "solve --gantt",
    "solve --report",
    "footprint --plot",
    "sweep --export",
    "sweep --store",
    "validate --out",
    "reproduce --out",
]


def _writers(tmp_path: Path, out: Path) -> dict[str, list[str]]:
    """Each command that writes, with its output option set to ``out``."""
    spec = str(_sweep_spec(tmp_path))
    writers = {
        "solve --trace": [*SOLVE, "--trace", str(out)],
        "solve --gantt": [*SOLVE, "--gantt", str(out.with_suffix(".svg"))],
        "solve --report": [*SOLVE, "--report", str(out)],
        "footprint --plot": ["footprint", "--model", "llama3-8b", "--plot", str(out) + ".png"],
        "sweep --export": ["sweep", spec, "--export", str(out)],
        "sweep --store": ["sweep", spec, "--store", str(out)],
        "validate --out": ["validate", "--out", str(out)],
        "reproduce --out": ["reproduce", "paper", "--out", str(out)],
    }
    assert list(writers) == WRITERS
    return writers


@pytest.mark.parametrize("writer", WRITERS)
def test_missing_folder_is_the_same_error_everywhere(
    writer: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _writers(tmp_path, tmp_path / "missing" / "out")[writer]
    flag = writer.split()[1]
    path = Path(args[args.index(flag) + 1])
    assert main_error(capsys, *args) == missing_folder(flag, path)
    assert not (tmp_path / "missing").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # nothing written


def test_missing_folder_in_a_fresh_process(tmp_path: Path) -> None:
    out = tmp_path / "missing" / "dir"
    p = run_cli("validate", "--out", str(out))
    assert one_error_line(p.returncode, p.stdout, p.stderr) == missing_folder("--out", out)
    assert not out.parent.exists()


@pytest.mark.parametrize(
    "writer", ["solve --trace", "solve --gantt", "solve --report", "footprint --plot"]
)
def test_a_folder_as_output_file_is_one_line(
    writer: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _writers(tmp_path, tmp_path / "out")[writer]
    flag = writer.split()[1]
    path = Path(args[args.index(flag) + 1])
    path.mkdir()
    assert main_error(capsys, *args) == f"{flag} {path}: is a folder; expected a file name"
    assert list(path.iterdir()) == []


def test_sweep_export_to_a_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _writers(tmp_path, tmp_path / "out")["sweep --export"]
    (tmp_path / "out").mkdir()
    msg = main_error(capsys, *args)
    assert msg == f"--export {tmp_path / 'out'}: is a folder; expected a file name"
