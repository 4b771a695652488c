"""`cdz bus`: the message bus, the XSUB/XPUB forwarder every other process connects to (`agent.runtime.bus`)."""

from __future__ import annotations

import argparse
import sys
import threading

from agent.runtime.bus import Forwarder
from agent.runtime.service import terminate_cleanly
from agent.runtime.topology import Process
from tools.command_line import bus_arguments, log_to_stderr

PROCESS = Process(
    "bus", ("bus",), "run the message bus (XSUB/XPUB forwarder) that all processes connect to",
    ("cdz bus --bus tcp://127.0.0.1:5570", "cdz bus --bus ipc:///tmp/cdz-bus"),
    description=("Run the message bus: the XSUB/XPUB forwarder every runtime process connects to.\nOff loopback it "
                 "needs --keys. An address in use (a tcp port, or the ipc path of a live bus) is refused;\nthe socket "
                 "files of a bus that died are reused. Ctrl-C or SIGTERM stops it cleanly (an ipc bus\nremoves its "
                 "files)."))


def add_arguments(sp: argparse.ArgumentParser) -> None:
    bus_arguments(sp, connect_timeout=None)


def run(args: argparse.Namespace) -> int:
    """Forward until Ctrl-C or SIGTERM, then close the sockets (and remove an ipc bus's files): exit 0."""
    log_to_stderr(args.quiet)
    terminate_cleanly()
    fwd = Forwarder(args.bus, keys=args.keys)  # a busy address (tcp or a live ipc path) is a BusError: exit 2
    print(f"bus: publishers -> {fwd.address.pub}, subscribers -> {fwd.address.sub}"
          f"{' (CurveZMQ)' if fwd.keys else ''}", file=sys.stderr, flush=True)
    print(f"bus at {fwd.address.text}", file=sys.stderr, flush=True)  # the address to give the others (port 0 picked)
    forwarding = threading.Thread(target=fwd.run, name="forwarder", daemon=True)
    forwarding.start()
    try:  # the main thread only waits, so Ctrl-C and SIGTERM (agent.runtime.service.Terminated) are always heard
        while forwarding.is_alive():
            forwarding.join(0.2)
    except KeyboardInterrupt:
        fwd.stop()
        forwarding.join(5.0)
    finally:
        fwd.close()
    print("bus: stopped", file=sys.stderr, flush=True)
    return 0
