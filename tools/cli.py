"""The `cdz` command: train, eval, replay, recall, plots, bench.

Human tables and progress bars go to the terminal (bars on stderr); with `--json`
exactly one JSON object goes to stdout so other programs can read the result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.runtime import flags
DEFAULT_RUNS = Path("runs")
RUN_HELP = "the agent: a run folder (from `cdz replay` or `cdz train`) or a pack (from `cdz pack`)"

EPILOG = """examples:
  cdz replay                              train on MNIST+FSDD from scratch, then print the score table
  cdz replay --set data.digits=[0,1,2] --set teacher.epochs=1   a quick 3-digit run
  cdz replay --seeds 0-9 --no-baselines   ten seeds: a per-seed table, mean, min, seeds with exactly 10 classes
  cdz eval --run runs/latest --json       every score of a finished run as JSON
  cdz recall --run runs/latest seven.png zero.wav   what the agent recalls for your own files
  cdz pack --run runs/latest --out demo.cdzpack   one file to share the trained agent
  cdz plots --run runs/latest             t-SNE, decoded cluster modes, learning curves
  cdz bench core                          stream-learning throughput vs a plain implementation
  cdz sleep --run runs/latest             teach the encoders on what the live agent met
  cdz bench adapt --json                  new voices: recall before and after a session and a sleep
  cdz bench robustness --json             unseen speakers, noise, distortion, teacher mistakes (trains 9 runs)
  cdz replay --distributed                the same job with bus, hub, workers and player as processes
  cdz bench pipeline --json               runtime throughput, live latency, bare ZeroMQ floor
  cdz bench record                        what the Foxglove views cost the recorder per message
  cdz top --bus tcp://127.0.0.1:5570      live stats of every runtime process on a bus

