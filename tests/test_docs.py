"""The docs stay true: figures build, links resolve, generated blocks and examples match."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import preserve_cp as pc
from preserve_cp import units

DOCS = Path(__file__).resolve().parent.parent / "docs"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURE_LINK = re.compile(r"!\[[^\]]*\]\((figures/[^)\s]+)\)")
#: figures of reproduction.md, written by `preserve-cp reproduce paper`, not by build_figures.py
PAPER_PREFIX = "paper-"
MOE_STUDY_PREFIX = "moe-study-"
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)


def _load(script: str) -> ModuleType:
    """Import a script of docs/ (not a package) as a module."""
    path = DOCS / script
    if str(DOCS) not in sys.path:  # as when run: the scripts import docs/_docgen.py
        sys.path.insert(0, str(DOCS))
    spec = importlib.util.spec_from_file_location(f"_docs_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def _page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _blocks(page: str, lang: str) -> list[str]:
    return [body for tag, body in FENCE.findall(_page(page)) if tag == lang]


# --- figures ----------------------------------------------------------------------------------


def test_build_figures_writes_every_png(tmp_path: Path) -> None:
    out = tmp_path / "figs"
    done = subprocess.run(
        [sys.executable, str(DOCS / "build_figures.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    expected = _load("build_figures.py").expected_files()
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    for name in expected:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name


def test_pages_only_show_figures_that_exist_and_are_built() -> None:
    built = set(_load("build_figures.py").expected_files())
    shown: set[str] = set()
    for page in sorted(DOCS.glob("*.md")):
        for link in FIGURE_LINK.findall(page.read_text(encoding="utf-8")):
            assert (DOCS / link).is_file(), f"{page.name}: {link} is not in docs/figures"
            shown.add(Path(link).name)
    assert shown, "no page shows a figure"
    # reproduction.md's pictures come from `preserve-cp reproduce paper`, moe.md's study from
    # `preserve-cp reproduce moe` (minutes, not seconds)
    paper = {n for n in shown if n.startswith(PAPER_PREFIX)}
    if paper:
        assert "preserve-cp reproduce paper" in _page("reproduction.md")
    study = {n for n in shown if n.startswith(MOE_STUDY_PREFIX)}
    if study:
        assert "preserve-cp reproduce moe" in _page("moe.md")
    missing = shown - paper - study - built
    assert not missing, f"shown but not rebuilt by build_figures.py: {missing}"
    for name in built:
        assert (DOCS / "figures" / name).read_bytes()[:8] == PNG_MAGIC, name


def test_links_between_pages_resolve() -> None:
    for page in sorted(DOCS.glob("*.md")):
        for target in re.findall(r"\]\(([\w.-]+\.md)(?:#[\w-]+)?\)", page.read_text("utf-8")):
            assert (DOCS / target).is_file(), f"{page.name}: link to missing {target}"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_to_sections_resolve() -> None:
    pages = [*sorted(DOCS.glob("*.md")), DOCS.parent / "README.md"]
    for page in pages:
        for target, anchor in re.findall(r"\]\(([\w.-]+\.md)?#([\w-]+)\)", page.read_text("utf-8")):
            text = (DOCS / target if target else page).read_text("utf-8")
            text = FENCE.sub("", text)  # a '#' line in a code block is not a heading
            anchors = {_anchor(h) for h in re.findall(r"^#+ (.*)$", text, re.M)}
            assert anchor in anchors, f"{page.name}: link to missing section {target}#{anchor}"


# --- generated blocks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "script", ["gen_hardware_doc.py", "gen_api_doc.py", "gen_fidelity_doc.py", "gen_cli_doc.py"]
)
def test_generated_block_matches_the_code(script: str) -> None:
    gen = _load(script)
    text = gen.DOC.read_text(encoding="utf-8")
    assert gen.splice(text, gen.render()) == text, f"stale: run python docs/{script}"


def test_hardware_table_lists_every_schema_field() -> None:
    from preserve_cp.hardware import HardwareSpec

    gen = _load("gen_hardware_doc.py")
    block = _page("hardware.md").split(gen.BEGIN)[1]
    for _, model, _ in gen.SECTIONS:
        for name in model.model_fields:
            assert f"| `{name}` |" in block, name
    assert {m for _, m, _ in gen.SECTIONS} >= {HardwareSpec}


def test_api_reference_covers_all_exports() -> None:
    text = _page("api.md")
    for name in pc.__all__:
        assert f"### `{name}`" in text, name


# --- hardware.md ------------------------------------------------------------------------------

#: (text in the example, replacement, the message hardware.md quotes)
HW_MISTAKES = [
    (
        "l2_bandwidth_tb_per_s: 6.0",
        "l2_bandwith_tb_per_s: 6.0",
        "my-npu.yaml: memory.l2_bandwidth_tb_per_s: required field is missing",
    ),
    (
        "  hbm_bandwidth_tb_per_s: 2.0\n",
        "  hbm_bandwidth_tb_per_s: 2.0\n  hbm_efficency: 0.8\n",
        "my-npu.yaml: memory.hbm_efficency: unknown field (check the spelling)",
    ),
    (
        "  l2_capacity_mib: 128\n",
        "  l2_capacity_mib: 128\n  l2_capacity_mb: 134\n",
        "my-npu.yaml: memory: expected exactly one of l2_capacity_mb / l2_capacity_mib",
    ),
    (
        "  - memory.l2_bandwidth_tb_per_s ",
        "  - memory.l2_bw_tb_per_s ",
        "my-npu.yaml: (top level): expected field paths that exist "
        "(uncertain: 'memory.l2_bw_tb_per_s' does not)",
    ),
    (
        "hbm_bandwidth_tb_per_s: 2.0",
        "hbm_bandwidth_tb_per_s: -2",
        "my-npu.yaml: memory.hbm_bandwidth_tb_per_s: expected a finite number > 0, found -2",
    ),
]


def test_hardware_example_file_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (example,) = _blocks("hardware.md", "yaml")
    path = tmp_path / "my-npu.yaml"
    path.write_text(example, encoding="utf-8")
    hw = pc.load_hardware(path)
    assert hw.name == "my-npu"
    assert hw.l2_capacity_bytes == 128 * units.MIB
    assert hw.hbm_capacity_bytes == 64 * units.GIB
    assert round(hw.usable_l2_bytes / units.MB, 1) == 100.7  # as the page says
    assert hw.uncertain == ("memory.l2_bandwidth_tb_per_s",)
    monkeypatch.chdir(tmp_path)
    assert pc.load_hardware("my-npu.yaml").name == "my-npu"  # by relative path, as shown


@pytest.mark.parametrize(("old", "new", "message"), HW_MISTAKES)
def test_hardware_mistakes_say_what_the_page_says(
    old: str, new: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert f"`{message}`" in _page("hardware.md")
    (example,) = _blocks("hardware.md", "yaml")
    assert old in example
    (tmp_path / "my-npu.yaml").write_text(example.replace(old, new), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(pc.InputError) as err:
        pc.load_hardware("my-npu.yaml")
    assert str(err.value) == message


# --- models.md --------------------------------------------------------------------------------

MODEL_MISTAKES = [
    (
        "num_kv_heads: 4",
        "num_kv_heads: 6",
        "my-model.yaml: (top level): expected num_heads (16) to be a multiple of num_kv_heads (6)",
    ),
    (
        "sliding_window_layers: even\n",
        "",
        "my-model.yaml: (top level): expected sliding_window and sliding_window_layers to be "
        "given together",
    ),
    (
        "num_layers: 8",
        "num_layers: 0",
        "my-model.yaml: num_layers: expected greater than 0, found 0",
    ),
    (
        "sliding_window_layers: even\n",
        "sliding_window_layers: even\nmlp: swiglu\n",
        "my-model.yaml: mlp: expected 'gated' or 'plain', found 'swiglu'",
    ),
]


def test_model_example_file_and_tp_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (example,) = _blocks("models.md", "yaml")
    (tmp_path / "my-model.yaml").write_text(example, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    m = pc.load_model("my-model.yaml")
    assert (m.num_layers, m.num_heads, m.num_kv_heads, m.mlp) == (8, 16, 4, "gated")
    assert [m.uses_window(i) for i in range(4)] == [True, False, True, False]
    page = _page("models.md")
    for model, tp, fragment in (("qwen2-7b", 8, "qwen2-7b: tp 8 does not divide num_heads 28"),):
        with pytest.raises(pc.InputError) as err:
            pc.build_graph(model, pc.Workload("decode", tp=tp))
        assert f"preserve-cp: error: {err.value}" in page
        assert fragment in str(err.value)
    wide = m.model_copy(update={"intermediate_size": 5630})
    with pytest.raises(pc.InputError) as err:
        pc.build_graph(wide, pc.Workload("decode", tp=4))
    assert f"`preserve-cp: error: {err.value}`" in page


@pytest.mark.parametrize(("old", "new", "message"), MODEL_MISTAKES)
def test_model_mistakes_say_what_the_page_says(
    old: str, new: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert f"`{message}`" in _page("models.md")
    (example,) = _blocks("models.md", "yaml")
    assert old in example
    (tmp_path / "my-model.yaml").write_text(example.replace(old, new, 1), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(pc.InputError) as err:
        pc.load_model("my-model.yaml")
    assert str(err.value) == message


def test_model_field_table_lists_every_field() -> None:
    page = _page("models.md")
    for name in pc.ModelConfig.model_fields:
        assert f"| `{name}` |" in page, name


# --- python examples --------------------------------------------------------------------------

OUTPUT = re.compile(r"```python\n(.*?)```\s*\nOutput:\s*\n```text\n(.*?)```", re.S)


@pytest.mark.parametrize("page", ["models.md", "visualisation.md", "api.md"])
def test_python_examples_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ```python block that is code (not a generated signature) runs; shown output matches."""
    text = _page(page)
    expected = {code: out for code, out in OUTPUT.findall(text)}
    blocks = [b for b in _blocks(page, "python") if "import preserve_cp" in b]
    assert blocks, f"{page}: no runnable example"
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(compile(code, f"{page} example", "exec"), {"__name__": "__docs__"})
        if code in expected:
            assert buf.getvalue() == expected[code], f"{page}: output differs"


