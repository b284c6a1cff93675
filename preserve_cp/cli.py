"""``preserve-cp``: a thin command line over the library (parse, call, print).

Every user mistake is one line on stderr and exit status 2; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import units
from .comm import collectives_by_kind
from .defaults import DEFAULT_BATCH, DEFAULT_CONTEXT, DEFAULT_DTYPE, DEFAULT_PHASE, DEFAULT_TP
from .deploy import request_latency
from .describe import solve_inputs
from .errors import InputError, PreserveError, input_error
from .estimate import estimate, parse_plans
from .graph import build_graph
from .hardware import TIMINGS, Hardware, hardware_label, list_hardware, load_hardware
from .hf_import import import_config, load_model, model_yaml
from .measured import timing_line
from .models import list_models
from .outputs import check_output, is_stdout, output_folder, require_folder, write_output
from .plan import Result
from .serving import serving_lines, step_serving
from .solve import SolveOptions, solve
from .viz._io import FIGURE_SUFFIXES
from .workload import (
    ALL_TO_ALL_KINDS,
    ALLREDUCE_IMPLS,
    ATTENTION_LAYOUTS,
    DTYPES,
    KV_READS,
    LM_HEAD_MODES,
    Workload,
)

_UNCAL_HELP = "ignore the hardware file's calibration section (use the written priors)"
_TIMING_HELP = (
    "op times: roofline (the cost model), or measured: NVIDIA's per-kernel tables for the GEMMs "
    "and attention they cover on devices whose file has a measured section (needs "
    'pip install "preserve-cp[measured]"; docs/fidelity.md); default: the hardware file\'s, '
    "roofline unless its measured section says default: true"
)
_DEBUG_HELP = "show tracebacks (accepted before or after the command)"
_NO_PROGRESS_HELP = "no progress line on stderr"
_MODEL_HELP = "shipped model NAME, a model YAML path or a Hugging Face config.json path"
_SCHEDULER_HELP = "tcp://HOST:PORT of a running Dask scheduler (default: a local cluster)"


def _warn_context(model: Any, context: int) -> None:
    """One warning line (not an error) when ``context`` is past the model's ``max_context``."""
    if context > model.max_context:
        sys.stderr.write(
            f"preserve-cp: warning: context {context} exceeds {model.name}'s max_context "
            f"{model.max_context}; modelled as asked\n"
        )


def _check_workers(workers: int) -> None:
    if not 1 <= workers <= 256:
        raise input_error("--workers", "value", "an integer in [1, 256]", workers)


def _claim_outputs(outputs: dict[str, str | None], json_flag: str = "") -> bool:
    """Check every output path before any work is done (nothing is written on a refusal).

    At most one thing goes to standard output (``-``): ``json_flag`` (when set) or one file
    option. Returns True when a file option takes it; the command's summary then goes to
    stderr.
    """
    claims = [json_flag] if json_flag else []
    claims += [f"{flag} {p}" for flag, p in outputs.items() if p and is_stdout(p)]
    if len(claims) > 1:
        raise InputError(
            f"{claims[1]}: standard output already carries {claims[0]}; "
            "give one of them a file name"
        )
    for flag, p in outputs.items():
        if p:
            check_output(p, flag)
    return bool(claims) and not json_flag


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, except flags (off unless given) and options
    whose help says what their absence means."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is False or action.default == argparse.SUPPRESS or "default" in text:
            return text
        if action.default is None:
            return f"{text} (default: none)" if action.option_strings else text
        return super()._get_help_string(action) or text


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:  # one line, exit 2
        sys.stderr.write(f"preserve-cp: error: {message}\n")
        raise SystemExit(2)


def _subparsers(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every subcommand's parser, nested ones too."""
    out = []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sp in action.choices.values():
                out += [sp, *_subparsers(sp)]
    return out


def _add_step_options(p: argparse.ArgumentParser) -> None:
    """--model, --hardware and the step's shape: phase, batch, context, tp (solve, export).

    Every workload option's default is the API's (:mod:`preserve_cp.defaults`)."""
    p.add_argument("--model", required=True, help=_MODEL_HELP)
    p.add_argument("--hardware", required=True, help="shipped hardware NAME or a YAML path")
    p.add_argument(
        "--phase",
        choices=("decode", "prefill"),
        default=DEFAULT_PHASE,
        help="decode: one new token per sequence; prefill: the whole prompt",
    )
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="sequences in the step")
    p.add_argument(
        "--context",
        type=int,
        default=DEFAULT_CONTEXT,
        help="KV length (decode) or prompt length (prefill), tokens",
    )
    p.add_argument("--tp", type=int, default=DEFAULT_TP, help="tensor-parallel degree")


def _add_precisions(p: argparse.ArgumentParser, dtype_help: str) -> None:
    """--dtype and the --weight/act/kv-dtype overrides (read by :func:`_precisions`)."""
    p.add_argument("--dtype", choices=DTYPES, default=DEFAULT_DTYPE, help=dtype_help)
    for kind in ("weight", "act", "kv"):
        p.add_argument(
            f"--{kind}-dtype",
            choices=DTYPES,
            default=None,
            help=f"override the {kind} dtype (default: --dtype)",
        )


