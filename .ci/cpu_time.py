"""Run a command and print its wall and CPU time (user + sys of it and every process it waits for).

    python .ci/cpu_time.py LABEL BUDGET_S COMMAND...

The CI machine is shared, so wall time says little about the suite's own cost; CPU time does. Exits with the
command's status, or 1 when the command passed but its CPU time is over ``BUDGET_S``.
"""

import resource
import subprocess
import sys
import time

label, budget, cmd = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
start = time.perf_counter()
code = subprocess.call(cmd)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = r.ru_utime + r.ru_stime
print(f"{label}: {time.perf_counter() - start:.0f}s wall, {cpu:.1f}s CPU (user {r.ru_utime:.1f}s + sys "
      f"{r.ru_stime:.1f}s; budget {budget:.0f}s CPU)")
if code == 0 and cpu > budget:
    print(f"{label}: over the CPU budget ({cpu:.1f}s > {budget:.0f}s)", file=sys.stderr)
    code = 1
sys.exit(code)
