"""Process-wide allocator settings for long renders.

glibc's malloc hands every freed block above its mmap threshold (128 KB, growing to at most 32 MB) back
to the operating system, and the next allocation of that size faults every page in again, zeroed. A
minutes-long render allocates and frees signal-sized temporaries at every stage, and the page faults
of allocating them again can cost more than the DSP itself; `retain_freed_memory` keeps freed memory in
the process instead. The command-line tools call it; a library user can too. Memory kept so grows with
the heap's fragmentation over many renders: `release_freed_memory` hands what is free back between
stages that reuse little of each other's temporaries.
"""

import ctypes
import ctypes.util

# mallopt(3) parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap, whose freed memory is reused rather than returned.
MMAP_THRESHOLD_BYTES = 2**31 - 1
TOP_PAD_BYTES = 2**26


def retain_freed_memory() -> bool:
    """Keep freed memory in the process for reuse instead of returning it to the OS (glibc only).

    Returns:
        True when the settings took effect; False where the C library is not glibc (nothing changes).
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), (M_TRIM_THRESHOLD, MMAP_THRESHOLD_BYTES),
                (M_TOP_PAD, TOP_PAD_BYTES))  # fmt: skip
    return all(mallopt(ctypes.c_int(option), ctypes.c_int(value)) == 1 for option, value in settings)


def release_freed_memory() -> bool:
    """Hand the heap's free pages back to the OS now (glibc's `malloc_trim`), the retained ones included:
    between stages whose temporaries differ, so that the heap's fragmentation does not add up.

    Returns:
        True when the C library has `malloc_trim`; False where it has not (nothing changes).
    """
    try:
        malloc_trim = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):
        return False
    malloc_trim(ctypes.c_size_t(0))
    return True
