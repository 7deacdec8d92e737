"""The ``pmemd`` command line. Thin: parses arguments, calls the engine, prints.

User errors are one line each on stderr and exit 1, never a traceback. ``plan`` exits 0 when the
host is in sync, 2 when changes are pending, 1 on errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, NoReturn

from pmemd import __version__
from pmemd.engine import Target, assess, load_config
from pmemd.fsroot import PathEscape
from pmemd.plan import Assessment
from pmemd.report import (
    FORMAT,
    config_json,
    config_text,
    error_json,
    issue_lines,
    plan_json,
    plan_text,
    status_json,
    status_text,
    summary_line,
)
from pmemd.runner import SubprocessRunner
from pmemd.state import ACTION_LOG, StateError
from pmemd.yamldoc import ConfigErrors

if TYPE_CHECKING:
    from pmemd.execute import Outcome

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


class UserError(Exception):
    """An error the user can fix; printed as one line."""


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 1 like every other error: exit 2 means "changes pending"."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="pmemd",
        description="Declarative emulated persistent memory (memmap=) for Linux: describe regions, "
        "filesystems and mounts in /etc/pmem.yaml; pmemd checks them against the machine and "
        "changes only what differs.",
        epilog="Exit codes: 0 ok / in sync, 1 error, 2 (plan, apply --dry-run) changes pending. "
        "See pmemd(8) and pmem.yaml(5).",
    )
    p.add_argument("--version", action="version", version=f"pmemd {__version__}")
    p.add_argument("--root", default="/", metavar="DIR",
                   help="treat DIR as the host's / (a captured host tree); default /")
    p.add_argument("--config", metavar="PATH",
                   help="main config file instead of <root>/etc/pmem.yaml (drop-ins still come from "
                   "<root>/usr/lib/pmem.d, /run/pmem.d, /etc/pmem.d)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    va = sub.add_parser("validate", help="check the config (syntax, schema, this host's memory map)")
    va.add_argument("--dropin", metavar="FILE",
                    help="also check FILE as if it were installed as /etc/pmem.d/NAME (a candidate drop-in, "
                    "e.g. for Ansible's validate: or a package's tests); nothing is installed")
    va.add_argument("--as", dest="dropin_name", metavar="NAME",
                    help="the drop-in's file name for --dropin (default: FILE's own name)")
    c = sub.add_parser("config", help="print the effective config with the file and line of each value")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    pl = sub.add_parser("plan", help="show what pmemd would change (exit 0 in sync, 2 changes, 1 error)")
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    pl.add_argument("--dropin", metavar="FILE",
                    help="plan as if FILE were installed as /etc/pmem.d/NAME (e.g. Ansible's check mode); "
                    "nothing is installed")
    pl.add_argument("--as", dest="dropin_name", metavar="NAME", help="the drop-in's file name for --dropin")
    st = sub.add_parser("status", help="desired / configured / running per namespace, pending reboot")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    ap = sub.add_parser("apply", help="make the host match the config (mkfs only on blank or pmemd-made "
                        "devices; kernel-argument changes take effect after a reboot)")
    ap.add_argument("--dry-run", action="store_true",
                    help="go through every step but skip the side effects; exit 2 if changes are pending")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("--retry-trial", action="store_true",
                    help="arm a trial boot of arguments whose trial failed before (after fixing the cause); "
                    "pmemd does not retry a failed trial by itself")
    rb = sub.add_parser("rollback", help="put the boot config back to pmemd's arguments from before the last "
                        "committed trial boot (or disarm an armed trial); takes effect at the next boot")
    rb.add_argument("--json", action="store_true", help="machine-readable output")
    rs = sub.add_parser("reset", help="undo everything pmemd set up: its kernel arguments out of the boot "
                        "config, its filesystems unmounted (when not in use), its reboot flag cleared; "
                        "run when pmemd is removed")
    rs.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("schema", help="print the JSON Schema of the config file")
    sub.add_parser("daemon", help="run as the pmemd.service daemon: reconcile at start, on config "
                   "changes, SIGHUP and periodically (sd_notify READY/STATUS/WATCHDOG)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    as_json = bool(getattr(args, "json", False))
    try:
        return _dispatch(args, parser)
    except ConfigErrors as exc:
        return _refuse(as_json, [(str(i), error_json(i)) for i in exc.issues])
    except (UserError, StateError, PathEscape) as exc:
        return _refuse(as_json, [(f"pmemd: {exc}", error_json(str(exc)))])
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # a bug in pmemd: still one line, never a traceback
        where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
        line = (f"pmemd: internal error in `pmemd {args.command}`{where}: {type(exc).__name__}: {exc}; "
                "please report it (pmemd --version, the command and this line)")
        return _refuse(as_json, [(line, error_json(line))])


def _refuse(as_json: bool, errors: list[tuple[str, dict[str, Any]]]) -> int:
    """Every error on stderr, one line each; with --json also one document on stdout."""
    for line, _ in errors:
        print(line, file=sys.stderr)
    if as_json:
        _print_json({"format": FORMAT, "errors": [doc for _, doc in errors]})
    return EXIT_ERROR


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.command == "schema":
        from pmemd.schema import json_schema

        print(json.dumps(json_schema(), indent=2))
        return EXIT_OK
    target = Target.make(args.root, args.config)
    if not target.root.prefix.is_dir():
        raise UserError(f"--root {args.root}: no such directory")
    command = _COMMANDS.get(args.command)
    if command is None:
        parser.error(f"unknown command {args.command}")
    return command(target, args)


def _print_json(doc: dict[str, Any]) -> None:
    print(json.dumps(doc, indent=2))


def _config(target: Target, args: argparse.Namespace) -> int:
    loaded = load_config(target)
    if args.json:
        _print_json(config_json(loaded))
    else:
        print(config_text(loaded))
    return EXIT_OK


def _candidate(args: argparse.Namespace) -> tuple[str, str] | None:
    """(path, name) of a drop-in given with --dropin FILE [--as NAME]."""
    if args.dropin:
        return os.path.abspath(args.dropin), args.dropin_name or os.path.basename(args.dropin)
    if args.dropin_name:
        raise UserError("--as names the file given with --dropin; add --dropin FILE")
    return None


def _validate(target: Target, args: argparse.Namespace) -> int:
    a = assess(target, SubprocessRunner(), load_config(target, candidate=_candidate(args)))
    _issues_to_stderr(a)
    if a.plan.errors:
        return EXIT_ERROR
    n = len(a.loaded.config.namespaces)
    files = len(a.loaded.discovery.sources)
    print(f"ok: {n} namespace{'s' if n != 1 else ''} from {files} file{'s' if files != 1 else ''}, "
          f"valid for this host")
    for v in a.plan.namespaces:
        print(f"  {v.name}: {v.token} ({v.placement})")
    return EXIT_OK


def _issues_to_stderr(a: Assessment) -> None:
    for line in issue_lines(a):
        print(line, file=sys.stderr)


def _plan(target: Target, args: argparse.Namespace) -> int:
    candidate = _candidate(args)
    a = assess(target, SubprocessRunner(), load_config(target, candidate=candidate) if candidate else None)
    if args.json:
        _print_json(plan_json(a))
    else:
        _issues_to_stderr(a)
        print(plan_text(a))
    if a.plan.errors:
        return EXIT_ERROR
    return EXIT_CHANGES if a.plan.actions else EXIT_OK


def _status(target: Target, args: argparse.Namespace) -> int:
    a = assess(target, SubprocessRunner())
    log = _last_actions(target)
    if args.json:
        _print_json(status_json(a, log))
    else:
        _issues_to_stderr(a)
        print(status_text(a, log))
    return EXIT_ERROR if a.plan.errors else EXIT_OK


def _daemon(target: Target, args: argparse.Namespace) -> int:
    from pmemd.daemon import main as daemon_main

    return daemon_main(target)


def _rollback(target: Target, args: argparse.Namespace) -> int:
    from pmemd.engine import rollback
    from pmemd.journal import Journal

    if target.root.is_host and os.geteuid() != 0:
        raise UserError("rollback changes the boot config: run it as root")
    try:
        outcomes = rollback(target, SubprocessRunner(), Journal.default(target.root))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    failed = _print_outcomes(outcomes, as_json=args.json)
    if not failed and not args.json:
        print("done; the next boot uses these arguments (reboot to roll back the running kernel too)")
    return EXIT_ERROR if failed else EXIT_OK


def _print_outcomes(outcomes: tuple[Outcome, ...], *, as_json: bool) -> bool:
    """Print what was done; True if an action failed."""
    if as_json:
        _print_json({"format": FORMAT, "actions": [
            {"kind": o.action.kind.value, "namespace": o.action.namespace, "summary": o.action.summary,
             "result": o.result.value, "message": o.message} for o in outcomes]})
    else:
        for o in outcomes:
            print(f"[{o.result.value}] {o.action.summary}" + (f": {o.message}" if o.message else ""))
    return any(o.result == "failed" for o in outcomes)


def _reset(target: Target, args: argparse.Namespace) -> int:
    from pmemd.engine import reset
    from pmemd.journal import Journal

    if target.root.is_host and os.geteuid() != 0:
        raise UserError("reset changes the boot config and unmounts filesystems: run it as root")
    outcomes = reset(target, SubprocessRunner(), Journal.default(target.root))
    failed = _print_outcomes(outcomes, as_json=args.json)
    if not args.json:
        if not outcomes:
            print("nothing to undo: pmemd owns no kernel arguments, filesystems or mounts here")
        elif not failed:
            print("done; memory reserved by the running kernel is given back at the next reboot")
    return EXIT_ERROR if failed else EXIT_OK


def _apply_command(target: Target, args: argparse.Namespace) -> int:
    return _apply(target, SubprocessRunner(), dry_run=args.dry_run, as_json=args.json, retry_trial=args.retry_trial)


def _apply(target: Target, runner: SubprocessRunner, *, dry_run: bool, as_json: bool,
           retry_trial: bool = False) -> int:
    from pmemd.engine import apply
    from pmemd.journal import Journal

    if not dry_run and target.root.is_host and os.geteuid() != 0:
        raise UserError("apply changes boot config, filesystems and mounts: run it as root "
                        "(or try `pmemd apply --dry-run`)")
    journal = Journal.default(target.root if not dry_run else None)
    first = assess(target, runner, retry_trial=True) if retry_trial else None
    passes = apply(target, runner, journal, dry_run=dry_run, loaded=first)
    last = passes[-1]
    if as_json:
        print(json.dumps({
            "format": FORMAT,
            "dry_run": dry_run,
            "passes": [{
                "actions": [{"kind": o.action.kind.value, "label": o.action.label.value,
                             "namespace": o.action.namespace, "summary": o.action.summary,
                             "result": o.result.value, "message": o.message} for o in p.outcomes],
                "issues": [asdict(i) for i in p.plan.issues],
                "side_effects": list(p.side_effects),
            } for p in passes],
            "summary": summary_line(last.assessment),
        }, indent=2))
    else:
        for p in passes:
            _issues_to_stderr(p.assessment)
            for o in p.outcomes:
                print(f"[{o.result.value}] {o.action.summary}" + (f": {o.message}" if o.message else ""))
            if dry_run and p.side_effects:
                print("side effects skipped in this dry run:")
                print("\n".join(f"  {s}" for s in p.side_effects))
        if not any(p.outcomes for p in passes) and not last.plan.errors:
            print("in sync: nothing to do")
    if any(p.failed for p in passes):
        return EXIT_ERROR
    if dry_run:
        return EXIT_CHANGES if last.plan.actions else EXIT_OK
    return EXIT_OK


def _last_actions(target: Target, count: int = 10) -> list[dict[str, Any]]:
    text = target.root.read_tail(ACTION_LOG) or ""
    out = []
    for line in text.splitlines()[-count:]:
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(entry, dict):  # a damaged line (null, a number) is skipped, not shown
            out.append(entry)
    return out


_COMMANDS: dict[str, Callable[[Target, argparse.Namespace], int]] = {
    "config": _config, "validate": _validate, "plan": _plan, "status": _status, "apply": _apply_command,
    "daemon": _daemon, "reset": _reset, "rollback": _rollback,
}