# --- sweep-spec.md ----------------------------------------------------------------------------

SWEEP_EXAMPLE = DOCS.parent / "examples" / "sweep-3points.yaml"

#: (text in the shipped example, replacement, the message sweep-spec.md quotes)
SWEEP_MISTAKES = [
    ("models: [llama3-8b]\n", "", "sweep-3points.yaml: models: required field is missing"),
    ("batch: [4]", "batch: 4", "sweep-3points.yaml: batch: expected a valid list, found 4"),
    (
        "dtype: [bf16]",
        "dtype: [int4]",
        "sweep-3points.yaml: dtype: expected one of fp16, bf16, fp8, int8, fp4, nvfp4, "
        "found 'int4'",
    ),
    (
        "l2_capacity_mb: [25, 50, 100]",
        "l2_size_mb: [25, 50, 100]",
        "sweep-3points.yaml: l2_size_mb: unknown override; expected one of collective_latency_us, "
        "hbm_bandwidth_tb_per_s, hbm_capacity_gb, kernel_overhead_us, l2_bandwidth_tb_per_s, "
        "l2_capacity_mb, l2_capacity_mib, l2_prefetch_fraction, link_bandwidth_gb_per_s",
    ),
    (
        "l2_capacity_mb: [25, 50, 100]",
        "l2_capacity_mb: [-1]",
        "sweep-3points.yaml: l2_capacity_mb: expected a number >= 0, found -1.0",
    ),
    (
        "time_limit_s: 30",
        "time_limit_s: 0",
        "sweep-3points.yaml: solve.time_limit_s: expected greater than 0, found 0",
    ),
]


