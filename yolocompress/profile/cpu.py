"""What CPU a figure was measured on: its model name and the ISA flags that decide which kernels run.

Standard library only, so the torch-free commands (``report``, ``check``) and the compression layers write the
CPU the same way (:func:`cpu_line`) as the measurements that record it.
"""
from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterable
from pathlib import Path

# ISA extensions that decide which int8 / bf16 / fp32 kernels a runtime picks (printed beside latency figures).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def _cpuinfo_value(key: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key and value.strip():
                return value.strip()
    return None


def cpu_name() -> str:
    """The CPU model name from ``/proc/cpuinfo`` ('model name'), else ``platform.processor()``."""
    return _cpuinfo_value("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> list[str]:
    """The ISA flags of interest (``ISA_FLAGS``) that ``/proc/cpuinfo`` lists for this CPU."""
    present = set((_cpuinfo_value("flags") or "").split())
    return [f for f in ISA_FLAGS if f in present]


def native_bf16() -> bool:
    """True when this CPU has bfloat16 units (``amx_bf16`` or ``avx512_bf16`` among its flags): there bf16
    autocast roughly halves a convolutional network's CPU time; elsewhere it is emulated and slower."""
    return bool({"amx_bf16", "avx512_bf16"}.intersection(cpu_flags()))


def cpu_line(cpu: str | None, flags: Iterable[str] | None) -> str:
    """``CPU: <model>; ISA: <flags>``: written beside every latency figure, in the commands' output, the
    library's warnings and the recipe report (the figures hold for that CPU)."""
    return f"CPU: {cpu or 'unknown'}; ISA: {' '.join(flags or ()) or 'none listed'}"


__all__ = ["ISA_FLAGS", "cpu_flags", "cpu_line", "cpu_name", "native_bf16"]
