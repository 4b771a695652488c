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

DEFAULT_RUNS = Path("runs")

EPILOG = """examples:
  cdz replay                              train on MNIST+FSDD from scratch, then print the score table
  cdz replay --set data.digits=[0,1,2] --set teacher.epochs=1   a quick 3-digit run
  cdz replay --seeds 0-9 --no-baselines   ten seeds: a per-seed table, mean, min, seeds with exactly 10 classes
  cdz eval runs/latest --json             every score of a finished run as JSON
  cdz recall runs/latest seven.png zero.wav   what the agent recalls for your own files
  cdz pack runs/latest demo.cdzpack       one file to share the trained agent (cdz recall demo.cdzpack ...)
  cdz plots runs/latest                   t-SNE, decoded cluster modes, learning curves
  cdz bench core                          stream-learning throughput vs a plain implementation
  cdz sleep runs/latest                   teach the encoders on what the live agent met
  cdz bench adapt --json                  new voices: recall before and after a session and a sleep
  cdz bench robustness --json             unseen speakers, noise, distortion, teacher mistakes (trains 9 runs)
  cdz replay --distributed                the same job with bus, hub, workers and player as processes
  cdz bench pipeline --json               runtime throughput, live latency, bare ZeroMQ floor
  cdz bench record                        what the Foxglove views cost the recorder per message
  cdz top --bus tcp://127.0.0.1:5570      live stats of every runtime process on a bus

data is found through CDZ_DATA_DIR (folders mnist/ and fsdd/), then ~/.cache/cdz-agent.
CDZ_DEBUG=1 shows full tracebacks instead of one-line errors."""


def _config_from_args(args: argparse.Namespace):
    from agent.core.config import Config, override

    config = Config(seed=args.seed)
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
    from tools.train import train

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
    from tools.evaluate import evaluate, format_table

    result = evaluate(_open_run(args.run), progress=not args.quiet, baselines=not args.no_baselines,
                      judges=not args.no_judges)
    if args.json:
        _print_json(result)
    else:
        print(format_table(result))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from tools.evaluate import evaluate, format_seeds, format_table, summarise_seeds
    from tools.train import train

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
            print(f"\nrun folder: {run.path}  (cdz plots {run.path} draws pictures)\n")
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
    from agent.core.checkpoint import RunFolder
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
    card = write_pack(run, Path(args.file), run_names(run), overwrite=args.overwrite)
    size = Path(args.file).stat().st_size
    print(card_text(card), end="")
    print(f"\npack: {args.file} ({size / 2**20:.1f} MiB)", file=sys.stderr)
    return 0


def cmd_unpack(args: argparse.Namespace) -> int:
    from agent.pack import unpack

    run = unpack(args.pack, args.out)
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


