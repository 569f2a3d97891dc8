"""The `hpo` command line: server, worker, submit, demo, db upgrade."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo import config

if TYPE_CHECKING:
    from hpo.client import Client
    from hpo.study import Study

# Installed, the top-level examples/ ships as `service/examples`; in a checkout it is itself.
_INSTALLED_EXAMPLES = Path(__file__).resolve().parent / "examples"
EXAMPLES = (
    _INSTALLED_EXAMPLES
    if _INSTALLED_EXAMPLES.is_dir()
    else Path(__file__).resolve().parent.parent / "examples"
)


LOG_FORMAT_HELP = "text (default) or json: one JSON object per line on stderr"


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_server(args: argparse.Namespace) -> int:
    from hpo import logs
    from service import serve
    from service.app import create_app
    from service.settings import Settings
    from service.storage.db import DatabaseUnavailable

    settings = Settings.from_env(database_url=args.database_url)
    try:
        serve.check_processes(settings, args.processes)
    except serve.ProcessesRefused as exc:
        raise CliError(str(exc)) from exc
    if not _is_loopback(args.host) and not (settings.api_token and settings.worker_token):
        raise CliError(
            f"refusing to listen on {args.host} without tokens: set HPO_API_TOKEN and "
            "HPO_WORKER_TOKEN, or listen on 127.0.0.1 (the default)"
        )
    out = logs.configure(args.log_format, args.log_level)
    listen = serve.Listen(args.host, args.port, args.processes, args.log_format, args.log_level)
    announce = (
        f"hpo server on http://{args.host}:{args.port}/ "
        f"(database {logs.redact_url(settings.database_url)}, API docs at /docs"
        + (f", {args.processes} processes)" if args.processes > 1 else ")")
    )

    def migrated() -> None:
        out.announce("hpo.server", announce, host=args.host, port=args.port)

    try:
        if args.processes > 1:  # the parent migrates, then starts the processes
            serve.serve_processes(settings, listen, migrated)
            return 0
        app = create_app(settings)
    except DatabaseUnavailable as exc:
        raise CliError(str(exc)) from exc
    migrated()
    serve.serve(app, listen)
    return 0


def connection_of(args: argparse.Namespace) -> tuple[str, str | None]:
    """The server a command talks to and its token (the flag, else the command's variable),
    validated. Raises hpo.config.ConfigError."""
    return config.server_url(args.server), config.token(args.token_variable, args.token)


def cmd_worker(args: argparse.Namespace) -> int:
    from trainer import processes

    server, token = connection_of(args)
    try:
        options = processes.WorkerOptions(
            server=server,
            token=token,
            threads=args.threads,
            retry_seconds=args.retry_seconds,
            log_format=args.log_format,
            max_trials_per_process=args.max_trials_per_process,
            fuse=processes.parse_fuse(args.fuse),
            slots=args.slots,
        )
        return processes.run(options, devices=args.devices)
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def load_spec_file(path: Path) -> dict[str, Any]:
    from service.domain.spec import SpecDocumentError, load_spec_document

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return load_spec_document(text)
    except SpecDocumentError as exc:
        raise CliError(f"{path}: {exc}") from exc


def submit(client: Client, document: dict[str, Any], wait: bool) -> Study:
    study = client.create_study(document)
    print(f"study {study.id} '{study.name}' created: {client.server}/#/studies/{study.id}")
    if study.reason:
        print(study.reason)  # e.g. no worker can run its model yet
    if wait:
        print_result(study.wait().data)
    return study


def print_result(study: dict[str, Any]) -> None:
    best = study.get("best")
    print(
        f"study '{study['name']}' {study['state']}"
        + (f": {study['reason']}" if study.get("reason") else "")
    )
    if isinstance(best, list):
        print_front(study["spec"]["objectives"], best)
    elif best:
        metric = study["spec"]["objective"]["metric"]
        params = ", ".join(f"{k}={v}" for k, v in best["params"].items())
        print(f"best trial #{best['number']}: {metric}={best['value']:.4g} with {params}")
        held_out = held_out_text(best.get("test_metrics"))
        if held_out:
            print(f"held-out test of trial #{best['number']}: {held_out}")


def print_front(objectives: list[dict[str, str]], front: list[dict[str, Any]]) -> None:
    """A multi-objective study's Pareto set: a heading, then one line per trial by number."""
    goals = ", ".join(f"{o['direction']} {o['metric']}" for o in objectives)
    print(f"Pareto front ({goals}): {len(front)} trial{'' if len(front) == 1 else 's'}")
    for trial in front:
        values = " ".join(
            f"{o['metric']}={_number(v)}" for o, v in zip(objectives, trial["values"], strict=True)
        )
        params = ", ".join(f"{k}={v}" for k, v in trial["params"].items())
        print(f"  trial #{trial['number']}: {values} with {params}")


def _number(value: float | None) -> str:
    return "null" if value is None else f"{value:.4g}"


def held_out_text(test_metrics: dict[str, Any] | None) -> str | None:
    """A trial's held-out test metrics in words ("test_accuracy=0.965 test_loss=0.1234 (never
    used for selection)"), why there are none, or None when its worker sent none."""
    if not test_metrics:
        return None
    if "unavailable" in test_metrics:
        return f"no score ({test_metrics['unavailable']})"
    numbers = " ".join(
        f"{name}={test_metrics[name]:.4g}"
        for name in ("test_accuracy", "test_loss")
        if isinstance(test_metrics.get(name), int | float)
    )
    return f"{numbers} (never used for selection)"


def cmd_submit(args: argparse.Namespace) -> int:
    from hpo.client import Client
    from hpo.protocol import StudyState

    server, token = connection_of(args)
    document = load_spec_file(Path(args.spec))
    client = Client(server, token=token, retry_seconds=args.retry_seconds)
    try:
        study = submit(client, document, args.wait)
    finally:
        client.close()
    return 0 if study.state in (StudyState.RUNNING, StudyState.COMPLETED) else 1


def cmd_export(args: argparse.Namespace) -> int:
    from hpo.client import Client

    server, token = connection_of(args)
    client = Client(server, token=token, retry_seconds=args.retry_seconds)
    try:
        study = client.study(args.study)
        if args.output in (None, "-"):
            client.export(study["id"], args.format, sys.stdout.buffer)
            sys.stdout.flush()
        else:
            try:
                with open(args.output, "wb") as out:
                    size = client.export(study["id"], args.format, out)
            except OSError as exc:
                raise CliError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
            print(f"{args.output}: {size} bytes, study '{study['name']}'", file=sys.stderr)
    finally:
        client.close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from service.demo import run_demo

    return run_demo(
        Path(args.spec) if args.spec else EXAMPLES / "demo.yaml",
        database=args.database_url,
        port=args.port,
        keep=args.keep,
        fill_slots=args.spec is None,
    )


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from hpo.logs import redact_url
    from service.settings import Settings
    from service.storage import migrate
    from service.storage.db import DatabaseUnavailable

    settings = Settings.from_env(
        database_url=args.database_url, database_wait_seconds=args.wait_seconds
    )
    try:
        migrate.prepare(settings.database_url, wait_seconds=settings.database_wait_seconds)
    except DatabaseUnavailable as exc:
        raise CliError(str(exc)) from exc
    print(f"database {redact_url(settings.database_url)} is up to date")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpo", description="Hyperparameter optimization service.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("server", help="migrate the database, then serve the API and the page")
    p.add_argument("--host", default=config.DEFAULT_HOST)
    p.add_argument("--port", type=int, default=config.DEFAULT_PORT)
    p.add_argument("--database-url", default=None, help="default: $HPO_DATABASE_URL or sqlite")
    p.add_argument(
        "--processes",
        type=_positive_int,
        default=1,
        metavar="N",
        help="server processes sharing the port (PostgreSQL only: on SQLite the server is one "
        "process, so N above 1 is refused)",
    )
    p.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    _add_log_format(p)
    p.set_defaults(func=cmd_server)

    p = sub.add_parser(
        "worker", help="train trials leased from a server: training processes (slots) per device"
    )
    _add_connection(p, "worker", config.WORKER_TOKEN, retry_seconds=config.RETRY_SECONDS)
    p.add_argument(
        "--devices",
        default="auto",
        help="auto | cpu | CUDA indices like 0,1 (counted within CUDA_VISIBLE_DEVICES when set)",
    )
    p.add_argument(
        "--slots",
        type=int,
        default=None,
        metavar="N",
        help="training processes per device, each a worker with its own trial (default: on the "
        "CPU one per physical core this process may use, after its affinity and cgroup CPU "
        "quota, each with one torch thread; with --threads alone, one; on CUDA one per GPU)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch CPU threads per slot (default: on the CPU the cores shared among the slots; "
        "on CUDA PyTorch's default)",
    )
    p.add_argument(
        "--max-trials-per-process",
        type=int,
        default=None,
        metavar="N",
        help="start a fresh training process after N trials (on CUDA one also starts whenever "
        "a trial leaves memory behind)",
    )
    p.add_argument(
        "--fuse",
        default="auto",
        metavar="K",
        help="train up to K leased trials at once as one fused model when they share a model "
        "shape (auto: 8 on a CPU, 32 on CUDA within its free memory; 1: one at a time)",
    )
    _add_log_format(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("submit", help="create a study from a YAML or JSON spec")
    p.add_argument("spec")
    _add_connection(p, "user", config.API_TOKEN, retry_seconds=config.SUBMIT_RETRY_SECONDS)
    p.add_argument("--wait", action="store_true", help="show live progress until it finishes")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("export", help="write a study's trials as CSV or JSON Lines")
    p.add_argument("study", help="the study's id or name")
    p.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    p.add_argument("--output", "-o", default=None, help="a file (default: standard output)")
    _add_connection(p, "user", config.API_TOKEN, retry_seconds=config.SUBMIT_RETRY_SECONDS)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="server + one worker + an example study on local SQLite")
    p.add_argument("--spec", default=None, help="default: examples/demo.yaml")
    p.add_argument("--database-url", default="sqlite:///hpo-demo.db")
    p.add_argument("--port", type=int, default=0, help="default: a free port")
    p.add_argument("--keep", action="store_true", help="keep serving the page afterwards")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("db", help="database maintenance")
    db_sub = p.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="run the migrations (hpo server also does)")
    up.add_argument("--database-url", default=None)
    up.add_argument(
        "--wait-seconds",
        type=float,
        default=None,
        help="how long to wait for the database to accept connections "
        "(default: $HPO_DATABASE_WAIT_SECONDS or 60)",
    )
    up.set_defaults(func=cmd_db_upgrade)
    return parser