data is found through CDZ_DATA_DIR (folders mnist/ and fsdd/), then ~/.cache/cdz-agent.
CDZ_DEBUG=1 shows full tracebacks instead of one-line errors."""


def _config_from_args(args: argparse.Namespace):
    """The settings: the defaults, or `--config FILE`; then `--seed` and every `--set`, in that order."""
    from dataclasses import replace

    from agent.core.config import Config, SettingsError, load_toml, override

    if args.config:
        try:
            config = load_toml(Path(args.config))
        except OSError as exc:
            raise SettingsError(f"--config {args.config}: {exc.strerror or exc}") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise SettingsError(f"--config {args.config}: {exc}") from None
    else:
        config = Config()
    if args.seed is not None:
        config = replace(config, seed=args.seed)
    return override(config, args.set or [])


def _run_dir(args: argparse.Namespace, config) -> Path:
    if args.out:
        return Path(args.out)
    return DEFAULT_RUNS / f"{time.strftime('%Y%m%d-%H%M%S')}-seed{config.seed}"


def _point_latest(run_path: Path) -> None:
    """runs/latest -> the newest run, for convenience (best effort)."""
    link = run_path.parent / "latest"
    try:
        if link.is_symlink() or not link.exists():
            link.unlink(missing_ok=True)
            link.symlink_to(run_path.resolve(), target_is_directory=True)
    except OSError:
        pass


def _print_json(obj: Any) -> None:
    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(type(o))

    json.dump(obj, sys.stdout, default=default)
    sys.stdout.write("\n")


def cmd_train(args: argparse.Namespace) -> int:
    from replay.driver import train

    if args.resume:
        run = train(None, args.resume, progress=not args.quiet, resume=True)
    else:
        config = _config_from_args(args)
        run = train(config, _run_dir(args, config), progress=not args.quiet, overwrite=args.overwrite)
    _point_latest(run.path)
    print(f"run folder: {run.path}", file=sys.stderr)
    return 0


def _open_run(path: str):
    """A run folder, or a pack unpacked into the cache (`agent.pack.open_run`)."""
    from agent.pack import open_run

    return open_run(path)


def cmd_eval(args: argparse.Namespace) -> int:
    from tools.scoring.evaluate import evaluate, format_table

    result = evaluate(_open_run(args.run), progress=not args.quiet, baselines=not args.no_baselines,
                      judges=not args.no_judges)
    if args.json:
        _print_json(result)
    else:
        print(format_table(result))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from tools.scoring.evaluate import evaluate, format_seeds, format_table, summarise_seeds
    from replay.driver import train

    seeds = [args.seed] if args.seeds is None else args.seeds
    results = []
    for seed in seeds:
        args.seed = seed
        config = _config_from_args(args)
        out = _run_dir(args, config)
        if args.out and len(seeds) > 1:
            out = Path(args.out) / f"seed{seed}"
        if args.distributed and args.recording:
            raise ValueError("--recording learns in this process; leave out --distributed")
        if args.distributed:
            from replay.distributed import distributed_train

            run, info = distributed_train(config, out, progress=not args.quiet, overwrite=args.overwrite,
                                          bus=args.bus, checkpoint_every=args.checkpoint_every, speed=args.speed)
        else:
            run, info = train(config, out, progress=not args.quiet, overwrite=args.overwrite,
                              recording=args.recording), {}
        _point_latest(run.path)
        result = evaluate(run, progress=not args.quiet, baselines=not args.no_baselines, judges=not args.no_judges)
        result["run"] = str(run.path)
        if args.distributed:
            result["lost_stimuli"] = info["lost_stimuli"]
            result["restarts"] = info["restarts"]
        results.append(result)
        if not args.json:
            print(format_table(result))
            print(f"\nrun folder: {run.path}  (cdz plots --run {run.path} draws pictures)\n")
    if len(seeds) > 1:
        summary = summarise_seeds(results)
        if args.json:
            _print_json({"seeds": results, **summary})
        else:
            print(format_seeds(summary))
    elif args.json:
        _print_json(results[0])
    return 0


def _seed_list(text: str) -> list[int]:
    """'0,1,2', '0-9' or '0-4,7': the seeds to run, in order, without repeats."""
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            lo, sep, hi = part.partition("-")
            span = range(int(lo), int(hi) + 1) if sep else [int(part)]
            if sep and int(hi) < int(lo):
                raise ValueError
            seeds += [s for s in span if s not in seeds]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds wants seeds and ranges such as 0-9 or 0,3,5-7, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("--seeds needs at least one seed")
    return seeds


def cmd_recall(args: argparse.Namespace) -> int:
    """Each file is checked before the brain loads; a bad one is reported on stderr (and in the JSON
    list, as an entry with "error") and skipped. Exit 0: all answered, 1: some failed, 2: all failed."""
    from tools.recall import exit_code, failures, format_failure, format_recall, recall_files

    if not args.files and not args.reward:
        print("cdz recall: error: give image or wav files, or --reward VALUE", file=sys.stderr)
        return 2
    results = recall_files(args.run, [Path(f) for f in args.files], Path(args.out) if args.out else None,
                           before_load=_single_thread_torch, rewards=args.reward)
    for r in failures(results):
        print(f"cdz recall: error: {format_failure(r)}", file=sys.stderr)
    if args.json:
        _print_json(results)
    else:
        text = format_recall(results)
        if text:
            print(text)
    return exit_code(results)


def cmd_pack(args: argparse.Namespace) -> int:
    from agent.pack import card_text, write_pack
    from replay.naming import run_names

    run = _open_run(args.run)
    card = write_pack(run, Path(args.out), run_names(run), overwrite=args.overwrite)
    size = Path(args.out).stat().st_size
    print(card_text(card), end="")
    print(f"\npack: {args.out} ({size / 2**20:.1f} MiB)", file=sys.stderr)
    return 0


def cmd_samples(args: argparse.Namespace) -> int:
    from tools.samples import write_samples

    for path in write_samples(Path(args.out)):
        print(path)
    return 0


def cmd_unpack(args: argparse.Namespace) -> int:
    from agent.pack import unpack

    run = unpack(args.run, args.out)
    print(f"run folder: {run.path}", file=sys.stderr)
    return 0


def cmd_sleep(args: argparse.Namespace) -> int:
    from agent.pack import open_writable_run
    from tools.sleep import sleep_run

    report, info = sleep_run(open_writable_run(args.run), args.set or [])
    if args.json:
        _print_json(info)
    else:
        print(f"slept on stimulus {info['step']}'s experience, now stage {info['stage']}: {report.summary()}")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from agent.core.config import Config
    from agent.runtime.supervisor import SUPERVISORS
    from agent.runtime.topology import graph, live_roles, lossless_roles, members, mermaid

    senses, run = Config().modalities, Path("RUN")
    if args.lossless:
        roles = lossless_roles(run, senses, total=0, checkpoint_every=0, window=1, speed=0.0)
    else:
        roles = live_roles(run, senses, camera="0", use_mic=True, viewer=True, speak=True, think=True, lsl=True)
    g = graph(members(roles, SUPERVISORS[args.lossless]), senses)
    if args.json:
        print(json.dumps(g, indent=1))
    elif args.mermaid:
        print(mermaid(g))
    else:
        width = max(len(p["name"]) for p in g["processes"])
        for p in g["processes"]:
            print(f"{p['name']:{width}s}  {p['module'].replace('.', '/')}.py")
            print(f"{'':{width}s}  hears {', '.join(p['hears'])}")
            print(f"{'':{width}s}  says  {', '.join(p['says']) or '-'}")
        print(f"{len(g['edges'])} edges (sayer, topic, hearer): --json or --mermaid lists them")
    return 0


def cmd_plots(args: argparse.Namespace) -> int:
    from tools.scoring.report import make_plots

    paths = make_plots(_open_run(args.run), progress=not args.quiet)
    for p in paths:
        print(p)
    return 0


def _bench_out(args: argparse.Namespace, result: dict, text: str | None) -> int:
    """A bench's table on stdout, or with --json the table on stderr and one JSON object on stdout."""
    if text is not None:
        print(text, file=sys.stderr if args.json else sys.stdout)
    if args.json:
        _print_json(result)
    return 0


