"""The fixed mmap threshold: freed blocks of ever-new sizes go back to the OS (issue 28)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

from aimesh_common.memory import (
    IdleTrim,
    PeriodicTrim,
    apply_malloc_settings,
    is_glibc,
    set_mmap_threshold,
)

needs_glibc = pytest.mark.skipif(not is_glibc(), reason="mallopt thresholds are glibc's")

# What a model does with batches of ever-new shapes, with malloc alone: large blocks of sizes
# not seen before, freed after their batch, while something allocated after them lives on (a
# result, a Python object; here an untouched block larger than any hole, so it cannot be
# placed in one). Prints the resident MiB the loop added.
# Both scripts below: libc's malloc and free, and the process's resident MiB.
PRELUDE = textwrap.dedent(
    """
    import ctypes, sys
    from aimesh_common.memory import malloc_trim, set_mmap_threshold

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def rss_mib():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    """
)
BATCHES = PRELUDE + textwrap.dedent(
    """
    if sys.argv[1] != "0":
        assert set_mmap_threshold(int(sys.argv[1]))
    # One large block freed first: glibc's default now serves every smaller one from the heap.
    libc.free(libc.malloc(8 * 1024 * 1024))
    before = rss_mib()
    survivors = []
    for step in range(24):
        size = (1024 + 256 * step) * 1024  # 1 MiB, 1.25 MiB, ... 6.75 MiB
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)  # touch it, as a tensor's values do
        survivors.append(libc.malloc(size + 4096))
        libc.free(block)
    print(rss_mib() - before)
    """
)


def resident_growth_mib(threshold_kib: int) -> float:
    result = subprocess.run(
        [sys.executable, "-c", BATCHES, str(threshold_kib)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return float(result.stdout)


@needs_glibc
def test_a_fixed_threshold_hands_each_batch_back() -> None:
    # 24 blocks of 1-6.75 MiB, 93 MiB in all, were touched and freed.
    assert resident_growth_mib(128) < 8


@needs_glibc
def test_the_dynamic_default_keeps_the_blocks_of_every_new_size() -> None:
    # Why the setting exists: glibc raises its threshold after the first freed block and
    # carves the rest from the heap, where the small survivors pin them.
    assert resident_growth_mib(0) > 40


def test_zero_leaves_malloc_alone() -> None:
    assert set_mmap_threshold(0) is False


def test_the_startup_log_says_what_was_applied(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="aimesh.memory")
    apply_malloc_settings(0, "AIMESH_MALLOC_MMAP_THRESHOLD_KIB")
    assert "left dynamic (AIMESH_MALLOC_MMAP_THRESHOLD_KIB=0)" in caplog.text


# Small blocks (below any mmap threshold) freed in the middle of the heap, between blocks that
# live on: resident until reused, or until malloc_trim hands their pages back.
HOLES = PRELUDE + textwrap.dedent(
    """
    assert set_mmap_threshold(128)
    before = rss_mib()
    blocks = [libc.malloc(64 * 1024) for _ in range(1600)]  # 100 MiB
    for block in blocks:
        ctypes.memset(block, 1, 64 * 1024)
    for number, block in enumerate(blocks):
        if number % 16:  # every 16th lives on, pinning the freed 960 KiB below it
            libc.free(block)
    held = rss_mib() - before
    if sys.argv[1] == "trim":
        malloc_trim()
    print(held, rss_mib() - before)
    """
)


def held_and_after(action: str) -> tuple[float, float]:
    result = subprocess.run(
        [sys.executable, "-c", HOLES, action],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    held, after = result.stdout.split()
    return float(held), float(after)


@needs_glibc
def test_malloc_trim_hands_back_free_pages_inside_the_heap() -> None:
    held, after = held_and_after("none")
    # 100 MiB touched, 94 of it freed.
    assert held > 80
    assert after > 80  # freed, but resident: the blocks that live on pin it
    held, after = held_and_after("trim")
    assert held > 80
    assert after < 15  # the 6 MiB that live on, and little more


def test_idle_trim_runs_when_due_and_not_more_often() -> None:
    now = [100.0]
    trim = IdleTrim(30, clock=lambda: now[0])
    assert not trim.due()
    assert trim() == 0.0
    assert trim.trims == 0
    now[0] += 30
    assert trim.due()
    trim()
    assert trim.trims == 1
    assert not trim.due()
    off = IdleTrim(0, clock=lambda: now[0])
    now[0] += 1e6
    assert not off.due()


async def test_periodic_trim_runs_every_period_until_stopped() -> None:
    took: list[float] = []
    trim = PeriodicTrim(0.05, took.append)
    trim.start()
    await asyncio.sleep(0.4)
    await trim.stop()
    count = len(took)
    assert 2 <= count <= 9
    assert all(seconds >= 0 for seconds in took)
    await asyncio.sleep(0.15)
    assert len(took) == count  # stopped
    never = PeriodicTrim(0, took.append)
    never.start()
    await asyncio.sleep(0.1)
    await never.stop()
    assert len(took) == count
