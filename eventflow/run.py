"""`python -m eventflow.run`: NATS, Redis and every service as child processes (`make run/up/down/status`).

Foreground by default (Ctrl-C stops everything, services first, then Redis, then NATS); `--detach` runs the
same supervisor in the background and returns once everything is ready; `--down` and `--status` act on
what the state file in `<var>/run/` records, so they work for a foreground `make run` too. A child that crashes
once the system is up is restarted (eventflow.supervisor); `--status` shows its restarts and last exit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from eventflow.supervisor import Supervisor, failure_report, summary
from eventflow.system import ROOT, Layout, alive, read_state, ready, terminate


def running(layout: Layout) -> dict[str, Any] | None:
    state = read_state(layout)
    if state and (alive(state["supervisor"]) or any(alive(p) for p in state.get("processes", []))):
        return state
    return None


def foreground(layout: Layout, background: bool = False) -> int:
    if running(layout):
        print("EventFlow is already running here (see `make status`; stop it with `make down`)", file=sys.stderr)
        return 1
    try:
        hint = "" if background else "Ctrl-C stops everything."
        return Supervisor(layout, os.environ, hint).run()
    except KeyboardInterrupt:
        return 0


def detach(layout: Layout) -> int:
    if running(layout):
        print("EventFlow is already running here (see `make status`; stop it with `make down`)", file=sys.stderr)
        return 1
    layout.log_dir.mkdir(parents=True, exist_ok=True)
    with open(layout.log_dir / "supervisor.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "eventflow.run", "--background"], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + layout.ready_timeout + 60
    while time.monotonic() < deadline:
        state = read_state(layout)
        mine = state is not None and state["supervisor"]["pid"] == proc.pid
        if mine and state and state["phase"] == "ready":
            print(summary(state) + "Stop it with `make down`.")
            return 0
        if proc.poll() is not None:
            print(failure_report(state if mine else None, layout), file=sys.stderr)
            return 1
        time.sleep(0.2)
    terminate(proc.pid, {"pid": proc.pid, "match": ["eventflow.run"]}, timeout=30)
    print("EventFlow did not become ready in time; stopped it (logs in var/log/)", file=sys.stderr)
    return 1


def down(layout: Layout) -> int:
    state = read_state(layout)
    if not state:
        print("EventFlow is not running here: nothing to stop")
        return 0
    supervisor = state["supervisor"]
    if alive(supervisor):
        terminate(supervisor["pid"], supervisor, timeout=60)
    for entry in reversed(state.get("processes", [])):
        if alive(entry):  # the supervisor was killed and left these behind
            terminate(entry["pid"], entry)
    layout.state_file.unlink(missing_ok=True)
    print("EventFlow stopped")
    return 0


def status(layout: Layout) -> int:
    state = read_state(layout)
    if not state:
        print("EventFlow is not running here (start it with `make up` or `make run`)")
        return 3
    supervisor_alive = alive(state["supervisor"])
    print(f"EventFlow: {state['phase']}{'' if supervisor_alive else ' (supervisor not running)'}", end="")
    print(f" - {state['error']}" if state.get("error") else "")
    print(f"{'NAME':<13} {'PID':>8} {'PORT':>6}  {'ALIVE':<10} {'READY':<5} {'RESTARTS':>8}  LAST EXIT")
    healthy = supervisor_alive
    for entry in state.get("processes", []):
        is_alive = entry["external"] or alive(entry)
        is_ready = is_alive and ready(entry)
        healthy = healthy and is_ready
        shown_alive = "external" if entry["external"] else ("yes" if is_alive else "no")
        if entry.get("restarting") and not is_alive:
            shown_alive = "restarting"
        port = entry["port"] or urlsplit(entry["url"].split(",")[0]).port or "-"
        restarts = entry.get("restarts") or 0
        shown_ready = "yes" if is_ready else "no"
        print(
            f"{entry['name']:<13} {entry['pid'] or '-':>8} {port:>6}  {shown_alive:<10} {shown_ready:<5} "
            f"{restarts:>8}  {entry.get('last_exit') or '-'}"
        )
    print(f"logs: {Path(state['var_dir']) / 'log'}/")
    return 0 if healthy else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eventflow.run", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--detach", action="store_true", help="start in the background; return when ready")
    group.add_argument("--down", action="store_true", help="stop what is running")
    group.add_argument("--status", action="store_true", help="list each process: pid, port, alive, ready")
    group.add_argument("--background", action="store_true", help=argparse.SUPPRESS)  # what --detach starts
    args = parser.parse_args(argv)
    try:
        layout = Layout.from_env(os.environ)
    except ValueError as err:
        print(f"EventFlow: {err}", file=sys.stderr)
        return 2
    if args.down:
        return down(layout)
    if args.status:
        return status(layout)
    if args.detach:
        return detach(layout)
    return foreground(layout, background=args.background)


if __name__ == "__main__":
    sys.exit(main())
