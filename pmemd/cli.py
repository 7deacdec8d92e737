"""The ``pmemd`` command line. Thin: parses arguments, calls the engine, prints.

User errors are one line each on stderr and exit 1, never a traceback. ``plan`` exits 0 when the
host is in sync, 2 when changes are pending, 1 on errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from pmemd import __version__
from pmemd.config import ConfigErrors, Loaded, iter_leaves
from pmemd.engine import Assessment, Target, assess, load_config
from pmemd.fsroot import PathEscape
from pmemd.plan import Plan
from pmemd.runner import SubprocessRunner
from pmemd.state import ACTION_LOG, StateError
from pmemd.units import human

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


class UserError(Exception):
    """An error the user can fix; printed as one line."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
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
    sub.add_parser("validate", help="check the config (syntax, schema, this host's memory map)")
    c = sub.add_parser("config", help="print the effective config with the file and line of each value")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    pl = sub.add_parser("plan", help="show what pmemd would change (exit 0 in sync, 2 changes, 1 error)")
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    st = sub.add_parser("status", help="desired / configured / running per namespace, pending reboot")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    ap = sub.add_parser("apply", help="make the host match the config (mkfs only on blank or pmemd-made "
                        "devices; kernel-argument changes take effect after a reboot)")
    ap.add_argument("--dry-run", action="store_true",
                    help="go through every step but skip the side effects; exit 2 if changes are pending")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("schema", help="print the JSON Schema of the config file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return _dispatch(args, parser)
    except ConfigErrors as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return EXIT_ERROR
    except (UserError, StateError, PathEscape) as exc:
        print(f"pmemd: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.command == "schema":
        from pmemd.model import json_schema

        print(json.dumps(json_schema(), indent=2))
        return EXIT_OK
    target = Target.make(args.root, args.config)
    if not target.root.prefix.is_dir():
        raise UserError(f"--root {args.root}: no such directory")
    if args.command == "config":
        loaded = load_config(target)
        if args.json:
            print(json.dumps(config_json(loaded), indent=2))
        else:
            print(config_text(loaded))
        return EXIT_OK
    runner = SubprocessRunner()
    if args.command == "apply":
        return _apply(target, runner, dry_run=args.dry_run, as_json=args.json)
    a = assess(target, runner)
    if args.command == "validate":
        for issue in a.plan.issues:
            print(f"{_issue_loc(a.loaded, issue.key)}{issue}", file=sys.stderr)
        if a.plan.errors:
            return EXIT_ERROR
        n = len(a.loaded.config.namespaces)
        files = len(a.loaded.discovery.sources)
        print(f"ok: {n} namespace{'s' if n != 1 else ''} from {files} file{'s' if files != 1 else ''}, "
              f"valid for this host")
        for v in a.plan.namespaces:
            print(f"  {v.name}: {v.token} ({v.placement})")
        return EXIT_OK
    if args.command == "plan":
        if args.json:
            print(json.dumps(plan_json(a), indent=2))
        else:
            print(plan_text(a))
        return _plan_exit(a.plan)
    if args.command == "status":
        log = _last_actions(target)
        if args.json:
            print(json.dumps(status_json(a, log), indent=2))
        else:
            print(status_text(a, log))
        return EXIT_ERROR if a.plan.errors else EXIT_OK
    parser.error(f"unknown command {args.command}")
    return EXIT_ERROR


def _apply(target: Target, runner: SubprocessRunner, *, dry_run: bool, as_json: bool) -> int:
    from pmemd.execute import apply
    from pmemd.journal import Journal

    if not dry_run and target.root.is_host and os.geteuid() != 0:
        raise UserError("apply changes boot config, filesystems and mounts: run it as root "
                        "(or try `pmemd apply --dry-run`)")
    journal = Journal.default(target.root if not dry_run else None)
    passes = apply(target, runner, journal, dry_run=dry_run)
    last = passes[-1]
    if as_json:
        print(json.dumps({
            "dry_run": dry_run,
            "passes": [{
                "actions": [{"kind": o.action.kind.value, "label": o.action.label.value,
                             "namespace": o.action.namespace, "summary": o.action.summary,
                             "result": o.result, "message": o.message} for o in p.outcomes],
                "issues": [asdict(i) for i in p.plan.issues],
                "side_effects": list(p.side_effects),
            } for p in passes],
            "summary": summary_line(last.assessment),
        }, indent=2))
    else:
        for p in passes:
            for issue in p.plan.issues:
                print(f"{_issue_loc(p.assessment.loaded, issue.key)}{issue}")
            for o in p.outcomes:
                print(f"[{o.result}] {o.action.summary}" + (f": {o.message}" if o.message else ""))
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


def _plan_exit(p: Plan) -> int:
    if p.errors:
        return EXIT_ERROR
    return EXIT_CHANGES if p.actions else EXIT_OK


def _issue_loc(loaded: Loaded, key: str) -> str:
    if not key:
        return ""
    loc = loaded.origin(*key.split("."))
    return f"{loc}: " if loc else ""


# --- config --------------------------------------------------------------------------------


def config_json(loaded: Loaded) -> dict[str, Any]:
    values = []
    data = loaded.config.model_dump(mode="json")
    for path, value in iter_leaves(data):
        origin = loaded.merged.origins.get(path)
        values.append({
            "key": ".".join(path), "value": value,
            "file": origin.loc.file if origin else None, "line": origin.loc.line if origin else None,
            "overrides": [str(o) for o in origin.overrides] if origin else [],
        })
    d = loaded.discovery
    return {
        "config": data,
        "files": [s.path for s in d.sources],
        "shadowed": list(d.shadowed),
        "masked": list(d.masked),
        "values": values,
    }


def config_text(loaded: Loaded) -> str:
    j = config_json(loaded)
    lines = ["# effective config; each value with the file:line that set it"]
    width = max((len(f"{v['key']}: {json.dumps(v['value'])}") for v in j["values"]), default=20)
    for v in j["values"]:
        left = f"{v['key']}: {json.dumps(v['value'])}"
        where = f"{v['file']}:{v['line']}" if v["file"] else "default"
        if v["overrides"]:
            where += " (overrides " + ", ".join(v["overrides"]) + ")"
        lines.append(f"{left:<{width}}  # {where}")
    lines.append("")
    lines.append("files read, in merge order: " + (", ".join(j["files"]) or "none"))
    for s in j["shadowed"]:
        lines.append(f"shadowed (a file of the same name has higher precedence): {s}")
    for m in j["masked"]:
        lines.append(f"masked (empty or -> /dev/null): {m}")
    return "\n".join(lines)


# --- plan ----------------------------------------------------------------------------------


def plan_json(a: Assessment) -> dict[str, Any]:
    p = a.plan
    return {
        "in_sync": p.in_sync,
        "bootloader": {"layout": a.facts.boot.layout, "detected_by": a.facts.boot.detected_by},
        "desired_args": list(p.desired_args),
        "next_boot_args": list(p.next_boot_args) if p.next_boot_args is not None else None,
        "running_args": list(a.facts.cmdline.tokens),
        "reboot_needed": p.reboot_needed,
        "actions": [_clean(asdict(x)) for x in p.actions],
        "after_reboot": list(p.after_reboot),
        "issues": [asdict(i) for i in p.issues],
        "namespaces": [asdict(v) for v in p.namespaces],
        "notes": list(p.notes),
    }


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v not in (None, (), [], "")}


def plan_text(a: Assessment) -> str:
    p = a.plan
    out = [f"boot loader: {a.facts.boot.layout} ({a.facts.boot.detected_by})"]
    if p.namespaces:
        out.append("namespaces:")
        for v in p.namespaces:
            rng = f"[{v.start:#x}-{v.start + v.size - 1:#x}]" if v.start is not None else ""
            out.append(f"  {v.name:<12} {v.token}  {rng}  {human(v.size)}, {v.running}")
            out.append(f"  {'':<12} placement: {v.placement}")
    for note in p.notes:
        out.append(f"note: {note}")
    for issue in p.issues:
        out.append(f"{_issue_loc(a.loaded, issue.key)}{issue}")
    if p.errors:
        out.append("no changes planned: fix the errors above")
        return "\n".join(out)
    if not p.actions:
        out.append("in sync: nothing to do")
        return "\n".join(out)
    out.append(f"actions ({len(p.actions)}):")
    for i, act in enumerate(p.actions, 1):
        out.append(f"  {i}. [{act.label.value}] {act.summary}")
    if p.after_reboot:
        out.append("after the reboot, pmemd will:")
        out.extend(f"  - {s}" for s in p.after_reboot)
    return "\n".join(out)


# --- status --------------------------------------------------------------------------------


def _last_actions(target: Target, count: int = 10) -> list[dict[str, Any]]:
    text = target.root.read_text(ACTION_LOG) or ""
    out = []
    for line in text.splitlines()[-count:]:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def status_json(a: Assessment, log: list[dict[str, Any]]) -> dict[str, Any]:
    pending = a.owned.pending_reboot
    nexts = set(a.plan.next_boot_args or ())
    return {
        "in_sync": a.plan.in_sync,
        "summary": summary_line(a),
        "namespaces": [
            {
                "name": v.name,
                "desired": {"token": v.token, "start": v.start, "size": v.size},
                "configured": v.token in nexts,
                "running": v.running,
                "device": v.device,
                "mount": v.mount,
                "dax": v.dax,
                "diagnosis": list(v.diagnosis),
            }
            for v in a.plan.namespaces
        ],
        "pending_reboot": asdict(pending) if pending else None,
        "reboot_needed": a.plan.reboot_needed,
        "issues": [asdict(i) for i in a.plan.issues],
        "pending_actions": [act.summary for act in a.plan.actions],
        "last_actions": log,
    }


def summary_line(a: Assessment) -> str:
    """The one line a person reads in ``systemctl status pmemd``."""
    p = a.plan
    if p.errors:
        return f"error: {p.errors[0].message}"
    pending = a.owned.pending_reboot
    if pending is not None:
        return f"reboot pending since {pending.since[:16].replace('T', ' ')}: {pending.reason}"
    if p.reboot_needed:
        return "reboot needed: " + ", ".join(a.plan.desired_args)
    total = len(p.namespaces)
    if total == 0:
        return "in sync: no namespaces configured"
    mounted = sum(1 for v in p.namespaces if v.running == "mounted" and v.dax)
    want_mount = sum(1 for n in a.loaded.config.namespaces.values() if n.mount)
    if p.actions:
        return f"{len(p.actions)} change(s) pending; {mounted}/{want_mount} namespaces mounted with DAX"
    if want_mount:
        return f"in sync: {mounted}/{want_mount} namespaces mounted with DAX"
    return f"in sync: {total} namespace(s) present"


def status_text(a: Assessment, log: list[dict[str, Any]]) -> str:
    j = status_json(a, log)
    out = [j["summary"], ""]
    header = f"{'NAMESPACE':<12} {'DESIRED':<22} {'CONFIGURED':<11} {'RUNNING':<10} DEVICE / MOUNT"
    out.append(header)
    for n in j["namespaces"]:
        dev = n["device"] or "-"
        if n["mount"]:
            dev += f" on {n['mount']}" + (" (dax)" if n["dax"] else " (NO DAX)")
        out.append(f"{n['name']:<12} {n['desired']['token']:<22} {'yes' if n['configured'] else 'no':<11} "
                   f"{n['running']:<10} {dev}")
        for d in n["diagnosis"]:
            out.append(f"{'':<12} ! {d}")
    if not j["namespaces"]:
        out.append("(no namespaces)")
    out.append("")
    out.append("running args:   " + " ".join(t for t in a.facts.cmdline.tokens if t.startswith(("memmap", "nokaslr")))
               or "running args:   (no memmap)")
    nxt = a.plan.next_boot_args
    out.append("next-boot args: " + (" ".join(t for t in nxt if t.startswith(("memmap", "nokaslr"))) or "(no memmap)"
                                     if nxt is not None else "unknown"))
    if j["pending_reboot"]:
        pr = j["pending_reboot"]
        out.append(f"pending reboot: since {pr['since']} (boot {pr['boot_id']}): {pr['reason']}"
                   + (f", scheduled for {pr['scheduled_for']}" if pr["scheduled_for"] else ""))
    for issue in a.plan.issues:
        out.append(str(issue))
    if j["pending_actions"]:
        out.append("pending actions (run `pmemd plan` for details):")
        out.extend(f"  - {s}" for s in j["pending_actions"])
    if log:
        out.append("last actions:")
        for e in log:
            out.append(f"  {e.get('time', '?')} {e.get('action', '?')} {e.get('namespace') or ''} "
                       f"{e.get('result', '?')}: {e.get('message', '')}")
    return "\n".join(out)
