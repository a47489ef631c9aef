"""hostcheck.logind and logind_clean against a real systemd 252 (nspawn container).

The incident of issue 9, rebuilt: ``pam_systemd`` is added to cron's PAM
stack (to ``common-session-noninteractive``, which Debian's
``/etc/pam.d/cron`` includes, as RHEL 7's ``crond`` includes
``password-auth``); cron jobs that leave a background process behind become
closing sessions; a few hundred ``su -l nobody -c 'setsid sleep 600 &'``
leave a few hundred closing sessions with leftovers; a few hundred fake
session files whose scope does not exist are stale.

* ``hostcheck.logind`` reports each kind with its count, and the grain agrees;
* ``logind_clean`` with ``test=True`` changes nothing and announces the keys
  of the real run; the formula ``hostcheck/logind.sls`` does nothing
  without pillar and plans the same with ``hostcheck:logind:clean``;
* the real run with ``closing: ['su*']`` and ``cron_pam: remove``: the stale
  files are gone, the ``su`` leftovers are gone while cron's are untouched,
  cron's stack has no pam_systemd (the shared file is untouched), logind
  was restarted and ``loginctl`` still answers;
* a second run changes nothing.

Set ``HOSTCHECK_SCENARIO_OUT=DIR`` to keep the JSON of every salt-call (the
README's example output comes from there).
"""
import json
import os
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow]

N_SU = 200
N_STALE = 300
N_ORPHAN = 10
CRON_JOBS = 3
NONINTERACTIVE = "/etc/pam.d/common-session-noninteractive"
CRON_PAM = "/etc/pam.d/cron"
PILLAR = """\
hostcheck:
  logind:
    clean:
      closing: ["su*"]
      cron_pam: remove
"""

SU_LOOP = ("i=0; while [ $i -lt {n} ]; do "
           "su -l nobody -s /bin/sh -c 'setsid sleep 600 </dev/null >/dev/null 2>&1 &' 2>/dev/null; "
           "i=$((i+1)); done")

# stale files as systemd 219 wrote them for crond, an hour old; LEADER 1 (PID
# 1 started after REALTIME: a reused PID) for every tenth, else a PID that
# cannot exist. 70000+ belong to nobody, a user logind tracks (the su and
# cron sessions); 80000+ to root, which logind does not track here: logind
# 252 skips those at start ("User of session ... not known") and never
# removes them, so they are reported for a person, not restarted for.
STALE_LOOP = r"""
now=$(date +%s); rt=$(( (now - 3600) * 1000000 )); i=0
while [ $i -lt {n} ]; do
  id=$(({first} + i)); leader=$((5000000 + i)); [ $((i % 10)) -eq 0 ] && leader=1
  printf '# This is private data. Do not parse.\nUID={uid}\nUSER={user}\nACTIVE=1\nSTATE=closing\nREMOTE=0\nTYPE=unspecified\nCLASS=user\nSCOPE=session-%s.scope\nFIFO=/run/systemd/sessions/%s.ref\nSERVICE=crond\nLEADER=%s\nAUDIT=%s\nREALTIME=%s\nMONOTONIC=12345678\n' \
    $id $id $leader $id $rt > /run/systemd/sessions/$id
  i=$((i+1))
done
"""


def _pids(c, pattern):
    out = c.run(["pgrep", "-f", pattern], check=False).stdout
    return sorted(int(p) for p in out.split())


def _wait(pred, timeout=10, step=0.2):
    end = time.monotonic() + timeout
    while not pred() and time.monotonic() < end:
        time.sleep(step)
    return pred()


def _state(ret):
    (state,) = ret.values()
    return state


def _keep(name, data):
    out = os.environ.get("HOSTCHECK_SCENARIO_OUT")
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, name + ".json"), "w") as fp:
            json.dump(data, fp, indent=2, sort_keys=True)


def _by_code(diag):
    out = {}
    for f in diag["findings"]:
        out.setdefault(f["code"], []).append(f)
    return out


def _files(c, first_digit):
    out = c.run("ls /run/systemd/sessions | grep -c '^{}[0-9][0-9][0-9][0-9]$' || true".format(first_digit))
    return int(out.stdout.strip() or 0)


def _clean(c, *extra):
    return _state(c.salt_call("state.single", "hostcheck.logind_clean", "name=logind",
                              'closing=["su*"]', "cron_pam=remove", *extra, timeout=300))


def build_the_pile(c, n_su=N_SU, n_stale=N_STALE, n_orphan=N_ORPHAN, jobs=CRON_JOBS):
    """pam_systemd in cron's stack, cron jobs leaving processes, su leftovers,
    stale files (also used to capture the README's output)."""
    c.run(["sh", "-c", "printf 'session\\toptional\\tpam_systemd.so\\n' >> " + NONINTERACTIVE])
    lines = "".join("* * * * * nobody setsid sleep {} </dev/null >/dev/null 2>&1 &\n".format(7000 + i)
                    for i in range(jobs))
    c.write_file("/etc/cron.d/hc-leaky-jobs", lines)
    c.run(["sh", "-c", SU_LOOP.format(n=n_su)], timeout=180)
    c.run(["sh", "-c", STALE_LOOP.format(n=n_stale, first=70000, uid=65534, user="nobody")])
    c.run(["sh", "-c", STALE_LOOP.format(n=n_orphan, first=80000, uid=0, user="root")])
    assert _wait(lambda: len(_pids(c, "^sleep 600$")) == n_su, timeout=20)
    assert _wait(lambda: len(_pids(c, "^sleep 700[0-9]$")) >= jobs, timeout=75), "cron ran no job"
    time.sleep(1)  # the cron sessions' leaders exit right after the jobs start