def _precisions(args: argparse.Namespace) -> dict[str, Any]:
    """The Workload precisions of :func:`_add_precisions`'s options."""
    return {
        f"{kind}_dtype": getattr(args, f"{kind}_dtype") or args.dtype
        for kind in ("weight", "act", "kv")
    }


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="preserve-cp",
        description="Optimal HBM->L2 prefetch plans for tensor-parallel LLM inference (CP-SAT).",
    )
    p.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", required=True, parser_class=_Parser)

    s = sub.add_parser("solve", help="optimise one model x workload x hardware")
    _add_step_options(s)
    _add_precisions(s, "weights, activations and KV-cache together")
    s.add_argument(
        "--eager",
        action="store_true",
        help="the stack launches kernels eagerly (no CUDA graphs / graph capture)",
    )
    s.add_argument(
        "--allreduce",
        choices=ALLREDUCE_IMPLS,
        default="nccl",
        help="nccl: library α-β allreduce; custom: one-shot/two-shot kernel for small messages",
    )
    s.add_argument(
        "--lm-head",
        choices=LM_HEAD_MODES,
        default="sharded",
        help="LM head split over the TP ranks or replicated on each",
    )
    s.add_argument(
        "--routing",
        default="uniform",
        action=_Given,
        help="MoE models: expert popularity, uniform, zipf:S (S >= 0; skewed) or FILE.json, a "
        "router trace of per-layer expert counts (docs/models.md); sets the distinct experts "
        "a step reads. Given on an MoE decode step (even as uniform), it also plans under "
        "routing uncertainty (router-aware prefetch, docs/moe.md)",
    )
    s.add_argument(
        "--predictor-accuracy",
        type=float,
        default=None,
        metavar="A",
        help="MoE decode: router-aware prefetch with an expert predictor of accuracy A in "
        "[0, 1] (precision = recall = A; published next-layer predictors: 0.8-0.98, "
        "docs/moe.md); default 0.9 when --routing is given, else off",
    )
    s.add_argument(
        "--predictor-trace",
        default=None,
        metavar="FILE",
        help="MoE decode: router-aware prefetch on a predictor's log instead of "
        "--predictor-accuracy: FILE.jsonl holds per step and MoE layer the predicted and the "
        "actual expert ids (docs/moe.md); each step one scenario, in file order",
    )
    s.add_argument(
        "--scenarios",
        type=int,
        default=16,
        metavar="N",
        help="router-aware prefetch: routing scenarios sampled first (seeded by --seed; with "
        "--predictor-trace the trace's first N steps); more (up to 256, or the trace's steps) "
        "when the expected step's 95 %% confidence half-width exceeds 0.5 %%",
    )
    s.add_argument(
        "--ep",
        type=int,
        default=1,
        help="expert-parallel degree for MoE layers: experts spread over ep of the tp ranks "
        "(ep x tp/ep per expert), tokens dispatched and combined by all-to-all",
    )
    s.add_argument(
        "--attention",
        choices=ATTENTION_LAYOUTS,
        default="tp",
        help="tp: attention split over the tp ranks; dp: data-parallel attention (each rank "
        "batch/tp sequences, whole attention weights; needs --ep equal to --tp)",
    )
    s.add_argument(
        "--all-to-all",
        choices=ALL_TO_ALL_KINDS,
        default="low_latency",
        help="MoE dispatch/combine kernels: low_latency (DeepEP's decode kernels) or normal",
    )
    s.add_argument(
        "--kv-reads",
        choices=KV_READS,
        default="per_kv_head",
        help="how decode attention reads a grouped-query KV cache: per_kv_head (once per KV "
        "head, as today's kernels) or per_query_head (once per query head, as multi-head "
        "kernels such as TensorRT-LLM's masked MHA before v0.7)",
    )
    s.add_argument(
        "--pp",
        type=int,
        default=1,
        help="pipeline stages (each on its own tp devices; every stage is solved)",
    )
    s.add_argument(
        "--microbatches",
        type=int,
        default=1,
        help="micro-batches the batch is cut into for the pipeline (divides --batch)",
    )
    s.add_argument(
        "--stack",
        default="",
        help="software stack name selecting the hardware file's per-step overhead "
        "(e.g. vllm; default: the file's default)",
    )
    s.add_argument("--uncalibrated", action="store_true", help=_UNCAL_HELP)
    s.add_argument("--timing", choices=TIMINGS, default=None, help=_TIMING_HELP)
    s.add_argument(
        "--time-limit",
        type=float,
        default=30.0,
        help="seconds for the whole solve; status time_limit when it cut a stage",
    )
    s.add_argument(
        "--work-limit",
        type=float,
        default=0.25,
        help="CP-SAT deterministic work per model: more searches longer; "
        "the same value gives the same plan on any machine load",
    )
    s.add_argument(
        "--workers", type=int, default=2, help="accepted for sweeps; a solve searches on one thread"
    )
    s.add_argument("--seed", type=int, default=0, help="CP-SAT random seed")
    s.add_argument(
        "--budget-fraction",
        type=float,
        default=1.0,
        help="greedy baseline: share of usable L2 per window",
    )
    s.add_argument(
        "--plans",
        metavar="LIST",
        help="fast path: only these baselines, no optimiser (comma-separated from "
        "vanilla,greedy,streaming,fused; status baselines; default: all and the optimiser)",
    )
    s.add_argument(
        "--output-len",
        type=int,
        metavar="N",
        help="decode: also one request's latency: prefill of --context prompt tokens, then N "
        "decode steps at growing context (solved, or --plans, at 9 contexts; default: none)",
    )
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.add_argument(
        "--trace", metavar="FILE", help="write a Perfetto/Chrome trace (-: standard output)"
    )
    s.add_argument(
        "--gantt",
        metavar="FILE",
        help="write a Gantt picture (.svg or .png; -: SVG to stdout); with router-aware "
        "prefetch also FILE with .router before the suffix: the router-aware plan on one "
        "routing scenario, speculative chunks split into read and wasted bytes",
    )
    s.add_argument(
        "--report", metavar="FILE", help="write a self-contained HTML report (-: standard output)"
    )
    s.add_argument(
        "--layers",
        metavar="A:B",
        help="zoom the Gantt/report to layers A..B (default: the whole step)",
    )
    s.add_argument(
        "--compare",
        action="store_true",
        help="Gantt and trace show vanilla, greedy, streaming and optimised together",
    )

    cp = sub.add_parser(
        "capacity", help="largest decode batch whose weights, KV-cache and activations fit"
    )
    cp.add_argument("--model", required=True, help=_MODEL_HELP)
    cp.add_argument("--hardware", required=True, help="shipped hardware NAME or a YAML path")
    cp.add_argument(
        "--context", type=int, default=DEFAULT_CONTEXT, help="KV length per sequence, tokens"
    )
    cp.add_argument("--tp", type=int, default=DEFAULT_TP, help="tensor-parallel degree")
    _add_precisions(cp, "weights, activations and KV-cache")
    cp.add_argument(
        "--memory-utilization",
        type=float,
        default=0.9,
        help="share of HBM the serving stack may fill (vLLM's gpu_memory_utilization)",
    )
    cp.add_argument("--stack", default="", help="software stack (per-step overhead; see solve)")
    cp.add_argument("--routing", default="uniform", help="MoE expert popularity (see solve)")
    cp.add_argument("--uncalibrated", action="store_true", help=_UNCAL_HELP)
    cp.add_argument("--timing", choices=TIMINGS, default=None, help=_TIMING_HELP)
    cp.add_argument(
        "--solve", action="store_true", help="also optimise the decode step at that batch"
    )
    cp.add_argument(
        "--time-limit", type=float, default=30.0, help="seconds for the solve (--solve)"
    )
    cp.add_argument("--json", action="store_true", help="print the answer as JSON")

    ex = sub.add_parser(
        "export",
        help="turn an optimised plan into a serving stack's prefetch configuration",
    )
    ex.add_argument(
        "target",
        choices=["vllm-ascend"],
        help="vllm-ascend: additional_config.weight_prefetch_config (per-kind prefetch ratios)",
    )
    _add_step_options(ex)
    _add_precisions(ex, "weights, activations and KV-cache together")
    ex.add_argument(
        "--time-limit", type=float, default=30.0, help="seconds for the solve behind it"
    )
    ex.add_argument("--uncalibrated", action="store_true", help=_UNCAL_HELP)
    ex.add_argument("--timing", choices=TIMINGS, default=None, help=_TIMING_HELP)
    ex.add_argument("--out", metavar="FILE", help="write the JSON there (default: stdout)")

    f = sub.add_parser("footprint", help="per-layer footprint per device (paper Fig. 2)")
    f.add_argument("--model", required=True, help=_MODEL_HELP)
    f.add_argument("--dtype", choices=DTYPES, default=DEFAULT_DTYPE, help="weights and KV-cache")
    f.add_argument(
        "--kv-dtype", choices=DTYPES, default=None, help="override the KV dtype (default: --dtype)"
    )
    f.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="sequences")
    f.add_argument("--context", type=int, default=DEFAULT_CONTEXT, help="KV length, tokens")
    f.add_argument("--devices", default="1,2,4,8,16,32", help="comma-separated device counts")
    f.add_argument("--json", action="store_true", help="print the rows as JSON")
    f.add_argument("--plot", metavar="FILE", help="write the plot (.svg or .png; -: SVG to stdout)")

    va = sub.add_parser("validate", help="compare the model with published measurements")
    va.add_argument("--set", help="measurements YAML (default: the shipped validation set)")
    va.add_argument("--json", action="store_true", help="print the comparison as JSON")
    va.add_argument(
        "--out",
        metavar="DIR",
        help="write validation.csv and validation.png into DIR (created; its parent must "
        "exist; default: write no file)",
    )
    va.add_argument(
        "--plot",
        metavar="FILE",
        help="write the signed-error plot (.svg or .png; -: SVG to stdout; default: no plot)",
    )
    va.add_argument("--uncalibrated", action="store_true", help=_UNCAL_HELP)
    va.add_argument("--timing", choices=TIMINGS, default=None, help=_TIMING_HELP)
    va.add_argument(
        "--compare",
        action="store_true",
        help="also run the installed peer tools (aiconfigurator, GenZ, llm-analysis: "
        'pip install "preserve-cp[peers]") on the same points with the same mapping and print '
        "the median |error| of each per group instead of the table (--json: every point's "
        "predictions; a peer not installed is a line saying so)",
    )

    ca = sub.add_parser(
        "calibrate", help="fit a device's cost-model parameters to the training points"
    )
    ca.add_argument("hardware", help="shipped hardware NAME or a YAML path")
    ca.add_argument("--set", help="measurements YAML (default: the shipped validation set)")
    ca.add_argument(
        "--write",
        action="store_true",
        help="replace the file's calibration section (otherwise print it)",
    )
    ca.add_argument("--date", help="date recorded in the section (default: today)")

    rp = sub.add_parser("reproduce", help="reproduce a paper's studies")
    rp.add_argument(
        "what",
        metavar="STUDY",
        choices=("paper", "moe"),
        help="what to reproduce: paper (its studies) or moe (the router-aware prefetch study: "
        "MoE models x devices over batch, predictor accuracy, routing skew and L2 size; "
        "docs/moe.md)",
    )
    rp.add_argument(
        "--out",
        required=True,
        help="output folder for figures, CSVs, summary (created; its parent must exist)",
    )
    rp.add_argument("--workers", type=int, default=2, help="local cluster worker processes")
    rp.add_argument("--scheduler", help=_SCHEDULER_HELP)
    rp.add_argument("--no-progress", action="store_true", help=_NO_PROGRESS_HELP)

    w = sub.add_parser("sweep", help="run a grid of points on Dask, results in SQLite")
    w.add_argument("spec", help="sweep spec YAML")
    w.add_argument("--store", help="results file (default: <spec name>.sqlite beside the spec)")
    w.add_argument("--scheduler", help=_SCHEDULER_HELP)
    w.add_argument("--workers", type=int, default=2, help="local cluster worker processes")
    w.add_argument(
        "--export", metavar="CSV", help="write the sweep's results as CSV (-: standard output)"
    )
    w.add_argument(
        "--plans",
        metavar="LIST",
        help="fast path for every point: only these baselines, no optimiser (comma-separated "
        "from vanilla,greedy,streaming,fused; default: the spec's plans, else full solves)",
    )
    w.add_argument("--no-progress", action="store_true", help=_NO_PROGRESS_HELP)

    h = sub.add_parser("hardware", help="shipped hardware files")
    hs = h.add_subparsers(dest="sub", metavar="{list,show}", required=True, parser_class=_Parser)
    hs.add_parser("list", help="one line per shipped device")
    hshow = hs.add_parser("show", help="a device's values, marks and sources")
    hshow.add_argument("name", metavar="NAME", help="shipped hardware NAME or a YAML path")

    m = sub.add_parser("models", help="shipped model files")
    ms = m.add_subparsers(
        dest="sub", metavar="{list,show,import}", required=True, parser_class=_Parser
    )
    ms.add_parser("list", help="one line per shipped model")
    mshow = ms.add_parser("show", help="a model's fields")
    mshow.add_argument("name", metavar="NAME", help=_MODEL_HELP)
    mshow.add_argument(
        "--json", action="store_true", help="add parameter counts and the layer schedule"
    )
    mimp = ms.add_parser(
        "import", help="turn a Hugging Face config.json into a model YAML (offline)"
    )
    mimp.add_argument("config", metavar="CONFIG.json", help="the config.json file to read")
    mimp.add_argument(
        "--name", default="", help="model name (default: the config's folder name, or file stem)"
    )
    mimp.add_argument("--out", default="-", help="model YAML to write (-: standard output)")
    mimp.add_argument(
        "--hf-repo", default="", help="owner/name of the Hugging Face repository, cited as a source"
    )
    mimp.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    for sp in _subparsers(p):  # --debug after the command too; it never resets an earlier one
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except PreserveError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"preserve-cp: error: {str(exc).splitlines()[0]}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("preserve-cp: interrupted\n")
        return 130
    except BrokenPipeError:  # e.g. `preserve-cp ... | head`: the reader left, not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.cmd == "sweep":
        return _sweep(args)
    if args.cmd == "footprint":
        return _footprint(args)
    if args.cmd == "export":
        return _export(args)
    if args.cmd == "capacity":
        return _capacity(args)
    if args.cmd == "validate":
        return _validate(args)
    if args.cmd == "calibrate":
        return _calibrate(args)
    if args.cmd == "reproduce" and args.what == "moe":
        from .moe_study import reproduce_moe

        output_folder(args.out, "--out")

        def say(msg: str) -> None:
            print(f"preserve-cp: moe: {msg}", file=sys.stderr, flush=True)

        summary = reproduce_moe(args.out, progress=None if args.no_progress else say)
        print(json.dumps(summary, indent=2))
        return 0
    if args.cmd == "reproduce":
        from .reproduce import reproduce_paper

        _check_workers(args.workers)
        output_folder(args.out, "--out")
        summary = reproduce_paper(
            args.out, workers=args.workers, scheduler=args.scheduler, progress=not args.no_progress
        )
        print(
            json.dumps(
                {k: v for k, v in summary.items() if k != "dse"}
                | {"dse": {k: v for k, v in summary["dse"].items() if k != "sensitivity"}},
                indent=2,
            )
        )
        return 0
    if args.cmd == "hardware":
        if args.sub == "list":
            for n in list_hardware():
                hw = load_hardware(n)
                print(
                    f"{n:16s} L2 {hw.l2_capacity_bytes / units.MB:7.1f} MB  HBM "
                    f"{hw.hbm_bandwidth_bytes_per_s / units.TB:5.2f} TB/s  link "
                    f"{hw.link_bandwidth_bytes_per_s / units.GB:6.0f} GB/s  {hw.topology}"
                )
        else:
            hw = load_hardware(args.name)
            _show_hardware(hw, load_hardware(args.name, calibrated=False) if hw.calibrated else hw)
        return 0
    if args.cmd == "models":
        if args.sub == "list":
            for n in list_models():
                m = load_model(n)
                print(
                    f"{n:16s} layers {m.num_layers:4d}  hidden {m.hidden_size:6d}  heads "
                    f"{m.num_heads:4d}/{m.num_kv_heads:<4d} {m.block}"
                )
        elif args.sub == "import":
            return _import_model(args)
        else:
            m = load_model(args.name)
            print(json.dumps(m.summary() if args.json else m.model_dump(), indent=2))
        return 0
    return _solve(args)


