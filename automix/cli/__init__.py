"""Command-line entry points (`mix.py`, `validate.py`): argument parsing and reporting only."""

import sys
from collections.abc import Callable

from automix.dsp.dynamics import cache_compiled_kernels
from automix.errors import AutomixError
from automix.memory import retain_freed_memory

MAX_SEED = 2**32 - 1  # Lightning's and NumPy's seed range


def check_seed(seed: int) -> None:
    """Refuse a `--seed` outside 0 to `MAX_SEED` (torch's own range ends in an overflow traceback)."""
    if not 0 <= seed <= MAX_SEED:
        raise AutomixError(f"--seed must be 0 to {MAX_SEED}, got {seed}")


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run `main`, turning a user's error into one line on stderr and exit status 2 (docs/design.md,
    *Code conventions*).

    Freed memory stays in the process for reuse (`automix.memory`): renders of long songs run faster;
    the compressor's compiled kernel is kept on disk (`automix.dsp.dynamics.cache_compiled_kernels`).
    """
    retain_freed_memory()
    cache_compiled_kernels()
    try:
        return main(argv)
    except AutomixError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no output was written", file=sys.stderr)
        return 130