def bench_core(args: argparse.Namespace) -> int:
    from tools.bench.core import bench_core, format_core

    result = bench_core(n_stimuli=args.stimuli, repeats=args.repeats, progress=not args.quiet)
    return _bench_out(args, result, None if args.json else format_core(result))


def bench_pipeline(args: argparse.Namespace) -> int:
    from tools.bench.pipeline import bench_pipeline, format_pipeline

    result = bench_pipeline(seconds=args.seconds, progress=not args.quiet)
    return _bench_out(args, result, format_pipeline(result))


def bench_live(args: argparse.Namespace) -> int:
    from tools.bench.live import bench_live, format_live

    session = None if args.session_sink is None else {
        "words": args.session_words, "sink": args.session_sink, "mic": args.session_mic,
        "sleep_every_min": args.session_sleep_every}
    if session is not None and args.speaker is None:
        raise ValueError("--session-sink needs --speaker: the new voice the session is spoken in")
    result = bench_live(_open_run(args.run), cards=args.cards, utterances=args.utterances, speaker=args.speaker,
                        session=session)
    return _bench_out(args, result, format_live(result))


def bench_pictures(args: argparse.Namespace) -> int:
    from tools.bench.pictures import bench_pictures, format_pictures

    _open_run(args.run)  # a clear error before the pictures are made
    result = bench_pictures(args.run, n=args.n, seed=args.seed)
    return _bench_out(args, result, format_pictures(result))


def _voice(text: str) -> str:
    from replay.data.datasets import FSDD_SPEAKERS

    if text not in FSDD_SPEAKERS:
        raise argparse.ArgumentTypeError(f"--speaker takes one of {', '.join(FSDD_SPEAKERS)}; got {text!r}")
    return text


def _cases(text: str) -> str:
    from tools.bench.robustness import CASES

    unknown = [c for c in text.split(",") if c and c not in CASES]
    if unknown or not text.strip(","):
        raise argparse.ArgumentTypeError(f"--cases takes {', '.join(CASES)}; got {text!r}")
    return text


def _speakers(args: argparse.Namespace) -> list[str] | None:
    return [s for s in args.speakers.split(",") if s] if args.speakers else None


def bench_robustness(args: argparse.Namespace) -> int:
    from tools.bench.robustness import bench_robustness, format_robustness

    config = _config_from_args(args)
    out = Path(args.out) if args.out else DEFAULT_RUNS / f"robustness-seed{config.seed}"
    cases = tuple(c for c in args.cases.split(",") if c)
    result = bench_robustness(config, out, speakers=_speakers(args), progress=not args.quiet, cases=cases)
    return _bench_out(args, result, format_robustness(result))