def _routing(spec: str) -> str:
    """``--routing`` checked with the one-line error naming the option (or the trace file)."""
    from .moe import ROUTING_HELP, is_trace_path, parse_routing

    try:
        parse_routing(spec, "--routing")
    except InputError:
        if is_trace_path(spec):  # the file's own error names the file and the field
            raise
        raise input_error("--routing", "value", ROUTING_HELP, spec) from None
    return spec


def _import_model(args: argparse.Namespace) -> int:
    out = args.out
    if not is_stdout(out):
        check_output(out, "--out")
        if Path(out).exists() and not args.force:
            raise InputError(f"--out {out}: file exists (pass --force to overwrite it)")
    model = import_config(args.config, name=args.name, hf_repo=args.hf_repo)
    header = (
        f"{model.name}: imported from {args.config} by preserve-cp models import.\n"
        "Shapes are the config's values; check them before shipping the file."
    )
    write_output(out, model_yaml(model, header), "--out")
    if not is_stdout(out):
        counts = model.param_counts()
        print(
            f"wrote {out}: {model.name}, {model.num_layers} layers, "
            f"{counts['total'] / 1e9:.2f} B parameters ({counts['active'] / 1e9:.2f} B active)",
            file=sys.stderr,
        )
    return 0


def _validate(args: argparse.Namespace) -> int:
    from .validate import as_dicts, compare, load_points, summary
    from .viz._io import csv_text, figure_suffix, write_figure
    from .viz.paper_plots import validation_figure

    # files only where asked (--out, --plot), each checked before any work
    if args.plot:
        figure_suffix(args.plot)
    to_stderr = _claim_outputs({"--plot": args.plot}, "--json" if args.json else "")
    points = load_points(args.set)
    out = output_folder(args.out, "--out") if args.out else None
    calibrated = not args.uncalibrated
    comparisons = compare(points, calibrated=calibrated, timing=args.timing)
    rows = as_dicts(comparisons)
    summ = summary(comparisons)
    wrote: list[str] = []
    if out is not None:
        write_output(out / "validation.csv", csv_text(rows))
        write_figure(out / "validation.png", validation_figure(rows, calibrated))
        wrote += [str(out / "validation.csv"), str(out / "validation.png")]
    if args.plot:
        write_figure(args.plot, validation_figure(rows, calibrated))
        if not is_stdout(args.plot):
            wrote.append(args.plot)
    text = sys.stderr if to_stderr else sys.stdout
    if args.compare:
        from .peers import compare_peers, render

        result = compare_peers(points, comparisons)
        if args.json:
            print(json.dumps({"calibrated": calibrated, **result}, indent=2))
            return 0
        print(render(result, calibrated), file=text)
        if wrote:
            print(f"wrote {' and '.join(wrote)}", file=text)
        return 0
    if args.json:
        print(json.dumps({"calibrated": calibrated, "summary": summ, "points": rows}, indent=2))
        return 0
    head = f"{'id':48s} {'split':7s} {'metric':26s} {'measured':>10s} {'predicted':>10s}"
    print(f"{head} {'error':>8s}", file=text)
    for r in rows:
        pred = "-" if r["predicted"] is None else f"{r['predicted']:10.4g}"
        err = r["skipped"] or f"{r['error'] * 100:+7.1f}%"
        print(
            f"{r['id'][:48]:48s} {r['split']:7s} {r['metric'][:26]:26s} "
            f"{r['measured']:10.4g} {pred:>10s} {err:>8s}",
            file=text,
        )
    print(
        "hardware calibrations applied (docs/fidelity.md)"
        if calibrated
        else "priors only (--uncalibrated)",
        file=text,
    )
    if args.timing == "measured":
        print("op timing: measured kernel tables where a device has them", file=text)
    for name in ("train", "holdout", "holdout_decode"):
        g = summ[name]
        if g["n"]:
            print(
                f"{name:15s} n={g['n']:3d}  median |error| {g['median_abs_error'] * 100:5.1f} %"
                f"  within 10 %: {g['share_within_10pct'] * 100:5.1f} %",
                file=text,
            )
    if wrote:
        print(f"wrote {' and '.join(wrote)}", file=text)
    return 0


