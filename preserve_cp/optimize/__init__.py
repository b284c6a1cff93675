"""The CP-SAT optimiser. Quick reference (docs/glossary.md has the full glossary):

op          a graph node; runs on one stream
stream      a serial executor (compute, comm, prefetch, or a user string)
chain       a graph whose ops are totally ordered by its edges (LLM decode/prefill graphs)
host        the op during which a prefetch moves bytes (it takes the HBM bandwidth the op leaves)
chunk       bytes of one tensor moved during one host (chain model) or one whole-tensor
            prefetch (general model)
consumer    the first op that reads a prefetched tensor; it waits for all its chunks
L2 live range   from a chunk's start to the end of the last op that reads its tensor
usable L2   L2 capacity x l2_prefetch_fraction
tick        the integer time unit inside CP-SAT (recorded in the result as tick_s)
unit        the integer byte unit inside CP-SAT
lower bound a makespan no plan can beat under the machine model of simulate.py
gap         (makespan - lower bound) / makespan

Only this package imports ortools.
"""

from .bounds import chain_lp_bound, critical_path_bound, resource_load_bound
from .chain import ChainOptions, solve_chain
from .common import CpOutcome, Deadline, chain_order
from .general import GeneralOptions, solve_general
from .periodic import layer_structure, solve_periodic

__all__ = [
    "ChainOptions",
    "CpOutcome",
    "Deadline",
    "GeneralOptions",
    "chain_lp_bound",
    "chain_order",
    "critical_path_bound",
    "resource_load_bound",
    "solve_chain",
    "solve_general",
    "solve_periodic",
    "layer_structure",
]