def bench_adapt(args: argparse.Namespace) -> int:
    from tools.bench.adapt import bench_adapt, format_adapt, live_adapt

    config = _config_from_args(args)
    out = Path(args.out) if args.out else DEFAULT_RUNS / f"adapt-seed{config.seed}"
    speakers = _speakers(args)
    sizes = tuple(int(k) for k in args.events.split(",")) if args.events else None
    if args.live_sink:  # once through the real live pipeline, in real time
        result = live_adapt(config, out, (speakers or ["theo"])[0], (sizes or (300,))[0], args.live_sink, args.live_mic)
        return _bench_out(args, result, json.dumps(result, indent=1))
    result = bench_adapt(config, out, speakers=speakers, progress=not args.quiet,
                         **({"sizes": sizes} if sizes else {}), style=not args.no_style, draws=args.draws)
    return _bench_out(args, result, format_adapt(result))


def bench_record(args: argparse.Namespace) -> int:
    from tools.bench.record import bench_record, format_record, live_mix, recorded

    result = bench_record(recorded(args.recording) if args.recording else live_mix(), repeats=args.repeats)
    return _bench_out(args, result, format_record(result))


def cmd_top(args: argparse.Namespace) -> int:
    from agent.runtime.service import terminate_cleanly
    from tools.top import top

    terminate_cleanly()
    return top(args.bus, keys=args.keys, once=args.once, wait_s=args.wait, as_json=args.json,
               connect_timeout_s=args.connect_timeout)


