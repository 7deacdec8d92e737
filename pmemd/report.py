"""Human and JSON renderings of configs, plans and status. Pure (takes values, returns text).

Every JSON document carries ``"format": FORMAT``; the format is described in pmemd(8).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from pmemd.actions import Kind, to_json
from pmemd.config import Loaded, iter_leaves
from pmemd.diagnose import Running
from pmemd.plan import Assessment
from pmemd.trial import Trial, TrialState
from pmemd.units import human
from pmemd.validate import Issue
from pmemd.yamldoc import ConfigIssue

FORMAT = 1  # version of the --json documents


def issue_lines(a: Assessment) -> list[str]:
    """The plan's issues as ``file:line:col: severity: key: message`` lines (for stderr)."""
    return [f"{issue_loc(a.loaded, i.key)}{i}" for i in a.plan.issues]


def error_json(issue: ConfigIssue | str) -> dict[str, Any]:
    """One refusal as JSON: file, line, column, key, message (None where unknown)."""
    if isinstance(issue, str):
        return {"file": None, "line": None, "column": None, "key": None, "message": issue}
    loc = issue.loc
    return {"file": loc.file if loc else None, "line": loc.line if loc else None,
            "column": loc.col if loc else None, "key": issue.keypath or None, "message": issue.message}


def issue_json(loaded: Loaded, issue: Issue) -> dict[str, Any]:
    """An issue as JSON, with the file, line and column of its key where the config has it."""
    loc = loaded.origin(*issue.key.split(".")) if issue.key else None
    return {**asdict(issue), "file": loc.file if loc else None, "line": loc.line if loc else None,
            "column": loc.col if loc else None}


def issue_loc(loaded: Loaded, key: str) -> str:
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
        "format": FORMAT,
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
        "format": FORMAT,
        "in_sync": p.in_sync,
        "bootloader": {"layout": a.facts.boot.layout, "detected_by": a.facts.boot.detected_by},
        "desired_args": list(p.desired_args),
        "next_boot_args": list(p.next_boot_args) if p.next_boot_args is not None else None,
        "running_args": list(a.facts.cmdline.tokens),
        "reboot_needed": p.reboot_needed,
        "actions": [to_json(x) for x in p.actions],
        "after_reboot": list(p.after_reboot),
        "issues": [issue_json(a.loaded, i) for i in p.issues],
        "namespaces": [asdict(v) for v in p.namespaces],
        "notes": list(p.notes),
        "trial": {"next_boot": a.owned.trial.state is TrialState.PENDING or any(
            x.kind is Kind.ARM_TRIAL for x in p.actions), "why": p.trial, **trial_json(a.owned.trial)},
    }


def trial_json(t: Trial) -> dict[str, Any]:
    """The last trial boot: ``"trial"`` of ``pmemd status --json`` (see pmemd(8))."""
    return {"state": t.state.value, "since": t.since, "boot_id": t.boot_id, "trial_boot_id": t.trial_boot_id,
            "tokens": list(t.tokens), "committed": list(t.committed),
            "previous": None if t.previous is None else list(t.previous), "reason": t.reason}


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
    if p.trial:
        out.append(f"trial boot: {p.trial}")
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


def status_json(a: Assessment, log: list[dict[str, Any]]) -> dict[str, Any]:
    pending = a.owned.pending_reboot
    nexts = set(a.plan.next_boot_args or ())
    return {
        "format": FORMAT,
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
        "trial": trial_json(a.owned.trial),
        "reboot_needed": a.plan.reboot_needed,
        "issues": [issue_json(a.loaded, i) for i in a.plan.issues],
        "pending_actions": [act.summary for act in a.plan.actions],
        "last_actions": log,
    }