def _export(args: argparse.Namespace) -> int:
    """``export vllm-ascend``: solve, then the closest ``weight_prefetch_config``."""
    from .production import export_weight_prefetch_config

    if args.out:
        check_output(args.out, "--out")
    if not args.time_limit > 0:
        raise input_error("--time-limit", "value", "seconds > 0", args.time_limit)
    hw = load_hardware(args.hardware, calibrated=not args.uncalibrated, timing=args.timing)
    model = load_model(args.model)
    wl = Workload(args.phase, args.batch, args.context, args.tp, **_precisions(args))
    g = build_graph(model, wl)
    result = solve(g, hw, time_limit_s=args.time_limit)
    cfg = export_weight_prefetch_config(result.plan, g)
    text = json.dumps(cfg, indent=2) + "\n"
    if args.out and not is_stdout(args.out):
        write_output(args.out, text, "--out")
        print(
            f"wrote {args.out}: {model.name} on {hw.name}, optimised {result.speedup or 1:.3f}x "
            f"over vanilla (pass it as vllm serve --additional-config)",
            file=sys.stderr,
        )
    else:
        sys.stdout.write(text)
    return 0


def _footprint(args: argparse.Namespace) -> int:
    from .footprint import footprints

    try:
        devices = [int(x) for x in args.devices.split(",") if x.strip()]
    except ValueError:
        raise input_error("--devices", "value", "comma-separated integers", args.devices) from None
    if not devices or any(d < 1 for d in devices):
        raise input_error("--devices", "value", "integers >= 1", args.devices)
    if args.plot:
        from .viz._io import figure_suffix

        figure_suffix(args.plot)
    to_stderr = _claim_outputs({"--plot": args.plot}, "--json" if args.json else "")
    model = load_model(args.model)
    rows = footprints(
        model,
        devices,
        dtype=args.dtype,
        kv_dtype=args.kv_dtype,
        batch=args.batch,
        context=args.context,
    )
    _warn_context(model, args.context)  # once the inputs are known good
    if args.plot:
        from .viz._io import write_figure
        from .viz.footprint_plot import footprint_figure

        write_figure(args.plot, footprint_figure(model.name, rows))
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
    else:
        text = sys.stderr if to_stderr else sys.stdout
        print(
            f"{model.name}, {args.dtype}, batch {args.batch}, context {args.context}: "
            "one layer, per device (MB)",
            file=text,
        )
        moe = model.is_moe
        mlp = "MoE held" if moe else "MLP"
        head = f"{'devices':>8s} {'attention':>10s} {mlp:>10s} {'KV-cache':>10s}"
        print(head + (f" {'MoE read':>10s}" if moe else ""), file=text)
        for r in rows:
            print(
                f"{r.devices:8d} {r.attention_weights_bytes / units.MB:10.2f} "
                f"{r.mlp_weights_bytes / units.MB:10.2f} {r.kv_cache_bytes / units.MB:10.2f}"
                + (f" {r.expert_weights_read_bytes / units.MB:10.2f}" if moe else ""),
                file=text,
            )
        if moe:
            print(
                f"MoE held: every expert's 1/devices share, shared experts and router of one MoE "
                f"layer; MoE read: what a decode step of {args.batch} sequences reads of it "
                "(expected distinct experts, uniform routing)",
                file=text,
            )
    return 0


