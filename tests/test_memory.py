"""automix.memory: the allocator setting the command-line tools apply."""

import platform

import pytest

from automix import memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_retain_freed_memory_takes_effect_on_glibc():
    assert memory.retain_freed_memory() is True


def test_retain_freed_memory_is_a_no_op_without_a_c_library(monkeypatch):
    monkeypatch.setattr(memory.ctypes.util, "find_library", lambda name: "/nonexistent/libc.so")
    assert memory.retain_freed_memory() is False
