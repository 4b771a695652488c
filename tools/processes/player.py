"""`cdz play`: a run's teaching stream (`--run`, `replay.player`) or a recorded session (FILE.mcap,
`replay.recording_player`) onto the bus."""

from __future__ import annotations

import argparse
import sys

from agent.runtime import flags
from agent.runtime.service import terminate_cleanly
from agent.runtime.topology import Process
from replay import recording
from tools.command_line import bus_arguments, connect, log_to_stderr, profiled

PROCESS = Process(
    "player", ("play",), "play a recorded session (FILE.mcap) or a run's teaching stream (--run) onto the bus",
    ("cdz play session.mcap --bus tcp://127.0.0.1:5570 --speed 1",
     "cdz play --run runs/latest --bus tcp://127.0.0.1:5570 --speed 1.0"),
    hears=("credit",), says=("stimulus.{m}",))


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("file", nargs="?", help="an MCAP file from `cdz record` (else --run plays the teaching stream)")
    bus_arguments(sp)
    sp.add_argument("--run", help="a run folder: play its teaching stream instead of a FILE")
    # --run only, not shown: the player's live flow, and the generation the launcher sets
    sp.add_argument("--live", action="store_true", help=argparse.SUPPRESS)
    sp.add_argument("--gen", type=flags.NON_NEGATIVE_INT, default=0, help=argparse.SUPPRESS)
    sp.add_argument("--speed", type=flags.NON_NEGATIVE,
                    help="1.0 = the recorded / the stimuli's own timing, 2.0 = twice as fast, 0 = as fast as "
                         "possible (default: 1.0 for a file, 0 for --run)")
    sp.add_argument("--window", type=flags.COUNT, default=256,
                    help="--run: stimuli in flight before waiting for the hub's acknowledgements")
    sp.add_argument("--wait-go", action="store_true", help="--run: wait for the launcher's go (set by the launcher)")
    sp.add_argument("--topics", type=recording.parse_topics, default=recording.SENSOR_TOPICS,
                    help="a file: topic prefixes to play, comma-separated (default: what the sensors published, "
                         f"{','.join(recording.SENSOR_TOPICS)})")
    sp.add_argument("--clock", choices=("receive", "event"), default="receive",
                    help="a file: pace by when the recorder received each message (default) or by event time")
    sp.add_argument("--follow", type=flags.NON_NEGATIVE_INT, default=0, metavar="N",
                    help="a file: as fast as the workers learn, at most N stimuli sent and not yet answered by an "
                         "excitation (with --speed 0; default 0: no flow control)")


def run(args: argparse.Namespace) -> int:
    terminate_cleanly()
    if args.file:
        if args.run:
            raise ValueError("cdz play takes a recording FILE or --run RUN, not both")
        args.speed = 1.0 if args.speed is None else args.speed
        log_to_stderr(args.quiet)
        return play_file(args)
    if not args.run:
        raise ValueError("cdz play needs a recording (cdz play FILE.mcap) or a run (cdz play --run RUN)")
    args.speed = 0.0 if args.speed is None else args.speed
    from agent.pack import open_run
    from replay.player import Player, teaching_playlist

    log_to_stderr(args.quiet)
    run_folder = open_run(args.run)
    playlist = teaching_playlist(run_folder.config())
    start = 0 if args.wait_go else run_folder.load_checkpoint()[0]  # by hand: go on from where the run stands
    if start >= len(playlist):
        print(f"{run_folder.path} has learned all {len(playlist)} stimuli of its stream: nothing to play",
              file=sys.stderr)
        return 0
    client = connect(args, PROCESS.kind, PROCESS.topics())
    try:
        player = Player(client, playlist, lossless=not args.live, speed=args.speed, window=args.window,
                        gen=args.gen, exit_when_done=not args.wait_go, wall_clock=args.live)
        if args.wait_go:
            player.ready()
        else:
            player.start(start)
        profiled(lambda: player.run(timeout_ms=1), "player")
    finally:
        client.close()
    return 0


def play_file(args: argparse.Namespace) -> int:
    """`cdz play FILE`: the recording's frames, paced as recorded (or as fast as the workers learn)."""
    from replay.recording_player import RecordingPlayer

    recording.check_recording(args.file)  # before connecting: a wrong file is an error at once (the CLI exits 2)
    client = connect(args, "recording_player", [b"excite."] if args.follow else [])
    try:
        player = RecordingPlayer(client, args.file, topics=args.topics, speed=args.speed, clock=args.clock,
                                 follow=args.follow)
        try:
            player.ready()
            player.run(timeout_ms=1)
        finally:
            player.close()
        print(f"played {player.sent} messages of {args.file}{'' if player.finished else ' (stopped early)'}",
              file=sys.stderr)
    finally:
        client.close()
    return 0