def _capacity(args: argparse.Namespace) -> int:
    from .deploy import capacity, capacity_text

    if not 0 < args.memory_utilization <= 1:
        raise input_error(
            "--memory-utilization", "value", "a fraction in (0, 1]", args.memory_utilization
        )
    if not args.time_limit > 0:
        raise input_error("--time-limit", "value", "seconds > 0", args.time_limit)
    hw = load_hardware(args.hardware, calibrated=not args.uncalibrated, timing=args.timing)
    model = load_model(args.model)
    wl = Workload(
        phase="decode",
        batch=1,
        context=args.context,
        tp=args.tp,
        **_precisions(args),
        stack=args.stack,
        routing=_routing(args.routing),
    )
    c = capacity(
        model,
        wl,
        hw,
        memory_utilization=args.memory_utilization,
        solve=args.solve,
        options=SolveOptions(time_limit_s=args.time_limit),
    )
    _warn_context(model, args.context)
    print(json.dumps(c.to_dict(), indent=2) if args.json else capacity_text(c))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from .sweep import Store, expand, export_csv, load_spec, run_sweep, text_progress

    _check_workers(args.workers)
    if args.scheduler and not args.scheduler.startswith(("tcp://", "tls://", "inproc://")):
        raise input_error("--scheduler", "address", "tcp://HOST:PORT", args.scheduler)
    plans = None if args.plans is None else parse_plans(args.plans)
    to_stderr = _claim_outputs({"--export": args.export})
    spec = load_spec(args.spec)
    points = expand(spec, where=args.spec, plans=plans)
    store_path = Path(args.store) if args.store else Path(args.spec).with_suffix(".sqlite")
    require_folder(store_path, "--store")
    store = Store(store_path)
    try:
        counts = run_sweep(
            points,
            store,
            scheduler=args.scheduler,
            workers=args.workers,
            progress=None if args.no_progress else text_progress(),
        )
        if args.export:
            export_csv(store, args.export, points)
    finally:
        store.close()
    print(
        f"{spec.name}: {counts['total']} points, {counts['stored_before']} already stored, "
        f"{counts['solved']} solved now; results in {store_path}",
        file=sys.stderr if to_stderr else sys.stdout,
    )
    return 0


