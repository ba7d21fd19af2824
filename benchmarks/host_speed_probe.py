"""Print one runner-speed probe (pytest_llmperf/hostspeed.py): score, parts, spread.

    python benchmarks/host_speed_probe.py [RUNS]      (default: 1 run per process)

Run it several times, and beside busy loops (`python -c "while True: pass" &`), to see
how stable the probe is and what slows it (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import sys
import time

from pytest_llmperf.hostspeed import measure_host_speed


def main() -> None:
    for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 1):
        t0 = time.perf_counter()
        speed = measure_host_speed()
        parts = ", ".join(f"{k} {v:.2f}/s" for k, v in speed.parts.items())
        print(f"{speed.score:.2f} ({parts}; spread {speed.spread:.1%}; {time.perf_counter() - t0:.2f} s)")


if __name__ == "__main__":
    main()
