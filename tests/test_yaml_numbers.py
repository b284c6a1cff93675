"""Numbers in YAML must be numbers: a quoted number in a hardware, model or sweep file is one
error line naming the file and the field, never silently read as a number."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from preserve_cp.cli import main
from preserve_cp.errors import InputError
from preserve_cp.hardware import load_hardware
from preserve_cp.models import load_model
from preserve_cp.sweep import load_spec

ROOT = Path(__file__).resolve().parent.parent


def _quote(src: str, key: str, value: str, dst) -> None:
    text = (ROOT / src).read_text(encoding="utf-8")
    new, n = re.subn(
        rf"(?m)^(\s*{re.escape(key)}:\s*){re.escape(value)}\s*$", rf'\g<1>"{value}"', text
    )
    assert n == 1, f"{key}: {value} not found once in {src}"
    dst.write_text(new, encoding="utf-8")


@pytest.mark.parametrize(
    "key, value, field",
    [
        ("hbm_bandwidth_tb_per_s", "3.35", "memory.hbm_bandwidth_tb_per_s"),
        ("devices_per_node", "8", "interconnect.devices_per_node"),
    ],
)
def test_quoted_number_in_hardware_file(tmp_path, capsys, key, value, field):
    path = tmp_path / "hw.yaml"
    _quote("hardware/h100-sxm.yaml", key, value, path)
    want = f"{path}: {field}: expected a number, found the string '{value}'"
    with pytest.raises(InputError) as err:
        load_hardware(str(path))
    assert str(err.value) == want
    assert main(["hardware", "show", str(path)]) == 2
    assert capsys.readouterr().err == f"preserve-cp: error: {want}\n"


@pytest.mark.parametrize(
    "key, value", [("num_layers", "32"), ("hidden_size", "4096"), ("max_context", "8192")]
)
def test_quoted_number_in_model_file(tmp_path, capsys, key, value):
    path = tmp_path / "m.yaml"
    _quote("graphs/llama3-8b.yaml", key, value, path)
    want = f"{path}: {key}: expected a number, found the string '{value}'"
    with pytest.raises(InputError) as err:
        load_model(str(path))
    assert str(err.value) == want
    args = ["solve", "--model", str(path), "--hardware", "h100-sxm", "--plans", "vanilla"]
    assert main(args) == 2
    done = capsys.readouterr()
    assert done.out == "" and done.err == f"preserve-cp: error: {want}\n"


def test_quoted_number_in_sweep_spec(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        'models: [llama3-8b]\nhardware: [h100-sxm]\nbatch: [1, "4"]\n', encoding="utf-8"
    )
    with pytest.raises(InputError, match=r"s\.yaml: batch\.1: expected a number, found the "):
        load_spec(spec)


def test_strings_that_are_strings_stay_fine():
    """Every shipped file still loads (their strings are names, dtypes, URLs...)."""
    from preserve_cp.hardware import list_hardware
    from preserve_cp.models import list_models

    for name in list_hardware():
        load_hardware(name)
        load_hardware(name, calibrated=False)
    for name in list_models():
        load_model(name)