def _show_hardware(hw: Hardware, prior: Hardware) -> None:
    spec, prior_spec = hw.spec, prior.spec
    assert spec is not None and prior_spec is not None
    print(f"# {hw.name} ({hw.source_file})")
    data = spec.model_dump(exclude_none=True)
    before = prior_spec.model_dump(exclude_none=True)
    cal = spec.calibration
    for section in ("compute", "memory", "interconnect"):
        print(f"{section}:")
        for k, v in data[section].items():
            path = f"{section}.{k}"
            marks = ["uncertain"] if path in hw.uncertain else []
            if cal is not None and any(f == path or f.startswith(path + ".") for f in cal.fitted):
                marks.append(f"fitted; prior {before[section].get(k, 'unset')}")
            print(f"  {k}: {v}" + (f"  ({', '.join(marks)})" if marks else ""))
    if cal is not None:
        print(
            f"calibration: {len(cal.points)} training points of {cal.set}, {cal.date}; "
            "see docs/fidelity.md"
        )
    if hw.measured is not None:
        m = hw.measured
        print(f"measured kernel tables (--timing measured): {m.system}/{m.backend}/{m.version}")
        for stack, backend, version in m.stacks:
            print(f"  for --stack {stack}: {m.system}/{backend}/{version}")
    print(f"usable L2 for prefetch: {hw.usable_l2_bytes / units.MB:.1f} MB")
    print("sources:")
    for s in data["sources"]:
        print(f"  [{s['tag']}] {s['url']}")


def _calibrate(args: argparse.Namespace) -> int:
    from .calibrate import calibrate, section_yaml, write_section

    fit = calibrate(args.hardware, args.set, date=args.date)
    text = section_yaml(fit)
    if args.write:
        path = write_section(args.hardware, text)
        print(f"wrote the calibration section of {hardware_label(path)}")
    else:
        print(text, end="")
    b, a = fit.before, fit.after
    print(
        f"{fit.hardware}: {len(fit.points)} training points, median |error| "
        f"{b * 100:.1f} % -> {a * 100:.1f} %",
        file=sys.stderr,
    )
    return 0