def cmd_keys(args: argparse.Namespace) -> int:
    from agent.runtime.bus import make_keys

    folder = make_keys(args.folder)
    print(f"CurveZMQ keys in {folder}: give this folder to the bus and to every process (--keys {folder}); "
          "keep *.key_secret private", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cdz", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="An unsupervised multimodal agent: it learns which images and sounds belong together, "
                    "discovers the classes itself, and recalls one sense from the other.")
    from agent import __version__

    p.add_argument("--version", action="version", version=f"cdz-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from tools.command_line import HelpFormatter, bus_arguments, describe
    from tools.command_line import common_arguments as common
    from tools.processes import add_parsers

    sp = sub.add_parser("train", help="train encoders, then learn the teacher stream into a run folder",
                        **describe("Train the encoders, then learn the teacher's stream into a run folder "
                                   "(no scores: `cdz eval` gives them).",
                                   "cdz train --set data.digits=[0,1,2] --out runs/three",
                                   "cdz train --resume runs/three"))
    common(sp, config=True)
    sp.add_argument("--resume", metavar="RUN", help="continue an interrupted run from its last checkpoint")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("eval", help="every score of a trained run, with baselines",
                        **describe("Every score of a trained run, with the clustering and supervised baselines.",
                                   "cdz eval --run runs/latest --json"))
    sp.add_argument("--run", required=True, metavar="RUN", help=RUN_HELP)
    common(sp, json_out=True)
    sp.add_argument("--no-baselines", action="store_true", help="skip k-means/DP-GMM/HDBSCAN/supervised baselines")
    sp.add_argument("--no-judges", action="store_true", help="skip generation accuracy (no judge training)")
    sp.set_defaults(func=cmd_eval)

    sp = sub.add_parser("graph", help="the agent's processes, what each hears and says, and what flows between them",
                        **describe("The processes of the live agent (or, with --lossless, of `cdz replay "
                                   "--distributed`), what each hears and says on the bus, and the edges between "
                                   "them, derived from their declarations (each process's PROCESS in tools/processes/).",
                                   "cdz graph", "cdz graph --mermaid > agent.mmd", "cdz graph --lossless --json"))
    sp.add_argument("--lossless", action="store_true", help="the distributed replay's processes (default: live, "
                    "with every optional sense and view)")
    out = sp.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help='one JSON object: {"processes": [{"name", "hears", '
                     '"says"}], "edges": [[sayer, topic, hearer]]}')
    out.add_argument("--mermaid", action="store_true", help="a Mermaid flowchart (GitHub draws it)")
    sp.set_defaults(func=cmd_graph)

    sp = sub.add_parser("replay", help="train then eval in one go (the main job)",
                        **describe("Train then evaluate in one go (the main job): the score table, or one JSON "
                                   "object with --json.",
                                   "cdz replay --set data.digits=[0,1,2] --set teacher.epochs=1",
                                   "cdz replay --seeds 0-9 --no-baselines --json",
                                   "cdz replay --distributed"))
    common(sp, config=True, json_out=True)
    sp.add_argument("--seeds", type=_seed_list, metavar="0-9",
                    help="several runs, one per seed (into --out/seed<N>), then a per-seed table, mean and min "
                         "of every score and how many seeds found exactly the true number of classes "
                         "(e.g. 0-9, or 0,3,5-7)")
    sp.add_argument("--no-baselines", action="store_true", help="skip the clustering baselines")
    sp.add_argument("--no-judges", action="store_true", help="skip generation accuracy")
    sp.add_argument("--distributed", action="store_true",
                    help="learn the stream with bus, hub, one worker per modality and a player as separate "
                         "processes (lossless; a crashed process is restarted from the last checkpoint)")
    sp.add_argument("--recording", metavar="FILE.mcap",
                    help="learn the stimuli of a recorded session (`cdz record`) instead of the teacher's stream")
    sp.add_argument("--bus", help="--distributed: bus address (default: two free ports on 127.0.0.1)")
    sp.add_argument("--checkpoint-every", type=flags.COUNT, default=20_000,
                    help="--distributed: stimuli between checkpoints (default 20000)")
    sp.add_argument("--speed", type=flags.NON_NEGATIVE, default=0.0,
                    help="--distributed: 1.0 plays the stream at its own timing, 2.0 twice as fast, "
                         "0 as fast as possible (default)")
    sp.set_defaults(func=cmd_replay)

    add_parsers(sub, common)  # every process of the agent: bus, hub, worker, play, record, camera, mic, ...
    example_bus = "tcp://127.0.0.1:5570"
    sp = sub.add_parser("top", help="live rates, queues, drops and latencies of every runtime process",
                        **describe("Live rates, queues, drops and latencies of every runtime process on a bus.\n"
                                   "Exit code 2: no bus answered within --connect-timeout; with --once, 1: the bus "
                                   "answered\nbut no process published stats.",
                                   f"cdz top --bus {example_bus}", f"cdz top --bus {example_bus} --once --json"))
    bus_arguments(sp, connect_timeout=5.0)
    sp.add_argument("--once", action="store_true",
                    help="print one snapshot and exit (exit code 1: the bus is there but no process was heard)")
    sp.add_argument("--wait", type=flags.POSITIVE, default=2.5, metavar="S", help="--once: seconds to listen first")
    sp.add_argument("--json", action="store_true", help="--once: print the snapshot as JSON")
    sp.set_defaults(func=cmd_top)

    sp = sub.add_parser("keys", help="make CurveZMQ key pairs for a bus off loopback",
                        **describe("Make the CurveZMQ key pairs of a bus off loopback (give the folder to the bus "
                                   "and to every process).", "cdz keys keys/"))
    sp.add_argument("folder", help="folder to write bus.key*, client.key* into")
    sp.set_defaults(func=cmd_keys)

    from tools import live

    sp = sub.add_parser("live", help="the live agent: camera, microphone, workers, hub, viewer on a trained run",
                        **describe("The live agent: bus, camera, microphone, encoder workers, hub and viewer on a "
                                   "trained run, supervised.",
                                   "cdz live --run runs/latest",
                                   "cdz live --run runs/latest --camera cards.mp4 --no-mic --headless shots/"))
    live.add_arguments(sp)
    common(sp)
    sp.set_defaults(func=live.run)

    sp = sub.add_parser("recall", help="show an image / play a wav / give a reward to a trained agent; "
                        "see what it recalls")
    sp.add_argument("--run", required=True, metavar="RUN", help=RUN_HELP)
    sp.add_argument("files", nargs="*", help="images (png, jpg, ...) and/or wav files of any sample rate; a bad "
                    "file is reported and skipped (exit 1 if some failed, 2 if all did)")
    sp.add_argument("--reward", action="append", default=[], metavar="VALUE",
                    help="give a reward of this value (a run taught with teacher.rewards); it recalls the "
                         "digits that earn it (repeatable)")
    sp.add_argument("--out", help="folder for what it saw and imagines (default RUN/recall, or PACK-recall beside a pack); inputs with the same "
                    "name get distinct outputs (seven, seven-<folder>, seven-2, ...)")
    common(sp, json_out=True)
    sp.set_defaults(func=cmd_recall)

    sp = sub.add_parser("pack", help="one shareable file holding a trained agent (config, encoders, brain, names, "
                        "model card; no training data)",
                        **describe("Write a run's latest agent into one file that anyone can recall with, learn "
                                   "with (after `cdz unpack`) or load with `Agent.load`. Loaded without pickle. "
                                   "Prints its model card.",
                                   "cdz pack --run runs/demo --out demo.cdzpack", "cdz recall --run demo.cdzpack seven.png"))
    sp.add_argument("--run", required=True, metavar="RUN", help=RUN_HELP)
    sp.add_argument("--out", required=True, metavar="FILE", help="the pack to write (e.g. demo.cdzpack)")
    sp.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    sp.set_defaults(func=cmd_pack)

    sp = sub.add_parser("samples", help="a few pictures and recordings to try `cdz recall` on",
                        **describe("Write sample inputs made from the held-out test data: a photographed and a "
                                   "printed 7, the word \"seven\", and a recording of three words.",
                                   "cdz samples samples/ && cdz recall --run runs/demo samples/*"))
    sp.add_argument("out", nargs="?", default="samples", help="folder to write them into (default samples/)")
    sp.set_defaults(func=cmd_samples)

    sp = sub.add_parser("unpack", help="turn a pack into a run folder that can keep learning",
                        **describe("Unpack a pack into a new run folder (config, encoders, one checkpoint, names): "
                                   "what `cdz live` and `cdz sleep` need to keep learning.",
                                   "cdz unpack --run demo.cdzpack --out runs/mine"))
    sp.add_argument("--run", required=True, metavar="PACK", help="a file made by `cdz pack`")
    sp.add_argument("--out", required=True, metavar="RUN", help="run folder to create (must not exist, or be empty)")
    sp.set_defaults(func=cmd_unpack)

    sp = sub.add_parser("sleep", help="teach a run's encoders on the experience its live agent buffered",
                        formatter_class=HelpFormatter,
                        description="Sleep: the encoders learn the voices and hands the live agent met. The stimuli "
                                    "buffered with the newest checkpoint teach each encoder through the other sense "
                                    "(pairs within B, targets from the CDZ), old stimuli are rehearsed against "
                                    "forgetting, and the nodes follow. Saves the next encoder stage and a checkpoint. "
                                    "Stop `cdz live` on the run first.",
                        epilog="example:\n  cdz sleep --run runs/latest --set sleep.replay=modes")
    sp.add_argument("--run", required=True, metavar="RUN",
                    help="run folder (with live experience in its newest checkpoint; a pack: unpack it first)")
    sp.add_argument("--set", action="append", metavar="sleep.FIELD=VALUE",
                    help="override a sleep setting, e.g. --set sleep.teach_weight=0.5 (repeatable)")
    common(sp, json_out=True)
    sp.set_defaults(func=cmd_sleep)

    sp = sub.add_parser("plots", help="t-SNE of encodings, decoded cluster modes, learning curves (PNGs)",
                        **describe("Draw a run's pictures: t-SNE of the encodings, decoded cluster modes, learning "
                                   "curves\n(PNGs in the run folder; their paths are printed).",
                                   "cdz plots --run runs/latest"))
    sp.add_argument("--run", required=True, metavar="RUN", help=RUN_HELP)
    common(sp)
    sp.set_defaults(func=cmd_plots)

    sp = sub.add_parser("bench", help="benchmarks that print figures: core, pipeline, live, pictures, robustness, "
                                      "adapt, record",
                        **describe("Benchmarks that print figures (each has its own --help).",
                                   "cdz bench core", "cdz bench pictures --run runs/demo",
                                   "cdz bench robustness --speakers theo --json"))
    benches = sp.add_subparsers(dest="what", required=True, metavar="BENCH")

    def bench(name: str, func: Any, text: str, *examples: str, config: bool = False) -> argparse.ArgumentParser:
        b = benches.add_parser(name, help=text, **describe(text, *examples))
        common(b, config=config, json_out=True)
        b.set_defaults(func=func)
        return b

    b = bench("core", bench_core, "Stream-learning throughput of the learning core, vectorised vs the same rules "
              "written plainly (with an agreement check).", "cdz bench core --json")
    b.add_argument("--stimuli", type=flags.COUNT, default=60_000, help="stimuli in the vectorised run (default 60000)")
    b.add_argument("--repeats", type=flags.COUNT, default=3, help="repeats; the median is reported (default 3)")
    b = bench("pipeline", bench_pipeline, "The multi-process runtime: lossless throughput, live latency and the "
              "bare ZeroMQ floor, in one run.", "cdz bench pipeline --json")
    b.add_argument("--seconds", type=flags.POSITIVE, default=10.0, help="seconds of live latency measurement (default 10)")
    b = bench("live", bench_live, "Filmed digit cards and spoken digits through the camera and microphone "
              "pipelines, against recall on the same clean items.", "cdz bench live --run runs/demo")
    b.add_argument("--run", required=True, metavar="RUN", help=RUN_HELP)
    b.add_argument("--cards", type=flags.COUNT, default=200, help="digit cards to film (default 200)")
    b.add_argument("--utterances", type=flags.COUNT, default=200, help="utterances to hear (default 200)")
    b.add_argument("--speaker", type=_voice, help="hear only this FSDD voice, any of its recordings "
                   "(for a run trained without it, e.g. a `cdz bench robustness` fold; default: the test words "
                   "of all six)")
    b.add_argument("--session-sink", metavar="SINK",
                   help="also a real-time `cdz live` session in --speaker's voice on a copy of the run: a card video "
                        "as the camera, the words played into this PulseAudio sink; reports recall in the first half "
                        "of the session against the second")
    b.add_argument("--session-mic", default="pulse", help="with --session-sink: the input device that hears that sink")
    b.add_argument("--session-words", type=flags.COUNT, default=60,
                   help="with --session-sink: cards and words in the session (2.2 s each; default 60)")
    from tools.live import SLEEP_EVERY_MIN  # loaded for `cdz live`'s own flags as well

    b.add_argument("--session-sleep-every", type=flags.NON_NEGATIVE, default=SLEEP_EVERY_MIN, metavar="MIN",
                   help="with --session-sink: `cdz live --sleep-every` of the session (0: no sleep)")
    b = bench("pictures", bench_pictures, "`cdz recall` on pictures as people hand them over (printed, handwritten, "
              "photographed, light on dark), and how familiarity tells digits from other things.",
              "cdz bench pictures --run runs/demo --n 120")
    b.add_argument("--run", required=True, metavar="RUN", help=RUN_HELP)
    b.add_argument("--n", type=flags.COUNT, default=120, help="pictures (default 120: 30 of each kind, 3 of each digit)")
    b.add_argument("--seed", type=flags.SEED, default=0, help="seed of the pictures (default 0)")
    b = bench("robustness", bench_robustness, "Trains a standard run, one run per held-out FSDD speaker and one per "
              "teacher-mistake rate into --out (finished runs there are reused), and scores unseen speakers, noise, "
              "distortion and teacher mistakes beside the supervised judge (about an hour).",
              "cdz bench robustness --speakers theo --json", config=True)
    b.add_argument("--speakers", help="held-out speakers, comma-separated (default all six)")
    b.add_argument("--cases", type=_cases, default="speakers,noise,distortion,mistakes",
                   help="which cases, comma-separated (default all: speakers,noise,distortion,mistakes)")
    b = bench("adapt", bench_adapt, "Per held-out speaker: a show-and-tell session of K events in that voice, sleep, "
              "and recall on its unheard words before and after, with forgetting (trains 7 runs into --out).",
              "cdz bench adapt --events 30,100,300 --json", config=True)
    b.add_argument("--speakers", help="held-out speakers, comma-separated (default all six)")
    b.add_argument("--events", help="session sizes K, comma-separated (default 30,100,300)")
    b.add_argument("--no-style", action="store_true", help="skip the unseen-handwriting case")
    b.add_argument("--draws", type=flags.COUNT, default=1,
                   help="sessions per speaker and K, each drawing its K events afresh; recall is their mean")
    b.add_argument("--live-sink", metavar="SINK",
                   help="instead, one session (first of --speakers, first of --events) through `cdz live` in real "
                        "time: a card video as the camera, the words played into this PulseAudio sink")
    b.add_argument("--live-mic", default="pulse", help="with --live-sink: the input device that hears that sink")
    b = bench("record", bench_record, "The recorder's cost per message with and without the Foxglove views, on a "
              "live-like mix or a recording.", "cdz bench record --recording session.mcap")
    b.add_argument("--recording", metavar="FILE.mcap", help="the messages of this recording (default: a live-like mix)")
    b.add_argument("--repeats", type=flags.COUNT, default=3, help="repeats; the median is reported (default 3)")

    for name, sp in sub.choices.items():  # every subcommand: defaults shown; a description and an example
        if sp.formatter_class is argparse.HelpFormatter:
            sp.formatter_class = HelpFormatter
        if name in SUBCOMMAND_HELP and sp.description is None and sp.epilog is None:
            description, *examples = SUBCOMMAND_HELP[name]
            sp.description = description
            sp.epilog = describe(description, *examples)["epilog"]
    return p


