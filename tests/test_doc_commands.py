"""Every command on every page runs as written (README.md and docs/*.md), printing what is shown.

How a page is read (the rules are stated once, here, and apply to every page):

* Each ```bash block is one case. Its text runs unchanged as one bash script (``set -e`` and
  ``pipefail``) in a fresh folder that holds a copy of the repository's files (``preserve_cp/``,
  ``hardware/``, ``graphs/``, ``validation/``, ``examples/``, ``tests/``, ``docs/``, ``bench/``
  and the top-level project files), so a relative path such as ``examples/...`` resolves as in
  a checkout, and nothing a command writes reaches the checkout. ``preserve-cp`` and ``python``
  are those of the interpreter running the tests; ``COLUMNS`` is 100, and Dask's "Port 8787 is
  already in use" warning (another Dask on the machine, such as a parallel test) is silenced.
* A file the page asks the reader to save is written there first: a ```yaml block whose first
  line is ``# PATH: ...`` with PATH ending in ``.yaml``/``.yml`` (hardware.md's ``my-npu.yaml``,
  models.md's ``my-model.yaml``). Nothing else is prepared or substituted.
* A script that starts with ``pip install`` (the README's first command) runs with a throwaway
  virtual environment (``--system-site-packages``) first on PATH, so the install lands there
  and not in the environment running the tests.
* When the next fenced block after a ```bash block is ```text (with no heading between them),
  it is what the script prints, stdout and stderr as one stream (a command's warnings and
  progress come before its results, as on a terminal). It is
  compared by :func:`same_output`, the one tolerance rule: trailing blanks are ignored, a
  number of seconds or milliseconds after ``in `` (``solved in 0.6 s``) and a progress rate
  (``2.49/s)``) are timings and match any number, and a block whose last line is ``...``
  shows the first lines only. The exit status must be 0, or 2 when the shown output ends with
  a ``preserve-cp: error:`` line.
* Commands the tests cannot run sit in ```console blocks (or are ``$ `` lines of a ```text
  transcript); each is listed in :data:`NOT_RUN` with the reason, and an unlisted one fails.
  Cases slower than about 20 s on 2 cores are listed in :data:`SLOW` (``-m slow``, run by CI).

If a case fails, fix the page (run the command, paste its output), not this file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SAVED = re.compile(r"#\s*([\w./-]+\.ya?ml):")
#: what the folder a case runs in holds (copies)
COPIED = (
    "README.md",
    "pyproject.toml",
    "setup.py",
    "MANIFEST.in",
    "preserve_cp",
    "hardware",
    "graphs",
    "validation",
    "examples",
    "tests",
    "docs",
    "bench",
)
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.sqlite*", ".*")

#: (page, first line of the command) -> why the tests do not run it
NOT_RUN = {
    ("README.md", "python -m pytest -q"): "the test suite this test belongs to; CI runs it itself",
    ("docs/index.md", "python -m pytest -q"): "the test suite this test belongs to",
    (
        "docs/models.md",
        "$ preserve-cp models show ./config.json",
    ): "a transcript; the config.json it reads is not shipped (tests/test_hf_import.py checks "
    "the message)",
    (
        "docs/howto-sweep.md",
        "dask scheduler --port 8786",
    ): "needs a cluster (HEAD is a placeholder); tests/test_sweep.py runs a sweep on a scheduler",
}

#: (page, first line of the command) -> about the seconds it takes on 2 cores: the cases over
#: about 4 s run with -m slow (CI runs them), so the default run stays near 40 s
SLOW = {
    (
        "README.md",
        'pip install -e ".[dev]" && preserve-cp solve --model llama3-70b --hardware ascend-910b2 '
        "--phase decode --batch 4 --context 16384 --tp 8",
    ): 30,
    (
        "docs/cli.md",
        "preserve-cp solve --model llama3-70b --hardware h100-sxm --tp 8 --batch 16 --context 4096 "
        "--dtype fp8 --output-len 1024 --plans vanilla,streaming",
    ): 11,
    (
        "docs/fidelity.md",
        "preserve-cp validate",
    ): 50,
    (
        "docs/fidelity.md",
        "preserve-cp solve --model llama3-70b --hardware h100-sxm --phase decode --batch 1 \\",
    ): 5,
    (
        "docs/howto-sweep.md",
        "preserve-cp sweep examples/sweep-3points.yaml --workers 2 --store my-sweep.sqlite "
        "--export my-sweep.csv",
    ): 10,
    (
        "docs/models.md",
        "preserve-cp solve --model mixtral-8x7b --hardware h100-sxm --phase decode --batch 4 \\",
    ): 5,
    (
        "docs/multinode.md",
        "preserve-cp solve --model deepseek-v3 --hardware h200-sxm --phase decode --batch 64 "
        "--context 2048 --tp 8 --ep 8 --dtype fp8 --time-limit 120",
    ): 25,
    (
        "docs/multinode.md",
        "preserve-cp solve --model llama3.1-405b --hardware h100-sxm --phase decode --batch 16 "
        "--context 8192 --tp 8 --pp 2 --microbatches 2 --dtype fp8",
    ): 10,
    ("docs/reproduction.md", "mkdir -p out && preserve-cp reproduce paper --out out/paper"): 360,
    (
        "docs/tutorial.md",
        "preserve-cp solve --model llama3-70b --hardware ascend-910b2 --phase decode --batch 4 "
        "--context 16384 --tp 8 --gantt first-result.png --layers 0:2 --compare",
    ): 11,
    (
        "docs/tutorial.md",
        "preserve-cp sweep examples/sweep-3points.yaml --store sweep-3points.sqlite "
        "--export sweep-3points.csv",
    ): 10,
    (
        "docs/visualisation.md",
        "preserve-cp solve --model llama3-70b --hardware ascend-910b2 --phase decode --batch 4 "
        "--context 16384 --tp 8 --dtype int8 --gantt ascend.png --layers 0:2 --compare",
    ): 12,
    (
        "docs/visualisation.md",
        "preserve-cp solve --model llama3-70b --hardware h100-sxm --phase decode --batch 4 "
        "--context 16384 --tp 8 --dtype fp8 --gantt h100.png --layers 0:2 --compare",
    ): 11,
    (
        "docs/visualisation.md",
        "preserve-cp solve --model llama3-70b --hardware ascend-910b2 --phase prefill --batch 1 "
        "--context 4096 --tp 8 --dtype int8 --gantt prefill.png --layers 0:1 --compare",
    ): 4,
    (
        "docs/visualisation.md",
        "preserve-cp solve --model llama3-70b --hardware ascend-910b2 --phase decode --batch 4 "
        "--context 16384 --tp 8 --dtype int8 --report ascend-report.html --layers 0:2",
    ): 4,
}

TIMING = re.compile(r"(?<=\bin )\d+(?:\.\d+)?(?= m?s\b)|\d+(?:\.\d+)?(?=/s\))")


@dataclass(frozen=True)
class Case:
    where: str  # page:line
    page: str
    first: str  # the script's first line, less a trailing comment: the key of NOT_RUN and SLOW
    script: str
    shown: str | None  # the ```text block after it
    files: tuple[tuple[str, str], ...]  # files the page saved before it


def _pages() -> list[tuple[str, str]]:
    return [(str(p.relative_to(ROOT)), p.read_text(encoding="utf-8")) for p in PAGES]


def collect() -> tuple[list[Case], list[tuple[str, str]]]:
    """The runnable cases of every page, and the (page, first line) of every unrun command."""
    cases: list[Case] = []
    unrun: list[tuple[str, str]] = []
    for page, text in _pages():
        blocks = [(m.start(), m.group(1), m.group(2)) for m in FENCE.finditer(text)]
        files: dict[str, str] = {}
        for i, (start, tag, body) in enumerate(blocks):
            first = body.strip().splitlines()[0] if body.strip() else ""
            first = re.sub(r"\s+# .*$", "", first)  # the key is the command, not its comment
            if tag == "yaml" and (m := SAVED.match(first)):
                files[m.group(1)] = body
            elif tag == "console":
                unrun.append((page, first))
            elif tag == "text":
                unrun += [(page, line) for line in body.splitlines() if line.startswith("$ ")]
            elif tag == "bash":
                nxt = blocks[i + 1] if i + 1 < len(blocks) else None
                between = "" if nxt is None else text[start + len(body) : nxt[0]]
                heading = re.search(r"^#", between, re.M) is not None
                shown = nxt[2] if nxt is not None and nxt[1] == "text" and not heading else None
                where = f"{page}:{text.count(chr(10), 0, start) + 1}"
                case = Case(where, page, first, body, shown, tuple(sorted(files.items())))
                if (page, first) in NOT_RUN:
                    unrun.append((page, first))
                else:
                    cases.append(case)
    return cases, unrun


def _params() -> list[object]:
    cases, _ = collect()
    seen: dict[tuple[str, str | None], Case] = {}
    for c in cases:  # the same command with the same output (README and index.md) runs once
        seen.setdefault((c.script, c.shown), c)
    return [
        pytest.param(c, id=c.where, marks=[pytest.mark.slow] if (c.page, c.first) in SLOW else [])
        for c in seen.values()
    ]


def _lines(text: str) -> list[str]:
    lines = [TIMING.sub("<t>", line.rstrip()) for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def same_output(shown: str, printed: str) -> bool:
    """The tolerance rule (see the module docstring): timings match any number, trailing blanks
    are ignored, and a shown block ending with a ``...`` line is the start of the output."""
    want, got = _lines(shown), _lines(printed)
    if want and want[-1] == "...":
        want = want[:-1]
        got = got[: len(want)]
    return want == got


def expected_status(shown: str | None) -> int:
    lines = [] if shown is None else [s for s in _lines(shown) if s != "..."]
    return 2 if lines and lines[-1].startswith("preserve-cp: error:") else 0


def _workdir(tmp_path: Path, case: Case) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=IGNORED)
        elif src.is_file():
            shutil.copy2(src, work / name)
    for name, body in case.files:
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(body, encoding="utf-8")
    return work


def _env(tmp_path: Path, case: Case) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    path = [str(Path(sys.executable).parent), env.get("PATH", "")]
    if case.script.lstrip().startswith("pip install"):
        venv = tmp_path / "venv"
        subprocess.run(
            [sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
            check=True,
            capture_output=True,
        )
        path.insert(0, str(venv / "bin"))
        env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = os.pathsep.join(path)
    env["COLUMNS"] = "100"
    env["MPLBACKEND"] = "Agg"
    env["PYTHONWARNINGS"] = "ignore:Port:UserWarning"
    return env


def run_case(case: Case, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    work = _workdir(tmp_path, case)
    return subprocess.run(
        ["bash", "-c", "set -eo pipefail\n" + case.script],
        cwd=work,
        env=_env(tmp_path, case),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
    )


@pytest.mark.parametrize("case", _params())
def test_page_command_runs_as_shown(case: Case, tmp_path: Path) -> None:
    done = run_case(case, tmp_path)
    printed = done.stdout
    status = expected_status(case.shown)
    assert done.returncode == status, (
        f"{case.where}: exit {done.returncode}, expected {status}\n{printed[-3000:]}"
    )
    if case.shown is not None:
        assert same_output(case.shown, printed), (
            f"{case.where}: output differs from the page; it printed:\n{printed}"
        )


def test_every_unrun_command_is_listed() -> None:
    _, unrun = collect()
    assert sorted(set(unrun)) == sorted(NOT_RUN), "an unrun command must be listed in NOT_RUN"
    cases, _ = collect()
    firsts = {(c.page, c.first) for c in cases}
    assert set(SLOW) <= firsts, f"SLOW names commands no page has: {set(SLOW) - firsts}"
    assert {c.page for c in cases} >= {"README.md", "docs/sweep-spec.md", "docs/tutorial.md"}


def test_the_tolerance_rule() -> None:
    shown = "a\nstatus feasible, solved in 0.6 s (x)\n...\n"
    assert same_output(shown, "a\nstatus feasible, solved in 12.3 s (x)\nmore\n")
    assert not same_output(shown, "b\nstatus feasible, solved in 0.6 s (x)\n")
    assert not same_output("a\nb\n", "a\nb\nc\n")  # no "...": the whole output
    assert same_output(
        "progress: 1/3 points (0 stored before, 0.50/s)",
        "progress: 1/3 points (0 stored before, 2.25/s)\n\n",
    )
    assert not same_output(
        "prefetched 3559.3 MB in 231 chunks", "prefetched 3559.3 MB in 230 chunks"
    )
    assert expected_status("preserve-cp: error: x\n") == 2 and expected_status("ok") == 0


def refresh(page: str, tmp_root: Path) -> int:
    """Rerun the cases of ``page`` that show an output and paste what they print now (a block
    ending with ``...`` keeps its number of lines). Returns the number of blocks rewritten.
    Read the diff before keeping it: a changed number is a changed result."""
    path = ROOT / page
    text = path.read_text(encoding="utf-8")
    changed = 0
    for i, case in enumerate(c for c in collect()[0] if c.page == page and c.shown is not None):
        tmp = tmp_root / f"case{i}"
        tmp.mkdir(parents=True)
        done = run_case(case, tmp)
        printed = done.stdout
        if same_output(case.shown or "", printed):
            continue
        lines = [line.rstrip() for line in printed.rstrip("\n").splitlines()]
        shown = (case.shown or "").rstrip("\n").splitlines()
        if shown and shown[-1] == "...":
            lines = [*lines[: len(shown) - 1], "..."]
        old = f"```bash\n{case.script}```\n"
        head, sep, tail = text.partition(old)
        assert sep, f"{case.where}: block not found"
        before, fence, after = tail.partition(f"```text\n{case.shown}```")
        assert fence, f"{case.where}: output block not found"
        text = head + sep + before + "```text\n" + "\n".join(lines) + "\n```" + after
        changed += 1
        print(f"{case.where}: exit {done.returncode}; output rewritten")
    path.write_text(text, encoding="utf-8")
    return changed


if __name__ == "__main__":  # python tests/test_doc_commands.py docs/PAGE.md ...
    import tempfile

    with tempfile.TemporaryDirectory() as tmp_dir:
        for arg in sys.argv[1:]:
            print(f"{arg}: {refresh(arg, Path(tmp_dir) / Path(arg).stem)} block(s) rewritten")
