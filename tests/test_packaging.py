"""A regular install (a built wheel, not the editable checkout) finds the shipped hardware,
model and validation files from any folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, **kw)


def test_wheel_installs_into_a_fresh_venv_and_solves_from_another_folder(tmp_path: Path):
    dist = tmp_path / "dist"
    built = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            "-q",
        ],
        cwd=tmp_path,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("preserve_cp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {p.name for p in (ROOT / "hardware").glob("*.yaml")}
    assert {n.rsplit("/", 1)[1] for n in names if "/_data/hardware/" in n} == shipped
    assert any(n.endswith("_data/graphs/llama3-8b.yaml") for n in names)
    assert any(n.endswith("_data/validation/measurements.yaml") for n in names)
    # a fresh venv; the dependencies come from this interpreter's site-packages (offline)
    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], tmp_path)
    assert made.returncode == 0, made.stderr
    py = venv / "bin" / "python"
    inst = _run(
        [str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        tmp_path,
        timeout=300,
    )
    assert inst.returncode == 0, inst.stderr
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run([str(py), "-c", "import preserve_cp; print(preserve_cp.__file__)"], work)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout  # not the checkout
    exe = venv / "bin" / "preserve-cp"
    listed = _run([str(exe), "hardware", "list"], work, timeout=120)
    assert listed.returncode == 0 and "h100-sxm" in listed.stdout, listed.stderr
    out = _run(
        [
            str(exe),
            "solve",
            "--model",
            "llama3-8b",
            "--hardware",
            "h100-sxm",
            "--batch",
            "1",
            "--context",
            "1024",
            "--tp",
            "4",
            "--time-limit",
            "10",
            "--json",
        ],
        work,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["verified"] is True and result["makespan_s"] > 0
    assert list(work.iterdir()) == []  # nothing written where it ran