def _add_connection(
    p: argparse.ArgumentParser, role: str, token_variable: str, retry_seconds: float
) -> None:
    """The options of a command that talks to a server (read with `connection_of`)."""
    p.add_argument("--server", default=config.DEFAULT_SERVER, help="the hpo server's URL")
    p.add_argument("--token", default=None, help=f"{role} token (default: ${token_variable})")
    p.add_argument(
        "--retry-seconds",
        type=float,
        default=retry_seconds,
        help="how long to keep retrying an unreachable server",
    )
    p.set_defaults(token_variable=token_variable)


def _positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (its message names the value)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def _add_log_format(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-format",
        default=config.DEFAULT_LOG_FORMAT,
        choices=config.LOG_FORMATS,
        help=LOG_FORMAT_HELP,
    )


def main(argv: Sequence[str] | None = None) -> int:
    from hpo.client import ApiError, ServerUnreachable, format_detail

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (CliError, config.ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
    except ServerUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
    except ApiError as exc:
        if exc.status == 401 or exc.status == 403:
            print(
                f"error: the server refused the token ({exc.status}): {format_detail(exc.detail)}",
                file=sys.stderr,
            )
        else:
            print(
                f"error: the server said {exc.status}:\n{format_detail(exc.detail)}",
                file=sys.stderr,
            )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
