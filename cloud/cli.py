"""`tillpulse cloud`: detect anomalies, train the model, evaluate against ground truth.

  check-config   the config and every file it names (--connect: InfluxDB, the broker)
  train          learn baselines, profiles and the fraud model from InfluxDB history
  detect         the detection job: --once (cron), --every 60s (a service), or a
                 replay of stored history --from ISO --to ISO
  evaluate       score alerts (detect --alerts-out) against labelled incidents
  sample-config  the annotated example config, to edit

Exit codes: 0 ok, 1 a server unreachable or a job that failed, 2 a bad option,
config or file, 130 interrupted (README.md, "Command line").
"""

# The jobs, scikit-learn, rich and the InfluxDB client are imported by the commands
# that use them (PLC0415 below): `tillpulse cloud --help` must stay fast.

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

from runtime.cli import (
    OperatorError,
    Parser,
    RuntimeFailure,
    add_command,
    add_commands,
    component_parser,
    log_level,
    run_command,
)
from runtime.deploy_files import add_sample_config, packaged, print_or_write
from runtime.lifecycle import ServiceSignals, lock_directory, sigterm_interrupts
from runtime.logs import configure_logging, kv
from runtime.option_types import duration_s, iso_time, positive, positive_int
from runtime.preflight import check_dir, check_file, probe_influx, probe_mqtt
from wire.timestamps import NS_PER_DAY, NS_PER_S

if TYPE_CHECKING:
    from cloud.config import CloudConfig
    from cloud.detectors.trained_model import TrainedModel
    from cloud.jobs.cycle import CycleReport
    from cloud.jobs.progress import Progress
    from cloud.reading.window import Shard

log = logging.getLogger("cloud.cli")
T = TypeVar("T")

COMMAND_LINE: Final = "the command line"  # where an option's value comes from, in errors
PIPE_WIDTH: Final = 200  # the evaluate table's width when stdout is not a terminal
_CALENDAR_HELP: Final = "operator calendar TOML: sale, holiday, closed days (default: the config's)"


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    configure_logging(log_level(args), json_lines=args.log_json)
    command: Callable[[argparse.Namespace], int] = args.run
    with sigterm_interrupts():  # SIGTERM stops a command as Ctrl-C does (130)
        return run_command(
            f"tillpulse cloud {args.command}", lambda: command(args), debug=args.debug
        )


def _parser() -> Parser:
    parser = component_parser("cloud", __doc__)
    commands = add_commands(parser)

    check = add_command(
        commands, "cloud", "check-config", "check the config as the jobs would", config=True
    )
    check.add_argument(
        "--connect", action="store_true", help="also log in to InfluxDB and the MQTT broker"
    )
    check.set_defaults(run=_check_config)

    train = add_command(
        commands, "cloud", "train", "learn baselines, profiles, fraud model", config=True
    )
    train.add_argument(
        "--from", dest="start", type=iso_time, metavar="ISO", help="history from (default: --days)"
    )
    train.add_argument("--to", dest="end", type=iso_time, metavar="ISO", help="up to (default now)")
    train.add_argument(
        "--days", type=positive, default=14.0, help="history length without --from (14)"
    )
    train.add_argument("--out", type=Path, metavar="FILE", help="model file (default: config's)")
    train.add_argument(
        "--force", action="store_true", help="install the model even if it profiles less"
    )
    train.add_argument("--calendar", type=Path, metavar="FILE", help=_CALENDAR_HELP)
    train.set_defaults(run=_train)

    detect = add_command(
        commands, "cloud", "detect", "detect anomalies; write and publish alerts", config=True
    )
    when = detect.add_mutually_exclusive_group(required=True)
    when.add_argument("--once", action="store_true", help="the windows due now, then exit")
    when.add_argument(
        "--every", type=duration_s, metavar="DURATION", help="run every DURATION (e.g. 60s)"
    )
    when.add_argument(
        "--from", dest="start", type=iso_time, metavar="ISO", help="replay stored history from"
    )
    detect.add_argument("--to", dest="end", type=iso_time, metavar="ISO", help="replay up to")
    detect.add_argument(
        "--shard",
        type=_shard,
        default="0/1",
        metavar="I/N",
        help="this worker's share of the sites (default 0/1)",
    )
    detect.add_argument(
        "--alerts-out", type=Path, metavar="FILE", help="write the alerts (JSONL), replacing FILE"
    )
    detect.add_argument(
        "--append", action="store_true", help="append to --alerts-out instead of replacing it"
    )
    detect.add_argument("--calendar", type=Path, metavar="FILE", help=_CALENDAR_HELP)
    detect.set_defaults(run=_detect)

    ev = add_command(commands, "cloud", "evaluate", "score alerts against labelled incidents")
    ev.add_argument(
        "--labels",
        required=True,
        type=Path,
        metavar="FILE",
        help="labels JSONL (docs/wire.md): sim --labels FILE or your own",
    )
    ev.add_argument(
        "--alerts", required=True, type=Path, metavar="FILE", help="detect --alerts-out FILE"
    )
    ev.add_argument(
        "--terminals", required=True, type=positive_int, help="fleet size, for the rates"
    )
    ev.add_argument("--hours", required=True, type=positive, help="hours the alerts cover")
    ev.add_argument(
        "--window", type=duration_s, default="5m", help="the detection window (default 5m)"
    )
    ev.add_argument("--json", action="store_true", help="print the report as JSON, not a table")
    ev.add_argument("--report-out", type=Path, metavar="FILE", help="write the report as JSON")
    ev.set_defaults(run=_evaluate)

    add_sample_config(commands, "cloud").set_defaults(run=_sample_config)
    return parser


