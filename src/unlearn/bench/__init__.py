"""Benchmarks: scenario files, the runner, result tables and reports."""

from .core import run, summarise
from .report import markdown_table, write_outputs
from .runner import run_scenario
from .scenario import DEFAULT_SCENARIO, Scenario, load_scenario, parse_scenario

__all__ = [
    "DEFAULT_SCENARIO",
    "Scenario",
    "load_scenario",
    "markdown_table",
    "parse_scenario",
    "run",
    "run_scenario",
    "summarise",
    "write_outputs",
]
