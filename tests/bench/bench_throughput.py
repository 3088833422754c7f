"""Message throughput: can comfy-cli keep up with a flood of progress messages?

The simulator runs in-process. One prompt, TestSteps with steps=100000 and seconds_per_step=0
(then SaveImage), sends a `progress` and a `progress_state` frame per step, so about 200k
text frames go to the one client. A Faults.on_ws_send hook counts the text frames sent to the
client up to `execution_success` and notes when the first one went out. Each round runs, as
subprocesses and alternated:

  (a) comfy-cli run --progress bars, stderr a pseudo-terminal (pty.openpty(); a thread
      drains the master side and counts the bytes, so the child never blocks on the pty);
  (b) comfy-cli run --progress lines, stderr a pipe drained the same way;
  (c) tests/bench/ref_client.py on the same flood (stderr a pipe).

Every run gets a fresh seed (nothing from the cache). Per run: messages/s = frames / (time
from the first frame sent to the process's exit), so a client that lags behind is charged for
its backlog; client CPU µs per message = the child's user+sys (os.wait4) / frames, start-up
included (the share spent in the kernel and the context switches per message are shown too);
and for (a) the bytes written to the terminal per second and the number of redraws
(carriage returns), which must stay small if redraws are rate-limited. Targets: at least
50k messages/s; bar redraws rate-limited.

Usage: python tests/bench/bench_throughput.py [--runs N] [--steps N]
"""

import argparse
import fcntl
import json
import os
import pty
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import COMFY_CLI, REPO, header  # noqa: E402

from comfy_cli.sim import Faults, SimServer  # noqa: E402

REF_CLIENT = str(Path(__file__).resolve().parent / "ref_client.py")
TARGET_RATE = 50_000


class FrameCounter(Faults):
    """Counts the text frames written to the client from execution_start up to and including
    execution_success (one client at a time)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.frames = 0
            self.first = None
            self.success = None

    def on_ws_send(self, client_id, payload):
        if isinstance(payload, str) and self.success is None:
            now = time.monotonic()
            if self.first is None:
                if '"execution_start"' not in payload:
                    return "send"  # the connect-time status frames are not part of the flood
                self.first = now
            self.frames += 1
            if '"execution_success"' in payload:
                self.success = now
        return "send"


class Drain(threading.Thread):
    """Reads a file descriptor until EOF (or EIO, the pty's EOF) and counts bytes and redraws."""

    def __init__(self, fd):
        super().__init__(daemon=True)
        self.fd = fd
        self.bytes = 0
        self.returns = 0  # b"\r": one per tqdm redraw
        self.tail = b""

    def run(self):
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except OSError:  # EIO: every slave fd is closed
                break
            if not chunk:
                break
            self.bytes += len(chunk)
            self.returns += chunk.count(b"\r")
            self.tail = (self.tail + chunk)[-4000:]


def graph(steps, seed):
    return {"1": {"class_type": "TestSteps", "inputs": {"steps": steps, "seconds_per_step": 0.0, "seed": seed}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "flood"}}}


