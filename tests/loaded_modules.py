"""Run in a reader process by tests/test_ingest.py: which of the given modules it has imported.
Imports nothing itself, so that the answer is the worker's own."""
import sys


def loaded(names: list[str]) -> list[str]:
    return [name for name in names if name in sys.modules]
