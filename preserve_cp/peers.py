"""Other tools on the validation points (``preserve-cp validate --compare``).

Each peer is an optional package (``pip install "preserve-cp[peers]"``); one that is not
installed is reported as such and left out. Every peer gets the points of
``validation/measurements.yaml`` with the mapping :func:`validate.predict` uses:

* ``time_per_output_token_ms``: one decode step at context input + output // 2
  (:func:`decode_context`);
* ``ttft_ms``: the prefill of the input tokens (the whole batch);
* ``e2e_latency_s`` = prefill + output x step; ``tokens_per_s_per_user`` = output / that;
  ``output_tokens_per_s_total`` = batch x output / that (:func:`metric_value`).

Collective points (allreduce, all-to-all) are left out: no peer here prices one collective
on its own. What each peer is given:

* **aiconfigurator** (NVIDIA, measured-kernel tables): ``cli_estimate`` in static mode,
  ``static_gen`` with isl = the decode context and osl = 2 (one step) and ``static_ctx``
  for the prefill, on the system of the point's GPU (a100_sxm, h100_sxm, h200_sxm,
  b200_sxm) and the backend of its stack (trtllm for TensorRT-LLM and NIM, vllm, sglang; a
  stack it has no tables of, such as gpt-fast, on its default trtllm, as its CLI would run
  it). Of the queryable database versions it takes the one closest to the version the
  point's ``software`` names, else the maintained default. The model is aiconfigurator's
  bundled ``config.json`` where it ships one, else one written from the shipped model's
  shapes (Llama and Mixtral architectures).
* **GenZ** (``genz-llm``, analytical roofline): ``decode_moddeling`` (beam 1) and
  ``prefill_moddeling`` on its predefined system of the same GPU, with its own model
  description; one ``bits`` for weights, activations and the KV cache (the weights'). It
  runs in a worker process of its own (:class:`_Worker`): GenZ prints as it models and
  keeps global state, and our package imports none of its modules.
* **llm-analysis** (analytical): ``infer`` with its GPU file of the same GPU, the model's
  shapes as a model file (its MLP has two matrices: a gated MLP gets 1.5 x the width, so
  the weights weigh what they do), the weight/activation dtype file and the KV bytes;
  defaults for the efficiencies (both 1, as its ``infer`` has them).

Each prediction comes with a note: what the peer ran (e.g. the database), or why it could
not express the point.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import json
import logging
import re
import statistics
import subprocess
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

from .models import ModelConfig, load_model
from .validate import (
    DECODE_METRICS,
    STEP_METRICS,
    Comparison,
    decode_context,
    metric_value,
    parse_precision,
)

#: groups of the comparison: name -> the metrics in it (None: every point)
GROUPS: dict[str, tuple[str, ...] | None] = {
    "decode": DECODE_METRICS,
    "e2e": ("e2e_latency_s",),
    "ttft": ("ttft_ms",),
    "all": None,
}
SPLITS = ("all", "train", "holdout")


class Unsupported(Exception):
    """The peer cannot express the point; the message says why."""


class PeerError(Exception):
    """A peer's own error, raised in its worker process; ``kind`` is the error's type name."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


#: The GenZ worker: imports GenZ in its own interpreter, then answers one JSON request per
#: line on stdin (``{"fn": ..., "kwargs": {...}}``) with one JSON line (``{"latency": ms}`` or
#: ``{"error": type, "message": text}``). GenZ prints while it models, so the worker's own
#: stdout goes to the null device and the answers to a duplicate of the pipe.
_GENZ_WORKER = """
import json, os, sys, warnings
warnings.simplefilter("ignore")
answers = os.fdopen(os.dup(1), "w")
null = os.open(os.devnull, os.O_WRONLY)
os.dup2(null, 1)
os.dup2(null, 2)
def say(obj):
    answers.write(json.dumps(obj) + "\\n")
    answers.flush()
try:
    from GenZ import decode_moddeling, prefill_moddeling
except ModuleNotFoundError as exc:
    say({"missing": exc.name or "", "message": str(exc)})
    raise SystemExit(0)
except Exception as exc:
    say({"error": type(exc).__name__, "message": str(exc)})
    raise SystemExit(0)
FUNCTIONS = {"decode_moddeling": decode_moddeling, "prefill_moddeling": prefill_moddeling}
say({"ready": True})
for line in sys.stdin:
    request = json.loads(line)
    try:
        out = FUNCTIONS[request["fn"]](**request["kwargs"])
        say({"latency": float(out["Latency"])})
    except Exception as exc:
        say({"error": type(exc).__name__, "message": str(exc)})
"""