# descriptions and examples of subcommands whose parser is set up elsewhere (used only where it gave none)
SUBCOMMAND_HELP = {
    "recall": ("Show images and/or play wav files to a trained agent; see what it recalls in the other sense.",
               "cdz recall --run runs/latest seven.png zero.wav"),
}


# commands whose progress bars go to a terminal only (on a pipe or a log file they are off, as with --quiet)
PROGRESS_COMMANDS = frozenset({"train", "eval", "replay", "plots", "bench", "sleep"})

# commands that never touch torch (recall only once its files are good): no 1-3 s torch import first;
# a process says so in its declaration (`light`)
LIGHT_COMMANDS = frozenset({"top", "keys", "recall", "unpack", "graph"})


def _single_thread_torch() -> None:
    """One torch thread unless CDZ_TORCH_THREADS says otherwise.

    Measured on the 2-core machines this project targets: a second intra-op thread
    made a 64x64 conv training step up to 13x slower as soon as anything else ran.
    """
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("CDZ_TORCH_THREADS", "1"))))


def main(argv: list[str] | None = None) -> int:
    return execute(build_parser().parse_args(argv))


def execute(args: argparse.Namespace) -> int:
    """Run a parsed command: its logging, torch's threads, and one line and exit code 2 for a known error."""
    from agent.core.checkpoint import RunError
    from agent.core.cortex import StimulusError

    if getattr(args, "log_level", None):
        import logging

        logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, force=True,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command in PROGRESS_COMMANDS and not sys.stderr.isatty():
        args.quiet = True  # a log file gets no progress bar frames
    if not (args.command in LIGHT_COMMANDS or getattr(args, "light", False)):
        _single_thread_torch()
    known_errors: tuple[type[BaseException], ...] = (RunError, StimulusError, FileNotFoundError, KeyError, ValueError,
                                                       RuntimeError, OSError)
    try:
        from replay.data.datasets import DataCorruptError, DataMissingError
        from sensors.errors import FeatureError

        known_errors += (DataMissingError, DataCorruptError, FeatureError)
    except ImportError:  # pragma: no cover - partial installs
        pass
    try:
        if getattr(args, "print_config", False):
            from agent.core.config import toml_text

            print(toml_text(_config_from_args(args)), end="")
            return 0
        return args.func(args)
    except known_errors as e:
        if os.environ.get("CDZ_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"cdz {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        from agent.runtime.service import Terminated

        if isinstance(e, Terminated):  # SIGTERM outside a process's loop: cleaned up, 128 + SIGTERM
            print(f"cdz {args.command}: terminated", file=sys.stderr)
            return 143
        print(f"cdz {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
