"""Run every benchmark in this folder (``make bench``); each prints its own timings and ratios."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
QUICK_ARGS = {"bench_equiav_step.py": ["--tiny"]}  # the paper-size run takes minutes; run it by hand
failed = []
for script in sorted(here.glob("bench_*.py")):
    print(f"\n=== {script.name} ===", flush=True)
    if subprocess.run([sys.executable, str(script), *QUICK_ARGS.get(script.name, [])], check=False).returncode:
        failed.append(script.name)
if failed:
    sys.exit(f"failed: {', '.join(failed)}")