class _Given(argparse.Action):
    """Store the value and note that the option was given (``<dest>_given``)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


DEFAULT_PREDICTOR_ACCURACY = 0.9


def _router_accuracy(args: argparse.Namespace, model: Any) -> float | None:
    """The predictor accuracy when the solve is router-aware (an MoE decode step with
    ``--routing`` or ``--predictor-accuracy`` given), else None."""
    a = args.predictor_accuracy
    if a is not None and not (math.isfinite(a) and 0.0 <= a <= 1.0):
        raise input_error("--predictor-accuracy", "value", "a number in [0, 1]", a)
    from .router import MAX_SCENARIOS

    if not 1 <= args.scenarios <= MAX_SCENARIOS:
        raise input_error(
            "--scenarios", "value", f"an integer in [1, {MAX_SCENARIOS}]", args.scenarios
        )
    if a is None and (not getattr(args, "routing_given", False) or args.plans is not None):
        return None  # (the fast path keeps --routing's plain meaning)
    if not model.num_experts or args.phase != "decode":
        if a is None:
            return None  # --routing on a dense model or a prefill: the expected graph only
        raise input_error(
            "--predictor-accuracy", "model", "an MoE model in --phase decode", model.name
        )
    return DEFAULT_PREDICTOR_ACCURACY if a is None else a


def _router_trace(args: argparse.Namespace, model: Any, g: Any) -> Any:
    """``--predictor-trace``, read and checked against the graph before the solve (the
    router-aware scenarios are its steps), else None."""
    path = args.predictor_trace
    if path is None:
        return None
    if args.predictor_accuracy is not None:
        raise InputError(
            f"--predictor-trace {path}: expected either --predictor-trace or "
            "--predictor-accuracy, found both"
        )
    if not model.num_experts or args.phase != "decode":
        raise input_error(
            "--predictor-trace", "model", "an MoE model in --phase decode", model.name
        )
    from .router import MAX_SCENARIOS, read_trace_for

    return read_trace_for(g, path, MAX_SCENARIOS)


def _solve(args: argparse.Namespace) -> int:
    hw = load_hardware(args.hardware, calibrated=not args.uncalibrated, timing=args.timing)
    model = load_model(args.model)
    wl = Workload(
        phase=args.phase,
        batch=args.batch,
        context=args.context,
        tp=args.tp,
        **_precisions(args),
        graph_capture=not args.eager,
        allreduce=args.allreduce,
        lm_head=args.lm_head,
        stack=args.stack,
        routing=_routing(args.routing),
        ep=args.ep,
        attention=args.attention,
        pp=args.pp,
        microbatches=args.microbatches,
        all_to_all=args.all_to_all,
        kv_reads=args.kv_reads,
    )
    if wl.pp > 1:
        return _solve_pipeline(args, model, wl, hw)
    g = build_graph(model, wl)
    if not args.time_limit > 0:
        raise input_error("--time-limit", "value", "seconds > 0", args.time_limit)
    if not args.work_limit > 0 or not math.isfinite(args.work_limit):
        raise input_error("--work-limit", "value", "a number > 0", args.work_limit)
    _check_workers(args.workers)
    if args.output_len is not None:
        if args.phase != "decode":
            raise input_error("--output-len", "phase", "--phase decode", args.phase)
        if not 1 <= args.output_len <= (1 << 24) - args.context:
            raise input_error(
                "--output-len",
                "value",
                "an integer >= 1 (context + N within 2^24)",
                args.output_len,
            )
    asked = None if args.plans is None else parse_plans(args.plans)
    accuracy = _router_accuracy(args, model)
    predictor_trace = _router_trace(args, model, g)
    if predictor_trace is not None:
        accuracy = None  # the trace's steps are the scenarios
    router = accuracy is not None or predictor_trace is not None
    if router and asked is not None:
        raise input_error("--plans", "with router-aware prefetch", "a full solve", args.plans)
    gantt = args.gantt
    if gantt and not is_stdout(gantt) and Path(gantt).suffix.lower() not in FIGURE_SUFFIXES:
        raise input_error("--gantt", "FILE", "a .svg or .png file name", args.gantt)
    outputs = {"--trace": args.trace, "--gantt": args.gantt, "--report": args.report}
    # fail before the solve, not after it
    to_stderr = _claim_outputs(outputs, "--json" if args.json else "")
    router_gantt = None  # the router-aware plan's picture, next to --gantt's (not on stdout)
    if router and gantt and not is_stdout(gantt):
        router_gantt = _router_path(gantt)
        check_output(router_gantt, "--gantt")
    layers = None
    if args.layers:
        from .viz.gantt import parse_layers

        layers = parse_layers(args.layers)
    options = SolveOptions(
        time_limit_s=args.time_limit,
        workers=args.workers,
        budget_fraction=args.budget_fraction,
    ).with_search(seed=args.seed, work_limit=args.work_limit)
    if asked is None:
        result = solve(g, hw, options=options)
    else:  # the fast path: baselines only
        result = estimate(g, hw, plans=asked, options=options)
    # after the solve: an error stays the only line (with --output-len: the last context)
    _warn_context(model, args.context + (args.output_len or 1) - 1)
    result = result.with_inputs(solve_inputs(g, hw, options, model=args.model, plans=asked))
    from .viz.report import bytes_moved_per_window

    windows = bytes_moved_per_window(result.schedule, g) if result.schedule.chunks else []
    result = result.with_collectives(collectives_by_kind(result.schedule, g, windows))
    if result.serving is None:  # the fast path's result: TPOT or TTFT and tokens/s
        result = result.with_serving(step_serving(g, result))
    if args.output_len is not None and result.serving is not None:
        request = request_latency(
            model, wl, hw, args.output_len, plans=asked, options=options, first=result
        )
        result = result.with_serving({**result.serving, "request": request})
    rr = None
    if router:
        from .router import solve_router

        rr = solve_router(
            g,
            hw,
            predictor_accuracy=accuracy,
            trace=predictor_trace,
            scenarios=args.scenarios,
            seed=args.seed,
            time_limit_s=args.time_limit,
        )
        result = result.with_router(rr.to_dict())
    chosen = "optimised" if result.optimiser_ran else result.plan.name
    plans = result.compared_schedules() if args.compare else {chosen: result.schedule}
    if args.trace:
        from .viz.perfetto import write_trace

        write_trace(
            args.trace,
            plans if args.compare else result.schedule,
            device_l2_bytes=hw.l2_capacity_bytes,
        )
    if args.gantt:
        from .viz.gantt import result_title, write_gantt

        # without --layers: the overview of every layer and the zoom on the first ones
        write_gantt(args.gantt, plans, layers=layers, title=result_title(result, g), graph=g)
        if router_gantt is not None and rr is not None and rr.schedule is not None:
            from .viz.router_plot import write_router_gantt

            heading = result_title(result, g).splitlines()[0]
            write_router_gantt(router_gantt, rr, layers=layers, heading=heading)
    if args.report:
        from .viz.report import write_report

        write_report(
            args.report,
            result,
            g,
            hw,
            wl,
            layers=layers,
            title=f"{model.name} on {hw.name}",
            router_result=rr,
        )
    if args.json:
        print(result.to_json())
    else:
        text = _report(result, g, hw, model.name, wl, windows)
        print(text, file=sys.stderr if to_stderr else sys.stdout)
    return 0


def _stage_path(path: str, stage: int) -> str:
    """``out.png`` -> ``out.stage0.png``: one output file per pipeline stage.

    >>> _stage_path("runs/g.svg", 1)
    'runs/g.stage1.svg'
    """
    p = Path(path)
    return str(p.with_name(f"{p.stem}.stage{stage}{p.suffix}"))


def _router_path(path: str) -> str:
    """``g.png`` -> ``g.router.png``: the router-aware plan's picture, next to ``--gantt``'s.

    >>> _router_path("runs/g.svg")
    'runs/g.router.svg'
    """
    p = Path(path)
    return str(p.with_name(f"{p.stem}.router{p.suffix}"))


def _solve_pipeline(args: argparse.Namespace, model: Any, wl: Workload, hw: Hardware) -> int:
    """``solve --pp N``: every stage solved for one micro-batch, and the pipeline's step."""
    from .pipeline import solve_pipeline, stage_workloads

    for flag in ("plans", "output_len"):
        if getattr(args, flag, None) is not None:
            raise input_error(
                f"--{flag.replace('_', '-')}",
                "with --pp",
                "a single-stage solve (not supported with --pp yet)",
                getattr(args, flag),
            )
    files = {f: getattr(args, f) for f in ("trace", "gantt", "report") if getattr(args, f)}
    for flag, path in files.items():  # one file per stage: NAME.stage<s>.EXT
        if is_stdout(path):
            raise input_error(f"--{flag}", "with --pp", "a file name (one per stage)", path)
        if flag == "gantt" and Path(path).suffix.lower() not in FIGURE_SUFFIXES:
            raise input_error("--gantt", "FILE", "a .svg or .png file name", path)
        for s in range(wl.pp):
            check_output(_stage_path(path, s), f"--{flag}")
    stages = stage_workloads(wl)
    graphs = [build_graph(model, w) for w in stages]  # any input error before the solves
    r = solve_pipeline(model, wl, hw, time_limit_s=args.time_limit, workers=args.workers)
    for s, (g, w, res) in enumerate(zip(graphs, stages, r.stages, strict=True)):
        title = f"{model.name} on {hw.name}, pipeline stage {s} of {wl.pp}"
        chosen = "optimised" if res.optimiser_ran else res.plan.name
        if "trace" in files:
            from .viz.perfetto import write_trace

            write_trace(
                _stage_path(files["trace"], s), res.schedule, device_l2_bytes=hw.l2_capacity_bytes
            )
        if "gantt" in files:
            from .viz.gantt import write_gantt

            write_gantt(
                _stage_path(files["gantt"], s), {chosen: res.schedule}, title=title, graph=g
            )
        if "report" in files:
            from .viz.report import write_report

            write_report(_stage_path(files["report"], s), res, g, hw, w, title=title)
    if args.json:
        out = {
            "pipeline": r.to_dict(),
            "stages": [
                s.with_collectives(collectives_by_kind(s.schedule, g)).with_serving(None).to_dict()
                for s, g in zip(r.stages, graphs, strict=True)
            ],
        }
        print(json.dumps(out, indent=2))
        return 0
    ms = 1e3
    lines = [
        f"{model.name} on {hw.name}: {wl.phase}, batch {wl.batch} in {wl.microbatches} "
        f"micro-batches, context {wl.context}, tp {wl.tp} x pp {wl.pp} ({wl.devices} devices)",
        "",
        f"{'stage':6s} {'layers':>10s} {'vanilla':>12s} {'optimised':>12s} {'verified':>9s}",
    ]
    from .graph import stage_layers

    for s, (w, res) in enumerate(zip(stages, r.stages, strict=True)):
        lay = stage_layers(model.num_layers, w)
        lines.append(
            f"{s:<6d} {f'{lay.start}-{lay.stop - 1}':>10s} "
            f"{(res.baseline_makespan_s or 0) * ms:9.4f} ms {res.makespan_s * ms:9.4f} ms "
            f"{str(res.verified):>9s}"
        )
    lines += [
        "",
        f"pipeline step (sum of stages + {wl.microbatches - 1} x the slowest): vanilla "
        f"{r.vanilla_step_s * ms:.4f} ms, optimised {r.optimised_step_s * ms:.4f} ms, "
        f"{r.speedup:.3f}x",
    ]
    cut = [str(i) for i, res in enumerate(r.stages) if res.status == "time_limit"]
    if cut:
        lines.append(
            f"time limit: stage{'s' if len(cut) > 1 else ''} {', '.join(cut)} stopped by "
            "--time-limit before the "
            "deterministic end (its plan may differ between runs; give more time)"
        )
    print("\n".join(lines))
    return 0