def test_logind_pile_reported_and_cleaned(systemd_container):
    c = systemd_container
    c.sync()
    build_the_pile(c)
    su_pids = _pids(c, "^sleep 600$")
    cron_pids = _pids(c, "^sleep 700[0-9]$")
    shared_before = c.read_file(NONINTERACTIVE)
    cron_before = c.read_file(CRON_PAM)
    logind_before = c.main_pid("systemd-logind.service")

    diag = c.salt_call("hostcheck.logind")
    _keep("logind", diag)
    found = _by_code(diag)
    (su,) = [f for f in found["closing-leftovers"] if f["service"] == "su-l"]
    (cron,) = [f for f in found["closing-leftovers"] if f["service"] == "cron"]
    assert (su["sessions"], sorted(su["pids"]), su["programs"]) == (N_SU, su_pids, {"sleep": N_SU})
    assert cron["sessions"] >= CRON_JOBS and set(cron["pids"]) == set(cron_pids)
    (stale,) = found["stale-session-files"]
    assert (stale["stale"], stale["orphaned"]) == (N_STALE + N_ORPHAN, N_ORPHAN)
    reused = N_STALE // 10 + N_ORPHAN // 10
    assert stale["reasons"] == {"leader gone": N_STALE + N_ORPHAN - reused, "leader PID reused": reused}
    (pam,) = found["cron-pam-systemd"]
    assert pam["service"] == "cron" and pam["chains"][0][-1].startswith(NONINTERACTIVE)
    assert diag["sessions"] >= N_SU + N_STALE + N_ORPHAN + cron["sessions"]
    assert (diag["closing"], diag["stale"]) == (N_SU + cron["sessions"], N_STALE + N_ORPHAN)
    assert not [f for f in diag["findings"] if f["code"].startswith("deleted-")]
    grain = c.salt_call("grains.get", "hostcheck:logind")
    _keep("grain", grain)
    assert grain["sessions"] == diag["sessions"] and grain["rss_mb"] > 0
    assert grain["closing"] is None and grain["stale"] == N_STALE + N_ORPHAN  # quick: counted, not parsed

    dry = _clean(c, "test=True")
    _keep("state-test", dry)
    assert dry["result"] is None, dry
    assert sorted(dry["changes"]) == ["pam", "reaped", "restarted", "stale_files"]
    assert len(dry["changes"]["reaped"]) == N_SU and dry["changes"]["stale_files"] == {"old": N_STALE, "new": 0}
    assert _pids(c, "^sleep 600$") == su_pids and (_files(c, 7), _files(c, 8)) == (N_STALE, N_ORPHAN)
    assert c.read_file(CRON_PAM) == cron_before
    assert c.main_pid("systemd-logind.service") == logind_before

    # the formula: nothing without pillar, the same plan with hostcheck:logind:clean
    assert c.salt_call("state.show_sls", "hostcheck.logind") == {}
    c.write_file("/srv/pillar/top.sls", "base:\n  '*':\n    - hostcheck\n")
    c.write_file("/srv/pillar/hostcheck.sls", PILLAR)
    formula = _state(c.salt_call("state.apply", "hostcheck.logind", "test=True", timeout=300))
    assert formula["result"] is None and sorted(formula["changes"]) == sorted(dry["changes"]), formula
    assert _pids(c, "^sleep 600$") == su_pids and c.read_file(CRON_PAM) == cron_before

    real = _clean(c)
    _keep("state", real)
    assert real["result"] is True, real
    assert sorted(real["changes"]) == sorted(dry["changes"])
    assert real["changes"]["stale_files"] == {"old": N_STALE, "new": 0}
    assert sorted(p for it in real["changes"]["reaped"] for p in it["pids"]) == su_pids
    assert (_files(c, 7), _files(c, 8)) == (0, N_ORPHAN)
    assert "Delete them by hand: rm /run/systemd/sessions/80000" in real["comment"]
    assert _pids(c, "^sleep 600$") == []
    assert set(cron_pids) <= set(_pids(c, "^sleep 700[0-9]$"))  # cron's leftovers: not named, untouched
    assert c.read_file(NONINTERACTIVE) == shared_before  # the shared file is untouched
    active = [line for line in c.read_file(CRON_PAM).splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in active if "pam_systemd" in line], active
    assert "pam_unix.so" in "\n".join(active)
    assert c.main_pid("systemd-logind.service") not in (0, logind_before)
    listed = c.run(["loginctl", "list-sessions", "--no-legend", "--no-pager"]).stdout
    assert len(listed.splitlines()) >= cron["sessions"]
    c.run(["su", "-l", "nobody", "-s", "/bin/sh", "-c", "true"])  # PAM and logind still work

    after = c.salt_call("hostcheck.logind")
    _keep("logind-after", after)
    codes = {f["code"] for f in after["findings"]}
    assert codes <= {"closing-leftovers", "stale-session-files"} and after["stale"] == N_ORPHAN, after
    again = _clean(c)
    _keep("state-again", again)
    assert again["result"] is True and again["changes"] == {}, again
    assert "Left alone" in again["comment"] and "of cron" in again["comment"]