def test_sweep_spec_example_is_the_shipped_file_with_three_points() -> None:
    from preserve_cp.sweep import expand, load_spec

    (example, *_) = _blocks("sweep-spec.md", "yaml")
    assert example == SWEEP_EXAMPLE.read_text(encoding="utf-8")
    points = expand(load_spec(SWEEP_EXAMPLE))
    assert len(points) == len({p.key for p in points}) == 3
    assert [p.overrides for p in points] == [{"l2_capacity_mb": v} for v in (25.0, 50.0, 100.0)]


def test_sweep_spec_lists_every_key() -> None:
    from preserve_cp.sweep import OVERRIDES, SweepSpec
    from preserve_cp.sweep.run import RESULT_FIELDS
    from preserve_cp.sweep.spec import SolveSpec

    page = _page("sweep-spec.md")
    example = SWEEP_EXAMPLE.read_text(encoding="utf-8")
    for name in SweepSpec.model_fields:
        assert f"| `{name}` |" in page, name
        # `plans` puts every point on the fast path; the example runs the optimiser
        assert f"\n{name}:" in example or name == "plans", f"the example does not use {name}"
    for name in SolveSpec.model_fields:
        assert f"| `{name}` |" in page, name
        assert f"  {name}:" in example, f"the example does not use solve.{name}"
    for name in OVERRIDES:
        assert f"| `{name}` |" in page, name
    for name in RESULT_FIELDS:
        assert f"`{name}`" in page, name


@pytest.mark.parametrize(("old", "new", "message"), SWEEP_MISTAKES)
def test_sweep_mistakes_say_what_the_page_says(
    old: str, new: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from preserve_cp.sweep import expand, load_spec

    assert f"`{message}`" in _page("sweep-spec.md")
    example = SWEEP_EXAMPLE.read_text(encoding="utf-8")
    assert old in example
    (tmp_path / "sweep-3points.yaml").write_text(example.replace(old, new), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(pc.InputError) as err:
        expand(load_spec("sweep-3points.yaml"), where="sweep-3points.yaml")
    assert str(err.value) == message
