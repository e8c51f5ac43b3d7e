"""Readers for /proc: CPU time of a process (group), RSS, and kernel socket memory.

Everything here is Linux-only and cheap enough to call once a second.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    pgrp: int
    cpu_seconds: float  # utime + stime + cutime + cstime
    rss_bytes: int


def read_stat(pid: int) -> ProcStat | None:
    """Parse /proc/<pid>/stat; None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rindex(b")") + 2 :].split()
    # rest[0] is field 3 (state); field N is rest[N - 3].
    pgrp = int(rest[5 - 3])
    ticks = sum(int(rest[i - 3]) for i in (14, 15, 16, 17))
    rss_pages = int(rest[24 - 3])
    return ProcStat(pid, pgrp, ticks / CLOCK_TICKS, rss_pages * PAGE_SIZE)


def group_pids(pgrp: int) -> list[int]:
    pids: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = read_stat(int(name))
        if st is not None and st.pgrp == pgrp:
            pids.append(st.pid)
    return pids


@dataclass(frozen=True)
class GroupSample:
    cpu_seconds: float
    rss_bytes: int
    processes: int


def sample_group(pgrp: int) -> GroupSample:
    """CPU seconds (self + reaped children) and RSS summed over a whole process group."""
    cpu = 0.0
    rss = 0
    n = 0
    for pid in group_pids(pgrp):
        st = read_stat(pid)
        if st is None:
            continue
        cpu += st.cpu_seconds
        rss += st.rss_bytes
        n += 1
    return GroupSample(cpu, rss, n)


def process_cpu_seconds(pid: int) -> float:
    st = read_stat(pid)
    return 0.0 if st is None else st.cpu_seconds


def machine_busy_seconds() -> float:
    """CPU seconds spent busy (not idle, not iowait) by all cores, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    # guest time is already included in user/nice
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def sockstat_tcp() -> dict[str, int]:
    """/proc/net/sockstat TCP line, with 'mem' converted from pages to bytes."""
    out: dict[str, int] = {}
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                parts = line.split()[1:]
                for key, value in zip(parts[::2], parts[1::2], strict=True):
                    out[key] = int(value)
    if "mem" in out:
        out["mem_bytes"] = out["mem"] * PAGE_SIZE
    return out


class CpuMeter:
    """CPU fraction of one or more pids between successive calls."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self._last = {pid: process_cpu_seconds(pid) for pid in pids}

    def fractions(self, wall: float) -> dict[int, float]:
        out: dict[int, float] = {}
        for pid in self.pids:
            now = process_cpu_seconds(pid)
            out[pid] = (now - self._last[pid]) / wall if wall > 0 else 0.0
            self._last[pid] = now
        return out
