"""
hostcheck runner: the fleet view, on the master.

``salt-run hostcheck.fleet`` runs ``hostcheck.report`` on a target, in
batches, and returns one row per minion, worst first: the worst severity,
the number of findings per check, the finding codes seen and the checks
that failed. Minions that did not answer within the timeout are listed
apart under ``no_return`` and are never counted as healthy; minions that
answered something that is not a report (module not synced, an exception)
are listed under ``failed``. Notes that several minions return alike are
collapsed into one line with a count.

``cached=True`` builds the same table from the ``hostcheck`` grain in the
master's cache (``cache.grains``), without contacting any minion: a fast
view of a large fleet, as fresh as the minions' last grains refresh.

It needs nothing but Salt on the master (no hostcheck module is imported
here). The target is published as given (as the ``salt`` command does), so
on the top master of a syndic setup the minions below each syndic answer
through it, and the syndics' lists of expected minions make the silent ones
show up under ``no_return``. With several masters (multi-master), run it on
any one of them: every minion answers each master it is connected to.
"""

import logging
import math
import numbers

import salt.client
import salt.exceptions
import salt.utils.minions

log = logging.getLogger(__name__)

__virtualname__ = "hostcheck"

#: severities, worst first; "ok" is "no finding"
RANK = {"critical": 0, "warning": 1, "info": 2, "ok": 3}
TGT_TYPES = ("glob", "pcre", "list", "grain", "grain_pcre", "pillar", "pillar_pcre",
             "pillar_exact", "compound", "ipcidr", "nodegroup", "range")
#: severity of what a cached grain entry counts, where the grain does not say
#: (orphans' and timezone's grain counts are critical findings)
GRAIN_SEVERITY = {"orphans": "critical", "timezone": "critical"}
#: outputters that print data for machines: no text table for them
MACHINE_OUTPUTTERS = ("json", "yaml", "msgpack", "pprint", "raw", "newline_values_only", "profile")


def __virtual__():
    return __virtualname__


def _fail(text):
    raise salt.exceptions.SaltInvocationError(text)


# --------------------------------------------------------------------------
# arguments


def _batch_size(batch, total):
    """Minions per batch: ``None`` -> all, ``N`` or ``"N"``, ``"N%"`` of ``total`` (at least 1)."""
    if batch in (None, ""):
        return max(total, 1)
    text = str(batch).strip()
    try:
        if text.endswith("%"):
            share = float(text[:-1])
            if not 0 < share <= 100:
                raise ValueError(text)
            return max(1, int(math.floor(total * share / 100.0)))
        size = int(text)
    except ValueError:
        _fail("batch must be a number of minions or a percentage like 10%, got {!r}".format(batch))
    if size < 1:
        _fail("batch must be at least 1, got {!r}".format(batch))
    return size


def _timeout(timeout):
    if timeout is None:
        return __opts__.get("timeout", 5)  # pylint: disable=undefined-variable
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not 0 < timeout <= 3600:
        _fail("timeout must be a number of seconds between 0 and 3600, got {!r}".format(timeout))
    return timeout


def _validate(tgt_type, severity):
    if tgt_type not in TGT_TYPES:
        _fail("tgt_type must be one of {}, got {!r}".format(", ".join(TGT_TYPES), tgt_type))
    if severity is not None and severity not in ("critical", "warning", "info"):
        _fail("severity must be one of critical, warning, info, got {!r}".format(severity))


def _want_table(table):
    if table is not None:
        return bool(table)
    return __opts__.get("output") not in MACHINE_OUTPUTTERS  # pylint: disable=undefined-variable


# --------------------------------------------------------------------------
# rows (pure)


def report_row(minion, report):
    """One row from a ``hostcheck.report`` return."""
    checks = report.get("checks") or {}
    findings = report.get("findings") or []
    return {
        "minion": minion,
        "worst": report.get("worst", "ok") if report.get("worst") in RANK else "ok",
        "counts": {name: int((entry or {}).get("count") or 0) for name, entry in checks.items()},
        "codes": sorted({"{}/{}".format(f.get("check"), f.get("code")) for f in findings}),
        "errors": {name: entry["error"] for name, entry in checks.items() if (entry or {}).get("error")},
    }


def _grain_entry(name, entry):
    """``(count, severity)`` of one cached grain entry."""
    count = int(entry.get("count") or 0)
    if name == "reboot_required":
        count = 1 if entry.get("required") else 0
    elif name == "timezone":
        count = 0 if entry.get("consistent", True) else 1
    severity = entry.get("worst") or GRAIN_SEVERITY.get(name, "warning")
    warnings = int(entry.get("warnings") or 0)
    if count:
        return count + warnings, severity
    return warnings, "warning" if warnings else "ok"