def _report(
    r: Result,
    g: Any,
    hw: Hardware,
    model: str,
    wl: Workload,
    wins: list[tuple[str, float]] | None = None,
) -> str:
    """The text summary; ``wins``: the MB the prefetch stream moved per window (computed
    here when the caller has not)."""
    if wins is None:
        from .viz.report import bytes_moved_per_window

        wins = bytes_moved_per_window(r.schedule, g) if r.schedule.chunks else []
    ms = 1e3
    base = r.baseline_makespan_s or r.makespan_s
    greedy = r.greedy_makespan_s or base
    stream = r.streaming_makespan_s  # None: not computed (no L2 or nothing to prefetch)
    over = f"{r.makespan_s and greedy / r.makespan_s:.3f}x over greedy"
    if stream:
        over += f", {r.makespan_s and stream / r.makespan_s:.3f}x over streaming"
    lines = [
        f"{model} on {hw.name}: {wl.phase}, batch {wl.batch}, context {wl.context}, tp {wl.tp}, "
        f"weights/acts/KV {wl.weight_dtype}/{wl.act_dtype}/{wl.kv_dtype}",
        f"usable L2 for prefetch: {r.usable_l2_bytes / units.MB:.1f} MB",
        *(
            [f"timing: calibrated to published measurements ({hw.source_file}; docs/fidelity.md)"]
            if hw.calibrated
            else []
        ),
        *([timing] if (timing := timing_line(g, hw)) else []),
        "",
        f"{'plan':12s} {'makespan':>12s} {'speedup':>9s}",
        f"{'vanilla':12s} {base * ms:10.4f} ms {1.0:8.3f}x",
        *(
            [f"{'greedy':12s} {greedy * ms:10.4f} ms {base / greedy:8.3f}x"]
            if r.optimiser_ran or r.greedy_makespan_s
            else []
        ),
        *(
            [
                f"{'streaming':12s} {stream * ms:10.4f} ms {base / stream:8.3f}x"
                "   (partial tensors in order, best L2 fill fraction)"
            ]
            if stream
            else []
        ),
        *(
            [
                f"{'fused':12s} {r.fused_makespan_s * ms:10.4f} ms "
                f"{base / r.fused_makespan_s:8.3f}x   (GEMM+AllReduce fused, no prefetch)"
            ]
            if r.fused_makespan_s
            else []
        ),
        *(
            [
                f"{'optimised':12s} {r.makespan_s * ms:10.4f} ms "
                f"{base / r.makespan_s:8.3f}x   ({over})"
            ]
            if r.optimiser_ran
            else []
        ),
        *serving_lines(r.serving),
        "",
        f"status {r.status}, verified {r.verified}, lower bound {r.lower_bound_s * ms:.4f} ms, "
        f"gap {r.gap * 100:.2f} %, "
        + (
            f"solved in {r.solve_time_s:.1f} s ({r.method})"
            if r.optimiser_ran
            else f"in {r.solve_time_s * 1e3:.0f} ms (fast path: {r.method}; bound from the "
            f"critical path and stream load only; best: {r.plan.name})"
        ),
        f"prefetched {r.plan.prefetched_bytes / units.MB:.1f} MB in "
        f"{len(r.schedule.chunks)} chunks; peak L2 held "
        f"{r.schedule.peak_l2_bytes() / units.MB:.1f} MB",
    ]
    if r.collectives:
        lines.append("collectives (the chosen schedule):")
        for c in r.collectives:
            lines.append(
                f"  {c['kind']:22s} x{c['count']:<4d} {c['total_s'] * ms:9.4f} ms   group "
                f"{'/'.join(str(n) for n in c['group']):6s} prefetched in their windows "
                f"{c['prefetched_mb']:9.1f} MB"
            )
    if wins:
        vals = [b for _, b in wins]
        lines.append(
            f"MB moved per window (a collective's start to the next's): mean "
            f"{sum(vals) / len(vals) / units.MB:.1f}, max {max(vals) / units.MB:.1f} over the "
            f"{len(vals)} windows that moved any; first ones:"
        )
        for name, b in wins[:6]:
            lines.append(f"  {name:28s} {b / units.MB:8.2f} MB")
    if r.router:
        from .router import router_lines

        lines += router_lines(r.router)
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