def run_one(argv, counter, tmp, use_pty):
    """Run argv once under the flood; return a dict of measurements."""
    counter.reset()
    if use_pty:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    else:
        master, slave = os.pipe()
    drain = Drain(master)
    drain.start()
    out_path = os.path.join(tmp, "stdout")
    try:
        with open(out_path, "wb") as out:
            started = time.monotonic()
            proc = subprocess.Popen(argv, stdout=out, stderr=slave, stdin=subprocess.DEVNULL, cwd=REPO)
            os.close(slave)  # the child holds the only copy now: EOF when it exits
            _, status, usage = os.wait4(proc.pid, 0)
            exited = time.monotonic()
        proc.returncode = code = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        drain.join(10)
    finally:
        os.close(master)
    if code != 0 or counter.success is None:
        stdout = Path(out_path).read_text(errors="replace")
        sys.exit(f"exited {code} (execution_success sent: {counter.success is not None})\n$ {' '.join(argv)}\n"
                 f"{stdout[-2000:]}{drain.tail.decode(errors='replace')[-2000:]}")
    span = exited - counter.first
    return {"frames": counter.frames, "rate": counter.frames / span, "wall": exited - started,
            "span": span, "send_span": counter.success - counter.first,
            "cpu_us": (usage.ru_utime + usage.ru_stime) * 1e6 / counter.frames,
            "sys_share": usage.ru_stime / max(usage.ru_utime + usage.ru_stime, 1e-9),
            "switches": (usage.ru_nvcsw + usage.ru_nivcsw) / counter.frames,
            "tty_bytes": drain.bytes, "tty_rate": drain.bytes / span, "redraws": drain.returns}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds, each running the three clients (default 3)")
    parser.add_argument("--steps", type=int, default=100_000, help="TestSteps steps (default 100000, the maximum)")
    args = parser.parse_args()
    if args.runs < 1 or not 1 <= args.steps <= 100_000:
        parser.error("--runs must be at least 1 and --steps between 1 and 100000")
    header(f"bench_throughput: one prompt flooding {args.steps} progress steps (progress + progress_state "
           f"frames)", args.runs)
    counter = FrameCounter()
    labels = ("comfy-cli bars (pty)", "comfy-cli lines", "ref_client.py")
    results = {label: [] for label in labels}
    seed = 0
    with SimServer(faults=counter) as sim, tempfile.TemporaryDirectory() as tmp:
        workflow = os.path.join(tmp, "flood.json")
        argv = {
            labels[0]: [COMFY_CLI, "run", "--progress", "bars", "--url", sim.url, workflow],
            labels[1]: [COMFY_CLI, "run", "--progress", "lines", "--url", sim.url, workflow],
            labels[2]: [sys.executable, REF_CLIENT, sim.url, workflow],
        }
        for _ in range(args.runs):
            for label in labels:
                seed += 1
                with open(workflow, "w") as fh:  # fresh seed: the steps really run
                    json.dump(graph(args.steps, seed), fh)
                results[label].append(run_one(argv[label], counter, tmp, use_pty=label == labels[0]))

    def med(label, key):
        return statistics.median(r[key] for r in results[label])

    ref_rate = med(labels[2], "rate")
    width = max(map(len, labels))
    print(f"{'client':<{width}}  {'frames':>7}  {'msgs/s':>8}  {'min':>8}  {'ratio':>5}  {'CPU µs/msg':>10}"
          f"  {'sys %':>5}  {'ctxsw/msg':>9}  {'wall s':>6}  {'stderr B/s':>10}  {'redraws':>7}  target")
    for label in labels:
        rates = [r["rate"] for r in results[label]]
        target = "(reference)" if label == labels[2] else f">= {TARGET_RATE // 1000}k msgs/s"
        print(f"{label:<{width}}  {med(label, 'frames'):7.0f}  {med(label, 'rate'):8.0f}  {min(rates):8.0f}"
              f"  {med(label, 'rate') / ref_rate:4.2f}x  {med(label, 'cpu_us'):10.2f}"
              f"  {med(label, 'sys_share') * 100:5.0f}"
              f"  {med(label, 'switches'):9.2f}  {med(label, 'wall'):6.2f}"
              f"  {med(label, 'tty_rate'):10.0f}  {med(label, 'redraws'):7.0f}  {target}")
    print()
    print("simulator send time (first frame -> execution_success), median per client: "
          + ", ".join(f"{label} {med(label, 'send_span'):.2f} s" for label in labels))
    print("msgs/s = text frames from execution_start to execution_success / (first of them sent -> process "
          "exit); CPU = child user+sys, start-up included; ctxsw = the child's context switches (voluntary + "
          "involuntary) per message")
    for label in labels[:2]:
        rate = med(label, "rate")
        print(f"{label}: {rate:,.0f} msgs/s, {'within' if rate >= TARGET_RATE else 'BELOW'} the "
              f"{TARGET_RATE:,} msgs/s target")
    bars = labels[0]
    print(f"bars: {med(bars, 'tty_bytes'):,.0f} bytes and {med(bars, 'redraws'):.0f} redraws written to the terminal "
          f"over {med(bars, 'span'):.1f} s ({med(bars, 'redraws') / med(bars, 'span'):.1f} redraws/s, "
          f"{med(bars, 'tty_rate'):,.0f} B/s; the bar redraws at most every 0.1 s, so ~10/s is rate-limited; a few "
          f"fixed redraws per prompt (queued, start, end, close) dominate short runs)")


if __name__ == "__main__":
    main()