# -- option values: a bad one is argparse's one-line usage error naming the option ------


def _shard(text: str) -> Shard:
    from cloud.reading.window import Shard  # noqa: PLC0415

    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _time_range(start: int, end: int) -> None:
    if start >= end:
        raise OperatorError(
            f"--from {_iso_text(start)} is not before --to {_iso_text(end)}: give a range "
            "that ends after it starts"
        )


def _iso_text(ts_ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts_ns // NS_PER_S))


def _output_file(path: Path, option: str) -> Path:
    """``path`` (the value of ``option``) can be written: not a directory, in one that
    exists and is writable; else `OperatorError` naming both and the fix."""
    if path.is_dir():
        raise OperatorError(f"{option} {path}: is a directory: name a file in it")
    if not path.parent.is_dir():
        raise OperatorError(
            f"{option} {path}: no directory {path.parent}: create it first, or fix the path"
        )
    check_dir(path.parent, f"{option} {path}: its directory", COMMAND_LINE)
    return path


def _progress(args: argparse.Namespace) -> Progress:
    from cloud.jobs.progress import Progress  # noqa: PLC0415

    if args.quiet:
        return Progress("off")
    return Progress.for_stderr(tty=sys.stderr.isatty(), log_json=args.log_json)


def _load(args: argparse.Namespace, *, training: bool = False) -> CloudConfig:
    """The config, and everything the jobs need of it (the same checks as check-config)."""
    from cloud.config import check, load_cloud_config  # noqa: PLC0415

    config = load_cloud_config(args.config)
    check(config, args.config, training=training)
    calendar = getattr(args, "calendar", None)  # the config's is checked on load
    try:
        if calendar is not None:
            config.calendar(calendar)
    except ValueError as exc:
        raise OperatorError(f"--calendar: {exc}") from None
    return config


def _influx(args: argparse.Namespace, work: Callable[[], T]) -> T:
    """``work``, an InfluxDB error as the run's failure, naming the config's table."""
    from cloud.reading.influxql_reader import InfluxQueryError  # noqa: PLC0415

    try:
        return work()
    except InfluxQueryError as exc:
        raise RuntimeFailure(f"{exc} ([query] in {args.config})") from None


# -- the commands -------------------------------------------------------------------------


def _check_config(args: argparse.Namespace) -> int:
    config = _load(args)
    _check_model(config, args.config)
    sys.stdout.write(f"{args.config}: ok\n")
    if not config.model_path.exists():
        sys.stdout.write(
            f"no model at {config.model_path} yet: detect runs on rules only until "
            f"`tillpulse cloud train -c {args.config}`\n"
        )
    if not args.connect:
        return 0
    problems = _probes(config)
    for problem in problems:
        sys.stderr.write(f"tillpulse cloud check-config: {problem}\n")
    return 1 if problems else 0


def _check_model(config: CloudConfig, source: str) -> None:
    """The model detect would load, loaded: a corrupt or foreign file fails here too."""
    if not config.model_path.is_file():
        return
    from cloud.detectors.trained_model import TrainedModel  # noqa: PLC0415

    try:
        TrainedModel.load(config.model_path)
    except ValueError as exc:  # as detect says it
        raise OperatorError(f"{exc}: train a new one (tillpulse cloud train -c {source})") from None


def _probes(config: CloudConfig) -> list[str]:
    """Each server the jobs talk to, logged in to as they would: an ok line on stdout,
    or the problem naming the server and the fix, returned."""
    from cloud.reading.influxql_reader import InfluxQLReader, InfluxQueryError  # noqa: PLC0415

    results: dict[str, str | None] = {}
    try:
        with InfluxQLReader(config.query.reader_settings()) as reader:
            reader.query("SHOW MEASUREMENTS LIMIT 1")
        results[f"[query] InfluxDB {config.query.url}"] = None
    except InfluxQueryError as exc:
        results["[query]"] = str(exc)
    if config.influxdb is not None:
        results[f"[influxdb] InfluxDB {config.influxdb.url}"] = probe_influx(config.influxdb)
    if config.mqtt is not None:
        section = config.mqtt
        # its own id and session (a broker may bind ids to accounts): a running
        # detect is disconnected once and resumes its session
        results[f"[mqtt] MQTT broker {section.host}:{section.port}"] = probe_mqtt(
            section, client_id=section.client_id
        )
    for server, problem in results.items():
        if problem is None:
            sys.stdout.write(f"{server}: ok\n")
    return [f"{server.split()[0]} {problem}" for server, problem in results.items() if problem]


def _train(args: argparse.Namespace) -> int:
    config = _load(args, training=True)
    end = args.end if args.end is not None else time.time_ns()
    start = args.start if args.start is not None else end - int(args.days * NS_PER_DAY)
    _time_range(start, end)
    path = _output_file(args.out, "--out") if args.out else config.model_path
    from cloud.jobs.schedule import install_model, learn_model  # noqa: PLC0415
    from cloud.jobs.training import HistoryTooShortError  # noqa: PLC0415

    log.info("train_started", extra=kv(start=_iso_text(start), end=_iso_text(end), model=str(path)))

    progress = _progress(args)
    try:
        model = _influx(
            args,
            lambda: learn_model(config, start, end, calendar=args.calendar, progress=progress),
        )
    except HistoryTooShortError as exc:
        raise OperatorError(f"{exc}: widen the range (--from/--to, or --days)") from None
    kept = install_model(model, path, force=args.force)
    sys.stdout.write(_train_summary(model, path, kept))
    return 0


def _train_summary(model: TrainedModel, path: Path, kept: Path | None) -> str:
    from cloud.jobs.schedule import MIN_HISTORY_DAYS, profiled  # noqa: PLC0415
    from cloud.jobs.training import MIN_FRAUD_WINDOWS  # noqa: PLC0415

    meta = model.metadata
    baselines = model.baselines
    days = (baselines.trained_to_ns - baselines.trained_from_ns) / NS_PER_DAY
    windows = meta.get("fraud_windows", 0)
    if model.fraud is not None:
        fraud = f"yes, from {windows:,} terminal-windows since {meta.get('fraud_from')}"
    else:
        fraud = (
            f"no: {windows:,} terminal-windows with payments since {meta.get('fraud_from')} "
            f"(the newest 48 h of the history), it needs {MIN_FRAUD_WINDOWS}: train with "
            "--to near the newest payments"
        )
    previous = f" (the previous one kept as {kept})" if kept else ""
    return (
        f"model written to {path}{previous}\n"
        f"  history    {meta.get('history_from')} .. {meta.get('history_to')} ({days:.1f} days)\n"
        f"  payments   {meta.get('payments', 0):,}\n"
        f"  terminals  {len(baselines.terminals)} ({profiled(model)} with at least "
        f"{MIN_HISTORY_DAYS} day of payments)\n"
        f"  profiles   {len(baselines.profiles)}\n"
        f"  fraud      {fraud}\n"
    )


def _detect(args: argparse.Namespace) -> int:
    if (args.start is None) != (args.end is None):
        given, needed = ("--to", "--from") if args.start is None else ("--from", "--to")
        raise OperatorError(
            f"{given} needs {needed}: a replay is --from ISO --to ISO (--once and --every "
            "detect the windows due now)"
        )
    replay = args.start is not None
    if replay:
        _time_range(args.start, args.end)
    config = _load(args)
    if args.alerts_out is not None:
        _output_file(args.alerts_out, "--alerts-out")
    if replay:  # its state in memory: nothing to share with a live job
        return _run_detect(args, config, replay)
    lock = _own_shard(config, args.shard, args.config)
    try:
        return _run_detect(args, config, replay)
    finally:
        os.close(lock)


def _own_shard(config: CloudConfig, shard: Shard, source: str) -> int:
    """This job's lock on its shard's state (a descriptor to close when it ends): two
    jobs on one shard (a cron run while the last one still runs, a service and a
    manual run) would each raise and send the same alerts."""
    from cloud.jobs.schedule import shard_state_dir  # noqa: PLC0415

    state_dir = shard_state_dir(config, shard)
    lock = lock_directory(state_dir)
    if lock is None:
        raise OperatorError(
            f"another cloud detect runs shard {shard.index}/{shard.count} with [cloud] "
            f"state_dir {config.state_dir} (in {source}): stop it or let it finish, or give "
            "this one another --shard"
        )
    return lock


def _run_detect(args: argparse.Namespace, config: CloudConfig, replay: bool) -> int:
    from cloud.jobs.schedule import make_detection, make_outputs, run_live, run_range  # noqa: PLC0415
    from wire.messages import encode  # noqa: PLC0415

    detection = make_detection(config, args.shard, calendar=args.calendar, replay=replay)
    outputs = make_outputs(config, replay=replay)
    log.info(
        "detect_started",
        extra=kv(
            mode="replay" if replay else ("every" if args.every else "once"),
            every_s=args.every,
            shard=f"{args.shard.index}/{args.shard.count}",
            window_s=config.cloud.window_s,
            model=str(config.model_path),
        ),
    )
    # replaced, unless --append: a rerun of the same replay gives the same file
    alerts_out = args.alerts_out.open("ab" if args.append else "wb") if args.alerts_out else None

    def record(report: CycleReport) -> None:
        if alerts_out is not None:
            alerts_out.writelines(encode(alert) + b"\n" for alert in report.alerts)
            alerts_out.flush()

    stop = threading.Event()
    try:
        with ServiceSignals("cloud detect") as signals:
            signals.running(stop)  # a signal now ends it after the window in hand
            try:
                if replay:
                    delivery = _influx(
                        args,
                        lambda: run_range(
                            detection,
                            outputs,
                            args.start,
                            args.end,
                            record,
                            stop=stop,
                            progress=_progress(args),
                        ),
                    )
                else:
                    delivery = _influx(
                        args,
                        lambda: run_live(
                            config,
                            detection,
                            outputs,
                            every_s=args.every,
                            stop=stop,
                            on_cycle=record,
                        ),
                    )
            except RuntimeFailure:  # e.g. a query that timed out after a signal
                if signals.received is None:
                    raise
                raise KeyboardInterrupt from None  # the stop asked for, not what it met
    finally:
        outputs.close()
        detection.reader.close()
        if alerts_out is not None:
            alerts_out.close()
    if args.every:
        log.info("detect_stopped", extra=kv(summary=delivery.summary()))
    # SIGTERM stops a live job cleanly (exit 0, as systemd expects); Ctrl-C, or any
    # signal before a one-shot run finished, is an interruption (130)
    if signals.received is not None and (signals.received == signal.SIGINT or not args.every):
        sys.stdout.write(delivery.summary() + " (interrupted)\n")
        raise KeyboardInterrupt
    sys.stdout.write(delivery.summary() + "\n")
    if delivery.undelivered and not args.every:
        raise RuntimeFailure(
            f"{delivery.undelivered} of {delivery.alerts} alerts not delivered: fix the "
            "outputs named above (MQTT keeps a live job's alerts and sends them next run)"
        )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    check_file(args.labels, "--labels", COMMAND_LINE, "give the labels JSONL (docs/wire.md)")
    check_file(args.alerts, "--alerts", COMMAND_LINE, "give the file of detect --alerts-out")
    if args.report_out is not None:
        _output_file(args.report_out, "--report-out")
    from rich.console import Console  # noqa: PLC0415

    from cloud.evaluation.scoring import (  # noqa: PLC0415
        evaluate,
        print_report,
        read_alerts_jsonl,
        report_json,
    )
    from wire.labels import read_labels  # noqa: PLC0415

    try:
        labels = read_labels(args.labels)
        alerts = read_alerts_jsonl(args.alerts)
    except ValueError as exc:
        raise OperatorError(str(exc)) from None
    if not labels:
        raise RuntimeFailure(
            f"--labels {args.labels}: no labels in it, nothing to score against: run the "
            "simulator with injected incidents (sim --labels FILE), or give a file with labels"
        )
    report = evaluate(
        alerts, labels, window_s=args.window, terminal_hours=args.terminals * args.hours
    )
    as_json = report_json(report)
    if args.json:
        sys.stdout.write(as_json.decode() + "\n")
    else:  # rich clips at 80 columns in a pipe: give it room for the table
        print_report(report, Console() if sys.stdout.isatty() else Console(width=PIPE_WIDTH))
    if args.report_out is not None:
        args.report_out.write_bytes(as_json)
    return 0


def _sample_config(args: argparse.Namespace) -> int:
    return print_or_write(args, packaged("cloud", "cloud.example.toml"))