def summary_line(a: Assessment) -> str:
    """The one line a person reads in ``systemctl status pmemd``."""
    p = a.plan
    trial = a.owned.trial
    if trial.state is TrialState.FAILED and set(trial.tokens) <= set(p.desired_args):
        # first: a region that failed the trial's verification is also an error, and this says why
        kept = " ".join(trial.committed) or "no pmemd arguments"
        return (f"trial boot failed: {trial.reason}; the default keeps {kept} (change the config or run "
                "`pmemd apply --retry-trial`)")
    if p.errors:
        return f"error: {issue_loc(a.loaded, p.errors[0].key)}{p.errors[0].message}"
    pending = a.owned.pending_reboot
    if pending is not None:
        kind = "trial boot" if trial.state is TrialState.PENDING else "reboot"
        return f"{kind} pending since {pending.since[:16].replace('T', ' ')}: {pending.reason}"
    if any(x.kind is Kind.SET_KERNEL_ARGS for x in p.actions):
        return "boot config not written yet: " + " ".join(p.desired_args) + " (pmemd apply)"
    if p.reboot_needed:
        return "reboot needed: " + " ".join(p.desired_args)
    total = len(p.namespaces)
    if total == 0:
        return "in sync: no namespaces configured"
    mounted = sum(1 for v in p.namespaces if v.running is Running.MOUNTED and v.dax)
    want_mount = sum(1 for n in a.loaded.config.namespaces.values() if n.mount)
    if p.actions:
        return f"{len(p.actions)} change(s) pending; {mounted}/{want_mount} namespaces mounted with DAX"
    if want_mount:
        return f"in sync: {mounted}/{want_mount} namespaces mounted with DAX"
    return f"in sync: {total} namespace(s) present"


def _pmem_args(args: tuple[str, ...]) -> str:
    return " ".join(t for t in args if t.startswith(("memmap=", "nokaslr"))) or "(no memmap)"


def _namespace_rows(namespaces: list[dict[str, Any]]) -> list[str]:
    out = [f"{'NAMESPACE':<12} {'DESIRED':<22} {'CONFIGURED':<11} {'RUNNING':<10} DEVICE / MOUNT"]
    for n in namespaces:
        dev = n["device"] or "-"
        if n["mount"]:
            dev += f" on {n['mount']}" + (" (dax)" if n["dax"] else " (NO DAX)")
        out.append(f"{n['name']:<12} {n['desired']['token']:<22} {'yes' if n['configured'] else 'no':<11} "
                   f"{n['running']:<10} {dev}")
        out.extend(f"{'':<12} ! {d}" for d in n["diagnosis"])
    if not namespaces:
        out.append("(no namespaces)")
    return out


def status_text(a: Assessment, log: list[dict[str, Any]]) -> str:
    j = status_json(a, log)
    out = [j["summary"], "", *_namespace_rows(j["namespaces"]), ""]
    out.append(f"running args:   {_pmem_args(a.facts.cmdline.tokens)}")
    nxt = a.plan.next_boot_args
    out.append(f"next-boot args: {_pmem_args(nxt) if nxt is not None else 'unknown'}")
    t = j["trial"]
    if t["state"] != "none":
        out.append(f"trial boot:     {t['state']} since {t['since']}: {' '.join(t['tokens']) or '(no pmemd arguments)'}"
                   + (f" ({t['reason']})" if t["reason"] else ""))
    if j["pending_reboot"]:
        pr = j["pending_reboot"]
        out.append(f"pending reboot: since {pr['since']} (boot {pr['boot_id']}): {pr['reason']}"
                   + (f", scheduled for {pr['scheduled_for']}" if pr["scheduled_for"] else ""))
    if j["pending_actions"]:
        out.append("pending actions (run `pmemd plan` for details):")
        out.extend(f"  - {s}" for s in j["pending_actions"])
    if log:
        out.append("last actions:")
        out.extend(f"  {e.get('time', '?')} {e.get('action', '?')} {e.get('namespace') or ''} "
                   f"{e.get('result', '?')}: {e.get('message', '')}" for e in log)
    return "\n".join(out)
