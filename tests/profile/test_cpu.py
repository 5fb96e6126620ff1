"""The CPU description written beside every latency figure: standard library only, one format everywhere."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from yolocompress.profile.cpu import ISA_FLAGS, cpu_flags, cpu_line, cpu_name

ROOT = Path(__file__).resolve().parents[2]


def test_cpu_line_names_the_model_and_the_isa_flags():
    assert cpu_line("AMD EPYC 7B13", ["avx2", "fma"]) == "CPU: AMD EPYC 7B13; ISA: avx2 fma"
    assert cpu_line(None, None) == "CPU: unknown; ISA: none listed"
    assert cpu_line("x", []) == "CPU: x; ISA: none listed"


def test_flags_are_the_listed_isa_flags_in_their_order():
    flags = cpu_flags()
    assert flags == [f for f in ISA_FLAGS if f in flags]
    assert cpu_name() and "\n" not in cpu_name()


def test_importing_it_does_not_import_torch():
    """``report`` and ``check`` write the CPU line without torch (its import takes seconds); the package's
    ``__init__`` imports its torch-using modules only on first use."""
    probe = ("import json, sys\nfrom yolocompress.profile import cpu_line\nimport yolocompress.profile.cpu\n"
             "print(json.dumps(sorted(m for m in ('torch', 'onnxruntime', 'numpy') if m in sys.modules)))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []
