"""Help, defaults and names: every option says its default, ``--debug`` goes anywhere, a
mistyped name gets a suggestion, argparse never shows an internal name, ``Workload(dtype=)``."""

from __future__ import annotations

import argparse

import pytest

from preserve_cp import InputError, Workload
from preserve_cp.cli import _parser, _subparsers, main


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)
    ]


def test_every_option_has_help_with_its_default():
    top = _parser()
    missing = []
    for parser in [top, *_subparsers(top)]:
        formatter = parser._get_formatter()
        for action in _options(parser):
            name = f"{parser.prog} {action.option_strings[0]}"
            assert action.help, f"{name}: no help text"
            if isinstance(action, argparse._StoreTrueAction) or action.required:
                continue  # a flag (off unless given), or nothing to default to
            shown = formatter._get_help_string(action) % {"default": action.default}
            if "default" not in shown:
                missing.append(f"{name}: {shown!r}")
        # and the rendered page says it, once per option that takes a value
        takes_value = [
            a
            for a in _options(parser)
            if not isinstance(a, argparse._StoreTrueAction) and not a.required
        ]
        rendered = parser.format_help().count("default")
        if rendered < len(takes_value):
            missing.append(f"{parser.prog}: {rendered} defaults shown for {len(takes_value)}")
    assert not missing, "help does not show the default:\n" + "\n".join(missing)


def test_solve_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit) as done:
        main(["solve", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo the line wrapping
    for shown in (
        "(default: decode)",
        "(default: 1)",
        "(default: 2048)",
        "(default: bf16)",
        "(default: 30.0)",
        "CP-SAT random seed (default: 0)",
    ):
        assert shown in text, shown


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_before_or_after_the_command(where, capsys):
    args = ["solve", "--model", "no-such-model", "--hardware", "h100-sxm"]
    args = ["--debug", *args] if where == "before" else [*args, "--debug"]
    with pytest.raises(InputError, match="unknown model"):
        main(args)  # --debug: the exception propagates (the traceback)
    assert main(args[1:] if where == "before" else args[:-1]) == 2  # without: one line
    assert capsys.readouterr().err.startswith("preserve-cp: error: unknown model")


def test_debug_after_a_nested_command(capsys):
    with pytest.raises(InputError):
        main(["hardware", "show", "no-such-device", "--debug"])


@pytest.mark.parametrize(
    ("flag", "typo", "message"),
    [
        ("--hardware", "h100-sx", "unknown hardware 'h100-sx': did you mean h100-sxm?"),
        ("--model", "lama3-70b", "unknown model 'lama3-70b': did you mean llama3-70b?"),
    ],
)
def test_did_you_mean(flag, typo, message, capsys):
    args = ["solve", "--model", "llama3-8b", "--hardware", "h100-sxm"]
    args[args.index(flag) + 1] = typo
    assert main(args) == 2
    assert capsys.readouterr().err == f"preserve-cp: error: {message}\n"


def test_a_name_nothing_like_any_lists_them(capsys):
    assert main(["hardware", "show", "zzzz"]) == 2
    err = capsys.readouterr().err
    assert "expected one of" in err and "h100-sxm" in err and "did you mean" not in err


@pytest.mark.parametrize(
    ("args", "internal"),
    [(["reproduce", "foo", "--out", "x"], "what"), (["hardware"], "sub"), ([], "cmd")],
)
def test_argparse_errors_do_not_leak_internal_names(args, internal, capsys):
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("preserve-cp: error:") and len(err.splitlines()) == 1
    assert f"argument {internal}" not in err and f"required: {internal}" not in err


def test_workload_dtype_sets_every_precision():
    wl = Workload("decode", dtype="fp8")
    assert (wl.weight_dtype, wl.act_dtype, wl.kv_dtype) == ("fp8", "fp8", "fp8")
    mixed = Workload("decode", dtype="int8", kv_dtype="fp8")
    assert (mixed.weight_dtype, mixed.act_dtype, mixed.kv_dtype) == ("int8", "int8", "fp8")
    assert Workload("decode").kv_dtype == "bf16"
    assert Workload("decode", dtype="bf16") == Workload("decode")
    assert "dtype" not in Workload("decode", dtype="fp8").to_dict()
    with pytest.raises(InputError, match="workload: dtype: expected one of"):
        Workload("decode", dtype="fp5")


def test_context_past_max_context_warns_once(capsys):
    args = ["footprint", "--model", "llama3-70b", "--devices", "8"]
    assert main([*args, "--context", "16384"]) == 0
    err = capsys.readouterr().err
    assert err == (
        "preserve-cp: warning: context 16384 exceeds llama3-70b's max_context 8192; "
        "modelled as asked\n"
    )
    assert main([*args, "--context", "8192"]) == 0
    assert capsys.readouterr().err == ""