def grain_row(minion, grain):
    """One row from a minion's cached ``hostcheck`` grain."""
    counts, errors, worst = {}, {}, "ok"
    for name, entry in grain.items():
        entry = entry if isinstance(entry, dict) else {}
        if entry.get("error"):
            errors[name] = entry["error"]
            counts[name] = 0
            continue
        counts[name], severity = _grain_entry(name, entry)
        worst = min(worst, severity, key=lambda s: RANK.get(s, 1))
    return {"minion": minion, "worst": worst, "counts": counts, "codes": [], "errors": errors}


def sort_rows(rows):
    """Worst first; within a severity, rows with failed checks first, then by id."""
    return sorted(rows, key=lambda r: (RANK.get(r["worst"], 1), not r["errors"], r["minion"]))


def collapse_notes(notes_by_minion):
    """``[{"note", "count", "minions"}]``: each distinct note once, most common first."""
    seen = {}
    for minion, notes in notes_by_minion.items():
        for note in set(notes or ()):
            seen.setdefault(note, []).append(minion)
    out = [{"note": n, "count": len(m), "minions": sorted(m)} for n, m in seen.items()]
    return sorted(out, key=lambda e: (-e["count"], e["note"]))


def summary(rows, no_return, failed):
    """Counts per worst severity, plus the minions that did not answer or failed."""
    out = {sev: 0 for sev in RANK}
    for row in rows:
        out[row["worst"]] = out.get(row["worst"], 0) + 1
    out["with_errors"] = sum(1 for r in rows if r["errors"])
    out["no_return"] = len(no_return)
    out["failed"] = len(failed)
    out["minions"] = len(rows) + len(no_return) + len(failed)
    return out


# --------------------------------------------------------------------------
# the text table (pure)


def _columns(rows):
    names = []
    for row in rows:
        names.extend(n for n in row["counts"] if n not in names)
    return names


def _cell(row, name):
    if name in row["errors"]:
        return "ERR"
    return str(row["counts"].get(name, "-"))


def _table_lines(rows):
    names = _columns(rows)
    header = ["MINION", "WORST"] + [n.upper() for n in names] + ["CODES"]
    body = [[r["minion"], r["worst"]] + [_cell(r, n) for n in names] + [" ".join(r["codes"]) or "-"]
            for r in rows]
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header) - 1)]
    return ["  ".join(c.ljust(w) for c, w in zip(line, widths)) + "  " + line[-1]
            for line in [header] + body]


def _note_line(entry, total):
    who = "all {}".format(total) if entry["count"] == total else "{} of {}".format(entry["count"], total)
    if entry["count"] != total and entry["count"] <= 3:
        who += " ({})".format(", ".join(entry["minions"]))
    return "  [{}] {}".format(who, entry["note"])


