"""``tillpulse cloud``: detect anomalies, train the model, evaluate against ground truth."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Final

from rich.console import Console

from cloud.config import CloudConfig, load_cloud_config
from cloud.evaluation.scoring import evaluate, print_report, read_alerts_jsonl, report_json
from cloud.jobs.cycle import CycleReport
from cloud.jobs.schedule import make_detection, make_outputs, run_live, run_range, train_model
from cloud.reading.influxql_reader import InfluxQueryError
from cloud.reading.window import Shard
from runtime.config import ConfigError
from runtime.durations import parse_duration
from runtime.lifecycle import stop_on_signals
from runtime.logs import configure_logging
from wire.labels import read_labels
from wire.messages import encode
from wire.timestamps import NS_PER_S, parse_iso

EXIT_FAILED: Final = 1
EXIT_CONFIG: Final = 2
_CALENDAR_HELP: Final = "operator calendar TOML: sale, holiday, closed days (default: the config's)"


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level, json_lines=args.log_json)
    try:
        if args.command == "evaluate":
            return _evaluate(args)
        config = load_cloud_config(args.config)
        if args.command == "check-config":
            sys.stdout.write(f"{args.config}: ok\n")
            return 0
        if args.command == "train":
            return _train(args, config)
        return _detect(args, config)
    except (ConfigError, ValueError, OSError) as exc:
        sys.stderr.write(f"tillpulse cloud {args.command}: {exc}\n")
        return EXIT_CONFIG
    except InfluxQueryError as exc:
        sys.stderr.write(f"tillpulse cloud {args.command}: {exc}\n")
        return EXIT_FAILED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tillpulse cloud", description=__doc__)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-json", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    detect = commands.add_parser("detect", help="detect anomalies; write and publish alerts")
    detect.add_argument("--config", required=True, help="the cloud jobs' TOML config")
    when = detect.add_mutually_exclusive_group(required=True)
    when.add_argument("--once", action="store_true", help="the windows due now, then exit")
    when.add_argument("--every", metavar="DURATION", help="run every DURATION (e.g. 60s)")
    when.add_argument("--from", dest="start", metavar="ISO", help="replay stored history from")
    detect.add_argument("--to", dest="end", metavar="ISO", help="with --from: replay up to")
    detect.add_argument("--shard", default="0/1", help="i/n: this worker's share of the sites")
    detect.add_argument("--alerts-out", type=Path, help="also append every alert (JSONL)")
    detect.add_argument("--calendar", type=Path, metavar="FILE", help=_CALENDAR_HELP)

    train = commands.add_parser("train", help="learn baselines, profiles, fraud model")
    train.add_argument("--config", required=True)
    train.add_argument("--from", dest="start", metavar="ISO", help="history from (default: --days)")
    train.add_argument("--to", dest="end", metavar="ISO", help="history up to (default: now)")
    train.add_argument("--days", type=float, default=14.0, help="history length (default 14)")
    train.add_argument("--out", type=Path, help="model file (default: the config's)")
    train.add_argument("--calendar", type=Path, metavar="FILE", help=_CALENDAR_HELP)

    check = commands.add_parser("check-config", help="validate the config file and exit")
    check.add_argument("--config", required=True)

    ev = commands.add_parser("evaluate", help="score alerts against labelled incidents")
    ev.add_argument(
        "--labels",
        required=True,
        type=Path,
        help="labels JSONL (docs/wire.md): firmware_sim --labels FILE or your own",
    )
    ev.add_argument("--alerts", required=True, type=Path, help="detect --alerts-out FILE")
    ev.add_argument("--terminals", required=True, type=int, help="fleet size, for the rates")
    ev.add_argument("--hours", required=True, type=float, help="hours the alerts cover")
    ev.add_argument("--window", default="5m", help="the detection window (default 5m)")
    ev.add_argument("--json", type=Path, help="also write the report as JSON")
    return parser


def _detect(args: argparse.Namespace, config: CloudConfig) -> int:
    detection = make_detection(config, Shard.parse(args.shard), calendar=args.calendar)
    outputs = make_outputs(config)
    alerts_out = args.alerts_out.open("ab") if args.alerts_out else None

    def record(report: CycleReport) -> None:
        if alerts_out is not None:
            alerts_out.writelines(encode(alert) + b"\n" for alert in report.alerts)
            alerts_out.flush()

    try:
        if args.start:
            end = parse_iso(args.end) if args.end else None
            if end is None:
                raise ValueError("--from needs --to")
            sent = run_range(detection, outputs, parse_iso(args.start), end, record)
        else:
            stop = threading.Event()
            stop_on_signals(stop, "cloud")
            every = parse_duration(args.every) / NS_PER_S if args.every else None
            sent = run_live(config, detection, outputs, every_s=every, stop=stop, on_cycle=record)
    finally:
        outputs.close()
        if alerts_out is not None:
            alerts_out.close()
    sys.stdout.write(f"alerts sent: {sent}\n")
    return 0


def _train(args: argparse.Namespace, config: CloudConfig) -> int:
    end = parse_iso(args.end) if args.end else time.time_ns()
    start = parse_iso(args.start) if args.start else end - int(args.days * 86400 * NS_PER_S)
    path = args.out or config.model_path
    model = train_model(config, start, end, path, calendar=args.calendar)
    terminals = len(model.baselines.terminals)
    sys.stdout.write(f"model written to {path}: {terminals} terminals\n")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    window_s = parse_duration(args.window) / NS_PER_S
    report = evaluate(
        read_alerts_jsonl(args.alerts),
        read_labels(args.labels),
        window_s=window_s,
        terminal_hours=args.terminals * args.hours,
    )
    print_report(report, Console())
    if args.json:
        args.json.write_bytes(report_json(report))
    return 0
