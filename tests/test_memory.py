"""automix.memory: the allocator setting the command-line tools apply."""

import json
import platform
import subprocess
import sys

import pytest

from automix import memory

# A block far above glibc's largest dynamic mmap threshold (32 MB on 64-bit), so that by default it is
# mapped on its own and handed back to the OS when freed.
BLOCK_BYTES = 128 * 2**20
# In a fresh process: allocate the block with libc's malloc, touch every page, free it, and report the
# resident set size (from /proc) before, while held and after the free, and whether a second block of
# the same size reused the freed one's address.
PROBE = """
import ctypes, ctypes.util, json, os, sys
from automix import memory
retained = memory.retain_freed_memory() if sys.argv[1] != "default" else None
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
n = int(sys.argv[2])
before = rss()
block = libc.malloc(n)
ctypes.memset(block, 1, n)
held = rss()
pin = libc.malloc(2**20)  # above the block: the heap's top cannot simply shrink past it
ctypes.memset(pin, 1, 2**20)
libc.free(block)
after = rss()
released = memory.release_freed_memory() if sys.argv[1] == "release" else None
after_release = rss()
again = libc.malloc(n)
print(json.dumps({"retained": retained, "before": before, "held": held, "after": after,
                  "released": released, "after_release": after_release, "reused": again == block}))
"""


def _probe(mode: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode, str(BLOCK_BYTES)], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_retain_freed_memory_takes_effect_on_glibc():
    """By default a freed large block goes back to the OS (the resident set shrinks by it); after
    `retain_freed_memory` it stays in the process, and the next block of that size reuses it."""
    default, retained = _probe("default"), _probe("retain")
    assert default["held"] - default["before"] > 0.9 * BLOCK_BYTES  # the probe touched every page
    assert default["held"] - default["after"] > 0.9 * BLOCK_BYTES
    assert retained["retained"] is True
    assert retained["held"] - retained["before"] > 0.9 * BLOCK_BYTES
    assert retained["held"] - retained["after"] < 0.1 * BLOCK_BYTES
    assert retained["reused"]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_release_freed_memory_hands_retained_pages_back():
    """A block freed under `retain_freed_memory`, below a block still held, stays resident until
    `release_freed_memory`, which hands its pages back."""
    released = _probe("release")
    assert released["released"] is True
    assert released["held"] - released["after"] < 0.1 * BLOCK_BYTES
    assert released["after"] - released["after_release"] > 0.9 * BLOCK_BYTES


def test_retain_freed_memory_is_a_no_op_without_a_c_library(monkeypatch):
    monkeypatch.setattr(memory.ctypes.util, "find_library", lambda name: "/nonexistent/libc.so")
    assert memory.retain_freed_memory() is False
    assert memory.release_freed_memory() is False
