"""[4] bench/bench_migration.py run once as a subprocess (full copy against `virsh
blockcopy`), its output passed through and its ratio picked out."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from harness.machine import ROOT


def bench_copy() -> dict:
    print("\n[4] bench/bench_migration.py (full copy vs virsh blockcopy, its own worker and database)", flush=True)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "bench_migration.py")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BLOCKMIG_VAR_DIR", "BLOCKMIG_CHANNEL_PREFIX")},
    )
    ratio = None
    for line in proc.stdout:
        print("    | " + line.rstrip(), flush=True)
        match = re.search(r"ratio blockmig / virsh \(medians\): ([0-9.]+)", line)
        if match:
            ratio = float(match.group(1))
    proc.wait()
    if ratio is not None:
        print(
            f"    full-copy ratio blockmig / virsh blockcopy: {ratio:.3f}× (goal ≤ 1.02: {'met' if ratio <= 1.02 else 'NOT met'})"
        )
    else:
        print(f"    bench_migration.py printed no ratio (exit code {proc.returncode})")
    return {"ratio": ratio, "rc": proc.returncode}