class _Worker:
    """A peer run in its own Python process (``python -c`` with fixed code, no user input in
    it): the peer's imports, prints and global state stay out of ours, and the package
    itself imports no peer module. Stopped when the Python process that started it exits."""

    def __init__(self, code: str) -> None:
        self._proc = subprocess.Popen(  # noqa: S603  (our interpreter, fixed code)
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        atexit.register(self.close)
        hello = self._read()
        if "missing" in hello:
            self.close()
            raise ModuleNotFoundError(hello["message"], name=hello["missing"])
        if "error" in hello:
            self.close()
            raise PeerError(hello["error"], hello["message"])

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            status = self._proc.poll()
            raise PeerError("WorkerExited", f"the peer's process ended (status {status})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def call(self, fn: str, kwargs: dict[str, Any]) -> float:
        """The latency (ms) ``fn(**kwargs)`` returns in the worker."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"fn": fn, "kwargs": kwargs}) + "\n")
        self._proc.stdin.flush()
        answer = self._read()
        if "error" in answer:
            raise PeerError(answer["error"], answer["message"])
        return float(answer["latency"])

    def close(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self._proc.stdin is not None
                self._proc.stdin.close()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


# --------------------------------------------------------------------------- the mapping


def needs(p: dict[str, Any]) -> tuple[bool, bool]:
    """(a decode step?, the prefill?) the point's metric is made of.

    >>> needs({"metric": "time_per_output_token_ms"}), needs({"metric": "ttft_ms"})
    ((True, False), (False, True))
    >>> needs({"metric": "e2e_latency_s"})
    (True, True)
    """
    metric = str(p["metric"])
    if metric not in STEP_METRICS:
        raise Unsupported(f"{metric}: a collective, not a model step")
    return metric != "ttft_ms", metric != "time_per_output_token_ms"


def precision(p: dict[str, Any]) -> tuple[str, str, str]:
    """(weights, activations, KV) of the point, as ``validate`` reads them."""
    dt = parse_precision(str(p.get("precision", "")))
    if dt is None:
        raise Unsupported(f"precision: {p.get('precision')} (not modelled by validate either)")
    return dt


def version_key(version: str) -> tuple[int, ...]:
    """Numbers of a version string, padded to four.

    >>> version_key("1.3.0rc20"), version_key("0.5.6.post2"), version_key("0.14.0")
    ((1, 3, 0, 20), (0, 5, 6, 2), (0, 14, 0, 0))
    """
    nums = [int(x) for x in re.findall(r"\d+", version)]
    return tuple((nums + [0, 0, 0, 0])[:4])


def closest_version(versions: Sequence[str], wanted: str | None, default: str) -> str:
    """The version of ``versions`` closest to ``wanted`` (``default`` if none is wanted).

    Closest: the smallest difference in the major number, then the minor, and so on.

    >>> closest_version(["1.3.0rc20", "1.3.0rc23"], "0.5.0", "1.3.0rc20")
    '1.3.0rc20'
    >>> closest_version(["0.5.14", "0.5.16"], "0.5.7", "0.5.14")
    '0.5.14'
    >>> closest_version(["0.24.0", "0.27.0"], "0.26.1", "0.24.0")
    '0.27.0'
    >>> closest_version(["0.24.0", "0.27.0"], None, "0.24.0")
    '0.24.0'
    """
    if wanted is None or not versions:
        return default
    w = version_key(wanted)
    return min(
        versions,
        key=lambda v: (tuple(abs(a - b) for a, b in zip(version_key(v), w, strict=True)), v),
    )


#: stack of a point -> how its ``software`` field names it
STACK_NAMES = {"trtllm": "TensorRT-LLM", "vllm": "vLLM", "sglang": "SGLang"}


def stack_version(p: dict[str, Any]) -> str | None:
    """The version of the point's stack its ``software`` field states, if it does.

    >>> stack_version({"stack": "sglang", "software": "SGLang v0.5.7, InferenceX"})
    '0.5.7'
    >>> stack_version({"stack": "vllm", "software": "vLLM (performance-benchmark CI)"}) is None
    True
    """
    name = STACK_NAMES.get(str(p.get("stack", "")))
    if name is None:
        return None
    m = re.search(rf"{re.escape(name)}\s+v?(\d+(?:\.\d+)+(?:rc\d+|\.post\d+)?)", str(p["software"]))
    return m.group(1) if m else None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide what a peer prints or logs while it runs."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _scratch(*parts: str) -> Path:
    """A folder of this user's temporary directory for the files a peer reads."""
    path = Path(tempfile.gettempdir(), "preserve-cp-peers", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_if_changed(path: Path, text: str) -> str:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return str(path)


# --------------------------------------------------------------------------- the peers


class Peer:
    """One peer tool: :meth:`available`, :meth:`version`, :meth:`predict`."""

    name = ""
    dist = ""  # the pip distribution
    module = ""  # what is imported
    #: shipped hardware name -> the peer's name for the same GPU
    devices: dict[str, str] = {}

    def __init__(self) -> None:
        self._checked = False
        self._status: str | None = None

    def available(self) -> str | None:
        """None if the peer can run here, else the reason."""
        if not self._checked:
            self._checked = True
            try:  # the peer's own imports, by fixed names (no dynamic import)
                with _quiet():
                    self._load()
            except ModuleNotFoundError as exc:
                if exc.name == self.module.split(".")[0]:  # the package itself is missing
                    self._status = f"not installed (pip install {self.dist})"
                else:
                    self._status = f"not usable: {type(exc).__name__}: {_first_line(exc)}"
            except Exception as exc:  # an installed peer that does not import here
                self._status = f"not usable: {_kind(exc)}: {_first_line(exc)}"
        return self._status

    def version(self) -> str | None:
        try:
            return dist_version(self.dist)
        except PackageNotFoundError:
            return None

    def predict(self, p: dict[str, Any]) -> tuple[float | None, str]:
        """(the point's metric in its unit, a note), or (None, why the peer cannot)."""
        reason = self.available()
        if reason is not None:
            return None, reason
        try:
            step_needed, prefill_needed = needs(p)
            device = self.devices.get(str(p["hardware"]))
            if device is None:
                raise Unsupported(f"{p['hardware']}: no {self.name} system for this GPU")
            with _quiet():
                setup, note = self._setup(p, device)
                step = self._step_s(p, setup, decode_context(p)) if step_needed else None
                pre = self._prefill_s(p, setup, int(p["input_tokens"])) if prefill_needed else None
            return metric_value(p, step, pre), note
        except Unsupported as exc:
            return None, str(exc)
        except Exception as exc:  # the peer's own error on this point
            return None, f"{self.name} failed: {_kind(exc)}: {_first_line(exc)}"

    # what a peer implements
    def _load(self) -> None:
        raise NotImplementedError

    def _setup(self, p: dict[str, Any], device: str) -> tuple[Any, str]:
        raise NotImplementedError

    def _step_s(self, p: dict[str, Any], setup: Any, context: int) -> float:
        raise NotImplementedError

    def _prefill_s(self, p: dict[str, Any], setup: Any, tokens: int) -> float:
        raise NotImplementedError


def _kind(exc: BaseException) -> str:
    """The error's type name; for one raised in a peer's worker process, the type it had
    there (``ValueError``, not ``PeerError``)."""
    return exc.kind if isinstance(exc, PeerError) else type(exc).__name__


def _first_line(exc: BaseException) -> str:
    """The first line of an error, without the install path of the files it names."""
    text = str(exc).strip().splitlines()
    return re.sub(r"\S*/(site-packages|systems/data)/", "", text[0] if text else "")[:160]


def _layout(p: dict[str, Any]) -> tuple[int, int, int, str]:
    """(tp, ep, pp, attention) of the point, validate's defaults where it states none."""
    return (
        int(p.get("tp") or 1),
        int(p.get("ep") or 1),
        int(p.get("pp") or 1),
        str(p.get("attention") or "tp"),
    )


def _plain_layout(name: str, p: dict[str, Any]) -> None:
    """Refuse the layouts a peer without them cannot express."""
    _, ep, pp, attention = _layout(p)
    if attention != "tp":
        raise Unsupported(f"attention {attention}: not in {name}'s model")
    if ep > 1 and name == "llm-analysis":
        raise Unsupported(f"ep {ep}: llm-analysis' infer has no expert parallelism")


def hf_config(m: ModelConfig) -> dict[str, Any]:
    """A Hugging Face ``config.json`` of a Llama or Mixtral architecture with the model's
    shapes (what aiconfigurator reads from a local model folder).

    >>> cfg = hf_config(load_model("llama2-7b"))
    >>> cfg["architectures"], cfg["intermediate_size"], cfg["num_key_value_heads"]
    (['LlamaForCausalLM'], 11008, 32)
    >>> hf_config(load_model("mixtral-8x7b"))["num_local_experts"]
    8
    """
    llama_like = (
        m.mlp == "gated"
        and m.activation == "silu"
        and m.block == "sequential"
        and m.norm == "rmsnorm"
        and not m.qkv_bias
        and not m.qk_norm
        and m.sliding_window is None
        and m.kv_lora_rank is None
        and m.num_shared_experts == 0
        and m.first_k_dense_replace == 0
        and m.moe_layer_step == 1
    )
    if not llama_like:
        raise Unsupported(f"{m.name}: neither a Llama nor a Mixtral architecture")
    cfg: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": m.hidden_size,
        "intermediate_size": m.intermediate_size,
        "num_hidden_layers": m.num_layers,
        "num_attention_heads": m.num_heads,
        "num_key_value_heads": m.num_kv_heads,
        "head_dim": m.head_dim,
        "vocab_size": m.vocab_size,
        "max_position_embeddings": m.max_context,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": m.tied_embeddings,
        "torch_dtype": "bfloat16",
    }
    if m.num_experts:
        cfg.update(
            architectures=["MixtralForCausalLM"],
            model_type="mixtral",
            num_local_experts=m.num_experts,
            num_experts_per_tok=m.experts_per_token,
            intermediate_size=m.moe_intermediate_size or m.intermediate_size,
        )
    return cfg


class AIConfigurator(Peer):
    """NVIDIA aiconfigurator: step times composed from measured kernel tables."""

    name = "aiconfigurator"
    dist = "aiconfigurator"
    module = "aiconfigurator"
    devices = {
        "a100-sxm-80g": "a100_sxm",
        "h100-sxm": "h100_sxm",
        "h200-sxm": "h200_sxm",
        "b200": "b200_sxm",
    }
    #: stack of a point -> the backend whose kernels stand for it (NIM runs TensorRT-LLM);
    #: another stack runs on aiconfigurator's default backend, as its CLI would
    backends = {"trtllm": "trtllm", "nim": "trtllm", "vllm": "vllm", "sglang": "sglang"}
    default_backend = "trtllm"
    #: shipped model -> the Hugging Face id aiconfigurator bundles with the same shapes
    bundled = {
        "llama3-8b": "meta-llama/Meta-Llama-3.1-8B",
        "llama3-70b": "meta-llama/Meta-Llama-3.1-70B",
        "llama3.1-405b": "meta-llama/Meta-Llama-3.1-405B",
        "deepseek-r1": "deepseek-ai/DeepSeek-R1",
    }

    def _load(self) -> None:
        import aiconfigurator.cli.api  # noqa: F401

    @staticmethod
    @functools.cache
    def _versions(system: str, backend: str) -> tuple[tuple[str, ...], str | None]:
        """(queryable versions, the maintained default) of a system's backend database."""
        from aiconfigurator.sdk import perf_database

        with _quiet():
            versions = perf_database.get_supported_databases().get(system, {}).get(backend, [])
            default = perf_database.get_latest_database_version(system, backend)
        return tuple(versions), default

    def _model_path(self, model: str) -> str:
        from aiconfigurator.sdk import common

        hf = self.bundled.get(model)
        if hf is not None and hf in common.DefaultHFModels:
            return hf
        cfg = hf_config(load_model(model))
        folder = _scratch("aiconfigurator", model)
        _write_if_changed(folder / "config.json", json.dumps(cfg, indent=2, sort_keys=True))
        return str(folder)

    def _setup(self, p: dict[str, Any], device: str) -> tuple[dict[str, Any], str]:
        stack = str(p.get("stack", ""))
        backend = self.backends.get(stack, self.default_backend)
        versions, default = self._versions(device, backend)
        if default is None:
            raise Unsupported(f"no {backend} database for {device}")
        version = closest_version(versions, stack_version(p), default)
        w, _, kv = precision(p)
        text = str(p.get("precision", "")).lower()
        if w == "fp8":
            # DeepSeek's checkpoints are fp8 with a scale per 128 x 128 block
            gemm = "fp8_block" if "block" in text or "deepseek" in str(p["model"]) else "fp8"
        elif w == "int8":
            gemm = "int8_wo"
        else:
            gemm = "bfloat16"  # its 16-bit tables are bf16 (fp16 runs at the same rate)
        tp, ep, pp, attention = _layout(p)
        model = load_model(str(p["model"]))
        kwargs: dict[str, Any] = dict(
            model_path=self._model_path(model.name),
            system_name=device,
            backend_name=backend,
            backend_version=version,
            batch_size=int(p["batch"]),
            tp_size=tp,
            pp_size=pp,
            attention_dp_size=tp if attention == "dp" else 1,
            gemm_quant_mode=gemm,
            kvcache_quant_mode="fp8" if kv == "fp8" else "bfloat16",
        )
        if model.num_experts:
            if gemm == "int8_wo":
                raise Unsupported("int8 weight-only experts: no aiconfigurator MoE mode")
            kwargs.update(moe_tp_size=tp // ep, moe_ep_size=ep, moe_quant_mode=gemm)
        own = "" if stack in self.backends else f" (the default backend: no {stack} tables)"
        return kwargs, f"{backend} {version} on {device}{own}"

    def _estimate(self, kwargs: dict[str, Any], mode: str, isl: int, osl: int) -> Any:
        from aiconfigurator.cli.api import cli_estimate

        return cli_estimate(mode=mode, isl=isl, osl=osl, **kwargs)

    def _step_s(self, p: dict[str, Any], setup: dict[str, Any], context: int) -> float:
        # static_gen with osl 2: the generation phase is the one step after the context
        return float(self._estimate(setup, "static_gen", context, 2).tpot) / 1e3

    def _prefill_s(self, p: dict[str, Any], setup: dict[str, Any], tokens: int) -> float:
        return float(self._estimate(setup, "static_ctx", tokens, 1).ttft) / 1e3

    def breakdown(self, p: dict[str, Any], phase: str) -> dict[str, float]:
        """Per-operation times (ms, as aiconfigurator names them) of the point's decode step
        (``phase="decode"``) or prefill (``"prefill"``)."""
        device = self.devices[str(p["hardware"])]
        with _quiet():
            setup, _ = self._setup(p, device)
            if phase == "decode":
                res = self._estimate(setup, "static_gen", decode_context(p), 2)
                return dict(res.summary.get_generation_latency_dict())
            res = self._estimate(setup, "static_ctx", int(p["input_tokens"]), 1)
            return dict(res.summary.get_context_latency_dict())


class GenZ(Peer):
    """GenZ (genz-llm): analytical roofline of each operator."""

    name = "GenZ"
    dist = "genz-llm"
    module = "GenZ"
    devices = {
        "a100-sxm-80g": "A100_80GB_GPU",
        "h100-sxm": "H100_GPU",
        "mi300x": "MI300X",
        "mi325x": "MI325X",
        "gaudi3": "Gaudi3",
        "tpu-v5e": "TPUv5e",
        "tpu-v5p": "TPUv5p",
    }
    #: shipped model -> GenZ's model of the same checkpoint
    models = {
        "llama2-7b": "meta-llama/Llama-2-7B",
        "llama2-13b": "meta-llama/Llama-2-13B",
        "llama2-70b": "meta-llama/Llama-2-70B",
        "llama3-8b": "meta-llama/Llama-3.1-8B",
        "llama3-70b": "meta-llama/Llama-3.1-70B",
        "llama3.1-405b": "meta-llama/Llama-3.1-405B",
        "mixtral-8x7b": "mistralai/Mixtral-8x7B",
        "mixtral-8x22b": "mistralai/Mixtral-8x22B",
        "mistral-7b": "mistralai/Mistral-7B",
        "deepseek-r1": "deepseek-ai/DeepSeek-V3-Base",  # the same architecture
        "deepseek-v3": "deepseek-ai/DeepSeek-V3-Base",
    }
    #: models GenZ has under another checkpoint's name (said in the note)
    stand_ins = {"deepseek-r1"}
    bits = {"bf16": "bf16", "fp16": "bf16", "fp8": "fp8", "int8": "int8"}

    def __init__(self) -> None:
        super().__init__()
        self._worker: _Worker | None = None

    def _load(self) -> None:
        self._worker = _Worker(_GENZ_WORKER)

    def _setup(self, p: dict[str, Any], device: str) -> tuple[dict[str, Any], str]:
        model = self.models.get(str(p["model"]))
        if model is None:
            raise Unsupported(f"{p['model']}: not in GenZ's models")
        _plain_layout(self.name, p)
        w, _, _ = precision(p)
        tp, ep, pp, _ = _layout(p)
        kwargs = dict(
            model=model,
            batch_size=int(p["batch"]),
            system_name=device,
            bits=self.bits[w],
            tensor_parallel=tp,
            expert_parallel=ep,
            pipeline_parallel=pp,
            parallelism_heirarchy=f"TP{{{tp}}}_EP{{{ep}}}_PP{{{pp}}}",
        )
        stand_in = "" if p["model"] not in self.stand_ins else f", {model} for {p['model']}"
        return kwargs, f"{device}, bits {self.bits[w]}{stand_in}"

    def _step_s(self, p: dict[str, Any], setup: dict[str, Any], context: int) -> float:
        assert self._worker is not None
        kwargs = dict(setup, input_tokens=context, output_tokens=0, Bb=1)
        return self._worker.call("decode_moddeling", kwargs) / 1e3

    def _prefill_s(self, p: dict[str, Any], setup: dict[str, Any], tokens: int) -> float:
        assert self._worker is not None
        return self._worker.call("prefill_moddeling", dict(setup, input_tokens=tokens)) / 1e3


class LLMAnalysis(Peer):
    """llm-analysis: analytical latency from FLOPs, bytes and link bandwidth."""

    name = "llm-analysis"
    dist = "llm-analysis"
    module = "llm_analysis"
    devices = {"a100-sxm-80g": "a100-sxm-80gb", "h100-sxm": "h100-sxm-80gb"}
    bits = {"bf16": 16, "fp16": 16, "fp8": 8, "int8": 8}

    def _load(self) -> None:
        import llm_analysis.analysis  # noqa: F401

    @staticmethod
    def model_file(m: ModelConfig) -> dict[str, Any]:
        """llm-analysis' model description of a shipped model.

        >>> cfg = LLMAnalysis.model_file(load_model("llama2-70b"))
        >>> cfg["ffn_embed_dim"], cfg["num_key_value_heads"]  # 1.5 x 28672: the gate's weights
        (43008, 8)
        """
        if m.kv_lora_rank is not None:
            raise Unsupported(f"{m.name}: latent attention (MLA), not in llm-analysis' model")
        if m.num_shared_experts or m.first_k_dense_replace:
            raise Unsupported(f"{m.name}: shared experts/dense layers, not in llm-analysis' MoE")
        width = (m.moe_intermediate_size or m.intermediate_size) if m.num_experts else None
        width = width or m.intermediate_size
        ffn = round(width * (1.5 if m.mlp == "gated" else 1.0))
        return {
            "name": f"preserve-cp-{m.name}",
            "num_layers": m.num_layers,
            "n_head": m.num_heads,
            "hidden_dim": m.hidden_size,
            "vocab_size": m.vocab_size,
            "max_seq_len": m.max_context,
            "num_key_value_heads": m.num_kv_heads,
            "ffn_embed_dim": ffn,
            "expansion_ratio": ffn / m.hidden_size,
            "model_type": "llama" if m.mlp == "gated" else "gpt",
            "moe_num_experts": m.num_experts or 1,
            "moe_top_k": m.experts_per_token or 1,
        }

    def _setup(self, p: dict[str, Any], device: str) -> tuple[dict[str, Any], str]:
        _plain_layout(self.name, p)
        m = load_model(str(p["model"]))
        cfg = self.model_file(m)
        path = _write_if_changed(
            _scratch("llm-analysis") / f"{m.name}.json", json.dumps(cfg, indent=2, sort_keys=True)
        )
        w, a, kv = precision(p)
        dtype = f"w{self.bits[w]}a{self.bits[a]}e16"
        tp, _, pp, _ = _layout(p)
        kwargs = dict(
            model_name=path,
            gpu_name=device,
            dtype_name=dtype,
            log_level="ERROR",
            batch_size_per_gpu=int(p["batch"]),
            tp_size=tp,
            pp_size=pp,
            kv_cache_dtype_bytes=1 if kv in ("fp8", "int8") else 2,
        )
        return kwargs, f"{device}, {dtype}"

    def _step_s(self, p: dict[str, Any], setup: dict[str, Any], context: int) -> float:
        from llm_analysis.analysis import infer

        # one generated token after context - 1: its KV is the context's
        res = infer(seq_len=context - 1, num_tokens_to_generate=1, **setup)
        return float(res["decode_latency"])

    def _prefill_s(self, p: dict[str, Any], setup: dict[str, Any], tokens: int) -> float:
        from llm_analysis.analysis import infer

        return float(infer(seq_len=tokens, num_tokens_to_generate=1, **setup)["prefill_latency"])


def default_peers() -> list[Peer]:
    return [AIConfigurator(), GenZ(), LLMAnalysis()]


# --------------------------------------------------------------------------- the comparison


def compare_peers(
    points: list[dict[str, Any]], ours: list[Comparison], peers: list[Peer] | None = None
) -> dict[str, Any]:
    """Every point with our prediction and each usable peer's, and the grouped medians."""
    peers = default_peers() if peers is None else peers
    tools = [
        {"name": peer.name, "version": peer.version(), "status": peer.available() or "ok"}
        for peer in peers
    ]
    usable = [peer for peer in peers if peer.available() is None]
    rows = []
    for p, c in zip(points, ours, strict=True):
        row: dict[str, Any] = {
            "id": c.id,
            "split": c.split,
            "hardware": c.hardware,
            "model": c.model,
            "metric": c.metric,
            "measured": c.measured,
            "ours": {"predicted": c.predicted, "error": c.error, "note": c.skipped},
        }
        for peer in usable:
            pred, note = peer.predict(p)
            err = None if pred is None else (pred - c.measured) / c.measured
            row[peer.name] = {"predicted": pred, "error": err, "note": note}
        rows.append(row)
    names = ["ours", *(peer.name for peer in usable)]
    return {"tools": tools, "groups": group_medians(rows, names), "points": rows}


def group_medians(rows: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """Per group and split: each tool's median |error| and count, on (a) every point it
    models and (b) the points every tool of ``names`` models."""
    out = []
    for group, metrics in GROUPS.items():
        for split in SPLITS:
            sel = [
                r
                for r in rows
                if (metrics is None or r["metric"] in metrics) and split in ("all", r["split"])
            ]
            common = [r for r in sel if all(r[n]["error"] is not None for n in names)]
            entry: dict[str, Any] = {"group": group, "split": split, "points": len(sel)}
            for key, subset in (("each", sel), ("common", common)):
                entry[key] = {}
                for n in names:
                    errs = [abs(r[n]["error"]) for r in subset if r[n]["error"] is not None]
                    entry[key][n] = {
                        "n": len(errs),
                        "median_abs_error": statistics.median(errs) if errs else None,
                    }
            entry["common_n"] = len(common)
            out.append(entry)
    return out


def _cell(stat: dict[str, Any]) -> str:
    if not stat["n"]:
        return "-"
    return f"{stat['median_abs_error'] * 100:5.1f} % ({stat['n']})"


def render(result: dict[str, Any], calibrated: bool = True) -> str:
    """The side-by-side text of :func:`compare_peers`."""
    lines = []
    usable = [t["name"] for t in result["tools"] if t["status"] == "ok"]
    for t in result["tools"]:
        if t["status"] == "ok":
            lines.append(f"{t['name']} {t['version']}: installed, run on every point")
        else:
            lines.append(f"{t['name']}: {t['status']}")
    names = ["ours", *usable]
    heads = ["ours" + ("" if calibrated else " (priors)"), *usable]
    width = max(16, *(len(h) + 2 for h in heads))
    for key, title in (
        ("each", "(a) each tool on every point it models: median |error| (points)"),
        ("common", "(b) on the points all of them model: median |error| (points)"),
    ):
        lines += ["", title]
        lines.append(
            f"{'group':7s} {'split':8s} {'points':>6s}" + "".join(f"{h:>{width}s}" for h in heads)
        )
        for g in result["groups"]:
            count = g["points"] if key == "each" else g["common_n"]
            if not count:
                continue
            cells = "".join(f"{_cell(g[key][n]):>{width}s}" for n in names)
            lines.append(f"{g['group']:7s} {g['split']:8s} {count:6d}{cells}")
    for name in usable:
        used = Counter(
            r[name]["note"] for r in result["points"] if r[name]["predicted"] is not None
        )
        missed = Counter(
            _short(r[name]["note"]) for r in result["points"] if r[name]["predicted"] is None
        )
        lines += ["", f"{name}: modelled {sum(used.values())} of {len(result['points'])} points"]
        lines += [f"  {n:3d} x {note}" for note, n in sorted(used.items(), key=_by_count)]
        lines.append("  not modelled:")
        lines += [f"  {n:3d} x {note}" for note, n in sorted(missed.items(), key=_by_count)]
    return "\n".join(lines)


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def _short(note: str) -> str:
    """A skip reason without the point-specific part that would split the counts.

    >>> _short("allreduce_latency_us: a collective, not a model step")
    'a collective, not a model step'
    >>> _short("GenZ failed: ValueError: All params would not fit on chip. System Memory Cap:80")
    'GenZ failed: ValueError: All params would not fit on chip'
    """
    if note.endswith("a collective, not a model step"):
        return "a collective, not a model step"
    return re.split(r"\. | \{|; ", note)[0][:140]
