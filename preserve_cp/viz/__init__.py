"""Outputs people look at: Perfetto traces (and, later, Gantt pictures and HTML reports).

Only this package and the CLI write files.
"""

from .perfetto import trace_events, write_trace

__all__ = ["trace_events", "write_trace"]