def cmd_plots(args: argparse.Namespace) -> int:
    from tools.report import make_plots

    paths = make_plots(_open_run(args.run), progress=not args.quiet)
    for p in paths:
        print(p)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "live":
        from tools.bench_live import bench_live, format_live

        if not args.run:
            raise ValueError("cdz bench live needs --run RUN (a trained run folder)")
        result = bench_live(_open_run(args.run), cards=args.cards, utterances=args.utterances)
        print(format_live(result), file=sys.stderr if args.json else sys.stdout)
    elif args.what == "robustness":
        from tools.bench_robustness import bench_robustness, format_robustness

        config = _config_from_args(args)
        out = Path(args.out) if args.out else DEFAULT_RUNS / f"robustness-seed{config.seed}"
        speakers = [s for s in args.speakers.split(",") if s] if args.speakers else None
        result = bench_robustness(config, out, speakers=speakers, progress=not args.quiet)
        print(format_robustness(result), file=sys.stderr if args.json else sys.stdout)
    elif args.what == "adapt":
        from tools.bench_adapt import bench_adapt, format_adapt

        config = _config_from_args(args)
        out = Path(args.out) if args.out else DEFAULT_RUNS / f"adapt-seed{config.seed}"
        speakers = [s for s in args.speakers.split(",") if s] if args.speakers else None
        sizes = tuple(int(k) for k in args.events.split(",")) if args.events else None
        if args.live_sink:  # once through the real live pipeline, in real time
            from tools.bench_adapt import live_adapt

            result = live_adapt(config, out, (speakers or ["theo"])[0], (sizes or (300,))[0], args.live_sink,
                                args.live_mic)
            print(json.dumps(result, indent=1), file=sys.stderr if args.json else sys.stdout)
        else:
            result = bench_adapt(config, out, speakers=speakers, progress=not args.quiet,
                                 **({"sizes": sizes} if sizes else {}), style=not args.no_style)
            print(format_adapt(result), file=sys.stderr if args.json else sys.stdout)
    elif args.what == "record":
        from tools.bench_record import bench_record, format_record, live_mix, recorded

        result = bench_record(recorded(args.recording) if args.recording else live_mix(), repeats=args.repeats)
        print(format_record(result), file=sys.stderr if args.json else sys.stdout)
    elif args.what == "pipeline":
        from tools.bench_pipeline import bench_pipeline, format_pipeline

        result = bench_pipeline(seconds=args.seconds, progress=not args.quiet)
        print(format_pipeline(result), file=sys.stderr if args.json else sys.stdout)
    else:
        from tools.bench import bench_core, format_core

        result = bench_core(n_stimuli=args.stimuli, repeats=args.repeats, progress=not args.quiet)
        if not args.json:
            print(format_core(result))
    if args.json:
        _print_json(result)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cdz", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="An unsupervised multimodal agent: it learns which images and sounds belong together, "
                    "discovers the classes itself, and recalls one sense from the other.")
    from agent import __version__

    p.add_argument("--version", action="version", version=f"cdz-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from tools.processes import HelpFormatter, add_parsers, describe

    def common(sp: argparse.ArgumentParser, config: bool = False, json_out: bool = False) -> None:
        sp.add_argument("--quiet", action="store_true", help="no progress bars")
        if json_out:
            sp.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of a table")
        if config:
            sp.add_argument("--seed", type=int, default=0, help="seed of everything (default 0)")
            sp.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                            help="override a config field, e.g. --set cortex.node_lr=0.02 "
                                 "--set data.digits=[0,1,2] (repeatable; the field must exist)")
            sp.add_argument("--out", help="run folder to create (default runs/<time>-seed<N>)")
            sp.add_argument("--overwrite", action="store_true", help="replace the run folder given by --out if it exists")

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
                                   "cdz eval runs/latest --json"))
    sp.add_argument("run", help="run folder")
    common(sp, json_out=True)
    sp.add_argument("--no-baselines", action="store_true", help="skip k-means/DP-GMM/HDBSCAN/supervised baselines")
    sp.add_argument("--no-judges", action="store_true", help="skip generation accuracy (no judge training)")
    sp.set_defaults(func=cmd_eval)

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
    sp.add_argument("--checkpoint-every", type=int, default=20_000,
                    help="--distributed: stimuli between checkpoints (default 20000)")
    sp.add_argument("--speed", type=float, default=0.0,
                    help="--distributed: 1.0 plays the stream at its own timing, 2.0 twice as fast, "
                         "0 as fast as possible (default)")
    sp.set_defaults(func=cmd_replay)

    add_parsers(sub, common)

    sp = sub.add_parser("recall", help="show an image / play a wav / give a reward to a trained agent; "
                        "see what it recalls")
    sp.add_argument("run", help="run folder")
    sp.add_argument("files", nargs="*", help="images (png, jpg, ...) and/or wav files of any sample rate; a bad "
                    "file is reported and skipped (exit 1 if some failed, 2 if all did)")
    sp.add_argument("--reward", action="append", default=[], metavar="VALUE",
                    help="give a reward of this value (a run taught with teacher.rewards); it recalls the "
                         "digits that earn it (repeatable)")
    sp.add_argument("--out", help="folder for reconstruction PNGs (default RUN/recall); inputs with the same "
                    "name get distinct outputs (seven, seven-<folder>, seven-2, ...)")
    common(sp, json_out=True)
    sp.set_defaults(func=cmd_recall)

    sp = sub.add_parser("pack", help="one shareable file holding a trained agent (config, encoders, brain, names, "
                        "model card; no training data)",
                        **describe("Write a run's latest agent into one file that anyone can recall with, learn "
                                   "with (after `cdz unpack`) or load with `Agent.load`. Loaded without pickle. "
                                   "Prints its model card.",
                                   "cdz pack runs/demo demo.cdzpack", "cdz recall demo.cdzpack seven.png"))
    sp.add_argument("run", help="run folder (or a pack)")
    sp.add_argument("file", help="the pack to write (e.g. demo.cdzpack)")
    sp.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    sp.set_defaults(func=cmd_pack)

    sp = sub.add_parser("unpack", help="turn a pack into a run folder that can keep learning",
                        **describe("Unpack a pack into a new run folder (config, encoders, one checkpoint, names): "
                                   "what `cdz live` and `cdz sleep` need to keep learning.",
                                   "cdz unpack demo.cdzpack runs/mine"))
    sp.add_argument("pack", help="a file made by `cdz pack`")
    sp.add_argument("out", help="run folder to create (must not exist, or be empty)")
    sp.set_defaults(func=cmd_unpack)

    sp = sub.add_parser("sleep", help="teach a run's encoders on the experience its live agent buffered",
                        formatter_class=HelpFormatter,
                        description="Sleep: the encoders learn the voices and hands the live agent met. The stimuli "
                                    "buffered with the newest checkpoint teach each encoder through the other sense "
                                    "(pairs within B, targets from the CDZ), old stimuli are rehearsed against "
                                    "forgetting, and the nodes follow. Saves the next encoder stage and a checkpoint. "
                                    "Stop `cdz live` on the run first.",
                        epilog="example:\n  cdz sleep runs/latest --set sleep.replay=modes")
    sp.add_argument("run", help="run folder (with live experience in its newest checkpoint)")
    sp.add_argument("--set", action="append", metavar="sleep.FIELD=VALUE",
                    help="override a sleep setting, e.g. --set sleep.teach_weight=0.5 (repeatable)")
    common(sp, json_out=True)
    sp.set_defaults(func=cmd_sleep)

    sp = sub.add_parser("plots", help="t-SNE of encodings, decoded cluster modes, learning curves (PNGs)",
                        **describe("Draw a run's pictures: t-SNE of the encodings, decoded cluster modes, learning "
                                   "curves\n(PNGs in the run folder; their paths are printed).",
                                   "cdz plots runs/latest"))
    sp.add_argument("run", help="run folder")
    common(sp)
    sp.set_defaults(func=cmd_plots)

    sp = sub.add_parser("bench", help="benchmarks that print figures (core: learning throughput; "
                                      "pipeline: the multi-process runtime; robustness: unseen voices, noise, "
                                      "distortion, teacher mistakes)",
                        **describe("Benchmarks that print figures: core, pipeline, live, robustness or adapt "
                                   "(see WHAT below).",
                                   "cdz bench core", "cdz bench pipeline --json",
                                   "cdz bench robustness --speakers theo --json"))
    sp.add_argument("what", choices=["core", "pipeline", "live", "robustness", "adapt", "record"],
                    help="core: the learning core vs a plain implementation; pipeline: lossless throughput, "
                         "live latency and the bare ZeroMQ floor of the multi-process runtime; live: filmed "
                         "digit cards and spoken digits through the camera and microphone pipelines (--run); "
                         "robustness: trains a standard run, one per held-out FSDD speaker and one per "
                         "teacher-mistake rate into --out (default runs/robustness-seed<N>; finished runs "
                         "there are reused) and scores each beside the supervised judge (about an hour); "
                         "adapt: per held-out speaker, a show-and-tell session of K events with that voice, "
                         "sleep, and recall on its unheard words before and after (trains 7 runs into --out, "
                         "default runs/adapt-seed<N>); record: the recorder's cost per message with and without "
                         "the Foxglove views, on a live-like mix or --recording FILE")
    sp.add_argument("--speakers", help="robustness, adapt: held-out speakers, comma-separated (default all six)")
    sp.add_argument("--events", help="adapt: session sizes K, comma-separated (default 100,300,1000)")
    sp.add_argument("--no-style", action="store_true", help="adapt: skip the unseen-handwriting case")
    sp.add_argument("--live-sink", metavar="SINK",
                    help="adapt: instead, one session (first of --speakers, first of --events) through `cdz live` "
                         "in real time: a card video as the camera, the words played into this PulseAudio sink")
    sp.add_argument("--live-mic", default="pulse",
                    help="adapt --live-sink: the input device that hears that sink (default pulse)")
    sp.add_argument("--run", help="live: a trained run folder")
    sp.add_argument("--recording", metavar="FILE.mcap", help="record: the messages of this recording")
    sp.add_argument("--cards", type=int, default=200, help="live: digit cards to film (default 200)")
    sp.add_argument("--utterances", type=int, default=200, help="live: utterances to hear (default 200)")
    sp.add_argument("--seconds", type=float, default=10.0, help="pipeline: seconds of live latency measurement")
    sp.add_argument("--stimuli", type=int, default=60_000, help="stimuli in the vectorised run (default 60000)")
    sp.add_argument("--repeats", type=int, default=3, help="repeats; the median is reported (default 3)")
    common(sp, config=True, json_out=True)
    sp.set_defaults(func=cmd_bench)

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
               "cdz recall runs/latest seven.png zero.wav"),
}


# commands that never touch torch (recall only once its files are good): no 1-3 s torch import first
LIGHT_COMMANDS = frozenset({"bus", "top", "keys", "play", "record", "export", "recall", "camera", "mic", "viewer",
                            "speaker", "unpack"})


def _single_thread_torch() -> None:
    """One torch thread unless CDZ_TORCH_THREADS says otherwise.

    Measured on the 2-core machines this project targets: a second intra-op thread
    made a 64x64 conv training step up to 13x slower as soon as anything else ran.
    """
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("CDZ_TORCH_THREADS", "1"))))


def main(argv: list[str] | None = None) -> int:
    from agent.core.checkpoint import RunError
    from agent.core.cortex import StimulusError

    args = build_parser().parse_args(argv)
    if args.command not in LIGHT_COMMANDS:
        _single_thread_torch()
    known_errors: tuple[type[BaseException], ...] = (RunError, StimulusError, FileNotFoundError, KeyError, ValueError,
                                                       RuntimeError, OSError)
    try:
        from replay.datasets import DataCorruptError, DataMissingError
        from sensors.features import FeatureError

        known_errors += (DataMissingError, DataCorruptError, FeatureError)
    except ImportError:  # pragma: no cover - partial installs
        pass
    try:
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
