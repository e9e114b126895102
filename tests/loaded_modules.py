"""Run in reader processes by tests/test_ingest.py. Imports nothing at the top, so that
`loaded` answers for the worker itself."""
import os
import sys


def loaded(names: list[str]) -> list[str]:
    """Which of these modules this process has imported."""
    return [name for name in names if name in sys.modules]


def probe_or_die(paths: list, known_sha: list):
    """`probe_batch`, except that the process dies on a chunk holding a file named die_here*:
    a reader process killed mid-ingest (out of memory, a signal)."""
    if any("die_here" in str(path) for path in paths):
        os._exit(1)
    from core.imageprobe import probe_batch

    return probe_batch(paths, known_sha)