def text_table(result):
    """A text table of a :func:`fleet` result, for people."""
    s = result["summary"]
    lines = ["{} minion(s): {} critical, {} warning, {} info, {} ok, {} no return, {} failed{}".format(
        s["minions"], s["critical"], s["warning"], s["info"], s["ok"], s["no_return"], s["failed"],
        " (from the master's grain cache)" if result.get("cached") else "")]
    if result["rows"]:
        lines += [""] + _table_lines(result["rows"])
    for row in result["rows"]:
        lines += ["{}: {} failed: {}".format(row["minion"], name, why) for name, why in sorted(row["errors"].items())]
    if result["no_return"]:
        lines += ["", "{} (never counted as healthy): {}".format(
            "no data in the cache" if result.get("cached") else "no return", ", ".join(result["no_return"]))]
    lines += ["failed: {}: {}".format(m, why) for m, why in sorted(result["failed"].items())]
    if result["notes"]:
        answered = len(result["rows"])
        lines += ["", "notes:"] + [_note_line(e, answered) for e in result["notes"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# collecting


def _targets(tgt, tgt_type):
    found = salt.utils.minions.CkMinions(__opts__).check_minions(tgt, tgt_type)  # pylint: disable=undefined-variable
    minions = found.get("minions", []) if isinstance(found, dict) else found
    return sorted(set(minions))


def _chunks(items, size):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _run(client, tgt, tgt_type, fun, kwarg, timeout):
    """``({minion: return}, {minions expected that did not return})`` of one job.

    The target is published as given, so minions below a syndic answer too;
    the expected minions are the master's, updated by the syndics' lists.
    """
    answers, missing = {}, set()
    for ret in client.cmd_iter(tgt, fun, kwarg=kwarg, tgt_type=tgt_type, timeout=timeout, expect_minions=True):
        for minion, data in (ret or {}).items():
            if not isinstance(data, dict) or data.get("failed"):
                missing.add(minion)
            elif "ret" in data:
                answers[minion] = data["ret"]
    return answers, missing - set(answers)


def _answers(tgt, tgt_type, batch, timeout, kwarg):
    """``({minion: report}, {minions that did not answer})``. With ``batch``,
    as ``salt -b``: a ``test.ping`` finds who is there, then the report runs
    on them ``batch`` at a time."""
    client = salt.client.get_local_client(mopts=__opts__)  # pylint: disable=undefined-variable
    try:
        if batch in (None, ""):
            return _run(client, tgt, tgt_type, "hostcheck.report", kwarg, timeout)
        alive, missing = _run(client, tgt, tgt_type, "test.ping", None, timeout)
        answers, size = {}, _batch_size(batch, len(alive))
        for chunk in _chunks(sorted(alive), size):
            got, lost = _run(client, chunk, "list", "hostcheck.report", kwarg, timeout)
            answers.update(got)
            missing |= lost
        return answers, missing - set(answers)
    finally:
        client.destroy()


def _is_report(value):
    return isinstance(value, dict) and isinstance(value.get("checks"), dict) and "findings" in value


def build(minions, answers):
    """The fleet result from the targeted ``minions`` (those that answered
    and those that did not) and their ``{minion: report}`` answers."""
    rows, failed, notes = [], {}, {}
    for minion, value in answers.items():
        if _is_report(value):
            rows.append(report_row(minion, value))
            notes[minion] = value.get("notes") or []
        else:
            failed[minion] = str(value)[:500]
    no_return = sorted(set(minions) - set(answers))
    return {"rows": sort_rows(rows), "no_return": no_return, "failed": failed,
            "notes": collapse_notes(notes), "summary": summary(rows, no_return, failed)}


def build_cached(minions, grains):
    """The fleet result from the master's cached grains (``{minion: grains}``)."""
    rows, failed = [], {}
    for minion, data in grains.items():
        grain = (data or {}).get("hostcheck")
        if isinstance(grain, dict):
            rows.append(grain_row(minion, grain))
        else:
            failed[minion] = "no hostcheck grain in the cache (modules not synced?)"
    no_data = sorted(set(minions) - set(grains))
    return {"rows": sort_rows(rows), "no_return": no_data, "failed": failed, "notes": [],
            "summary": summary(rows, no_data, failed), "cached": True}


def _present(result, want_table):
    if not want_table:
        return result
    return {"table": text_table(result)}


def fleet(tgt="*", tgt_type="glob", batch=None, timeout=None, cached=False, severity=None, checks=None,
          table=None):
    """
    Run ``hostcheck.report`` across the fleet and return one row per
    minion, worst first.

    tgt, tgt_type
        The target, as for the ``salt`` command (``tgt_type``: glob, list,
        grain, pillar, compound, nodegroup, ...). Default: every minion.
    batch
        Minions asked at once: a number, or a percentage of the target
        (``10%``). As with ``salt -b``, a ``test.ping`` first finds the
        minions that are there (the others are ``no_return``), then the
        report runs on them a batch at a time. Default: all at once.
    timeout
        Seconds to wait for each batch's answers (default: the master's
        ``timeout``). A minion that has not answered by then is listed under
        ``no_return``, never as healthy.
    cached
        ``True``: build the table from the ``hostcheck`` grain in the cache
        of the master it runs on (``cache.grains``) without contacting any
        minion, as fresh as each minion's last grains refresh. The grain
        summarises each check, so the rows carry counts and the worst
        severity those counts stand for, no finding codes; targeted minions
        with no cached grains are listed under ``no_return``.
    severity
        The least severe finding counted: ``critical``, ``warning`` or
        ``info`` (default: all).
    checks
        Checks to run (a list or comma-separated string; default: all).
    table
        ``True``: return only a text table (under ``table``), for people;
        ``False``: the plain data. Default: the table with
        Salt's default outputter, the data with ``--out=json``/``yaml``.

    The data (``table=False`` or ``--out=json``): ``rows`` (worst first, each
    ``{minion, worst, counts: {check: N}, codes: ["check/code", ...],
    errors: {check: why}}``), ``no_return`` (ids), ``failed`` (``{id:
    what it answered}``), ``notes`` (``[{note, count, minions}]``, each
    distinct note once, most common first) and ``summary`` (minions per
    worst severity, ``no_return``, ``failed``, ``with_errors``,
    ``minions``).

    CLI Example:

    .. code-block:: bash

        salt-run hostcheck.fleet
        salt-run hostcheck.fleet tgt='site:acme' tgt_type=grain batch=10% timeout=30
        salt-run hostcheck.fleet tgt=client-sites tgt_type=nodegroup severity=warning
        salt-run hostcheck.fleet cached=True
        salt-run hostcheck.fleet --out=json
    """
    _validate(tgt_type, severity)
    kwarg = {k: v for k, v in (("severity", severity), ("checks", checks)) if v is not None}
    if cached:
        grains = __salt__["cache.grains"](tgt=tgt, tgt_type=tgt_type)  # pylint: disable=undefined-variable
        minions = _targets(tgt, tgt_type)
        result = build_cached(sorted(set(minions) | set(grains or {})), grains or {})
        return _present(result, _want_table(table))
    if batch not in (None, ""):
        _batch_size(batch, 100)  # a bad batch fails before anything is published
    answers, missing = _answers(tgt, tgt_type, batch, _timeout(timeout), kwarg)
    return _present(build(set(answers) | missing, answers), _want_table(table))
