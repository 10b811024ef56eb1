"""Fault tolerance: kill a multi-process ``captum-cfx explain --data`` run with SIGKILL at random moments,
resume it each time, and check that the final shards equal an uninterrupted run's bit for bit.

    python benchmarks/kill_resume.py --n 2000 --shard-size 100 --nproc 2 --kills 5 --min-delay 4 --max-delay 7

(the committed full run: 2,000 digits now take about 20 s on 2 ranks, so kills must come within seconds of each
start to land mid-run; with the default delays the first attempt finishes before its kill.)

The tests run it with small sizes (tests/test_runner.py). Results: benchmarks/results/kill_resume_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def _descendants(pid: int) -> list[int]:
    """PIDs of every live descendant of ``pid`` (read from /proc). torchrun starts its workers in sessions of
    their own, so killing torchrun's process group leaves them running, blocked on their dead peers."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _kill_tree(p: subprocess.Popen) -> None:
    """SIGKILL ``p``'s process group and every descendant, as a machine failure would."""
    pids = _descendants(p.pid)
    os.killpg(p.pid, signal.SIGKILL)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait()


def _free_port() -> int:
    """A port no one listens on now: a fixed sequence collides with other runs on a shared machine (EADDRINUSE)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cmd(nproc: int, port: int, out: Path, a: argparse.Namespace, resume: bool) -> list[str]:
    cli = [sys.executable, "-m", "captum_cfx.cli", "explain", "--data", a.data, "--limit", str(a.n),
           "--shard-size", str(a.shard_size), "--max-steps", str(a.max_steps), "--out", str(out), "--no-progress"]
    if resume:
        cli.append("--resume")
    if nproc == 1:
        return cli
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_port", str(port), *cli[1:]]


def run(a: argparse.Namespace) -> dict:
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    rng = random.Random(a.seed)

    t0 = time.perf_counter()
    subprocess.run(_cmd(1, 0, work / "reference", a, False), check=True, env=env, capture_output=True)
    t_ref = time.perf_counter() - t0

    kills = []
    out = work / "killed"
    for i in range(a.kills):
        p = subprocess.Popen(_cmd(a.nproc, _free_port(), out, a, resume=i > 0), env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        delay = rng.uniform(a.min_delay, a.max_delay)
        try:
            p.wait(timeout=delay)
            kills.append({"attempt": i, "delay": delay, "killed": False, "returncode": p.returncode})
        except subprocess.TimeoutExpired:
            _kill_tree(p)
            done = len(list(out.glob("shard_*.json"))) if out.exists() else 0
            kills.append({"attempt": i, "delay": delay, "killed": True, "shards_done_at_kill": done})
    t0 = time.perf_counter()
    final = subprocess.run(_cmd(a.nproc, _free_port(), out, a, resume=True), env=env, capture_output=True, text=True)
    t_final = time.perf_counter() - t0
    if final.returncode != 0:
        raise SystemExit(f"final resume failed:\n{final.stderr[-3000:]}")

    ref_files = sorted(p.name for p in (work / "reference").glob("shard_*.safetensors"))
    got_files = sorted(p.name for p in out.glob("shard_*.safetensors"))
    identical = ref_files == got_files and all(
        (work / "reference" / f).read_bytes() == (out / f).read_bytes() for f in ref_files)
    manifest = json.loads((out / "manifest.json").read_text())
    shard_ids = [s["shard"] for s in manifest["shards"]]
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    result = {
        "n": a.n, "shard_size": a.shard_size, "nproc": a.nproc, "kills": kills,
        "n_shards": len(ref_files), "identical_to_uninterrupted": identical,
        "duplicate_shards": len(shard_ids) != len(set(shard_ids)), "partial_files_left": leftovers,
        "reference_seconds_1proc": t_ref, "final_resume_seconds": t_final,
        "summary": json.loads((out / "summary.json").read_text()),
    }
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="mnist-train")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--shard-size", type=int, default=100)
    p.add_argument("--max-steps", type=int, default=500)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--min-delay", type=float, default=4.0)
    p.add_argument("--max-delay", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="/tmp/cfx_kill_resume")
    p.add_argument("--out", default=None, help="write the JSON result here")
    a = p.parse_args(argv)
    result = run(a)
    text = json.dumps(result, indent=2)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")
    print(text)
    print(f"\n| n | shards | ranks | kills | identical | duplicates | partial files |\n|---|---|---|---|---|---|---|\n"
          f"| {a.n} | {result['n_shards']} | {a.nproc} | {sum(k['killed'] for k in result['kills'])} "
          f"| {result['identical_to_uninterrupted']} | {result['duplicate_shards']} "
          f"| {len(result['partial_files_left'])} |")
    return result


if __name__ == "__main__":
    main()
