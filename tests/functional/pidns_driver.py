"""PID 1 of a private PID namespace for test_reap_pidns.py (run by unshare).

Builds a small host inside the namespace, runs hostcheck through a real
``salt-call --local`` against it, and prints one JSON document with what it
saw. Everything here dies with the namespace.
"""
import json
import os
import subprocess
import sys
import textwrap
import time

REPO = sys.argv[1]
WORK = sys.argv[2]
SALT_CALL = sys.argv[3]

SUPERVISORD = textwrap.dedent("""\
    import os, subprocess, sys, time
    env = dict(os.environ, SUPERVISOR_ENABLED="1", SUPERVISOR_PROCESS_NAME="worker",
               SUPERVISOR_GROUP_NAME="worker", SUPERVISOR_SERVER_URL="unix:///tmp/sv.sock")
    child = subprocess.Popen([sys.executable, sys.argv[1]], env=env, preexec_fn=os.setpgrp)
    open(sys.argv[2], "w").write(str(child.pid))
    child.wait()
""")
WORKER = textwrap.dedent("""\
    import os, signal, subprocess, sys, time
    # a child that ignores SIGTERM (needs SIGKILL) and one that exits on it
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    subprocess.Popen([sys.executable, "-c", stubborn])
    subprocess.Popen(["sleep", "600"])
    time.sleep(600)
""")


def setup_minion(extra=""):
    """A masterless minion config under WORK serving the repository through
    file_roots (the salt:// route), then ``saltutil.sync_all``; returns what
    was synced. ``extra`` is appended to the minion config."""
    os.makedirs(os.path.join(WORK, "conf"), exist_ok=True)
    write(os.path.join(WORK, "conf", "minion"), textwrap.dedent("""\
        file_client: local
        root_dir: {w}
        cachedir: {w}/cache
        pki_dir: {w}/pki
        sock_dir: {w}/sock
        log_file: {w}/minion.log
        file_roots:
          base: [{w}/file_root]
        """).format(w=WORK) + extra)
    os.makedirs(os.path.join(WORK, "file_root"), exist_ok=True)
    for name in ("_modules", "_states", "_grains", "_utils"):
        os.symlink(os.path.join(REPO, name), os.path.join(WORK, "file_root", name))
    return salt_call("saltutil.sync_all")


SUPERVISOR_DIR = "/mnt/hc"
SUPERVISOR_SOCK = SUPERVISOR_DIR + "/supervisor.sock"
SUPERVISORD_CONF = textwrap.dedent("""\
    [unix_http_server]
    file={sock}
    chmod=0700

    [supervisord]
    nodaemon=true
    logfile={dir}/supervisord.log
    pidfile={dir}/supervisord.pid

    [rpcinterface:supervisor]
    supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

    [supervisorctl]
    serverurl=unix://{sock}

    """).format(sock=SUPERVISOR_SOCK, dir=SUPERVISOR_DIR)


def mount_scratch():
    """A tmpfs on /mnt (this namespace's own mount) with ``/mnt/hc/bin``."""
    subprocess.run(["mount", "-t", "tmpfs", "hc-test", "/mnt"], check=True)
    os.makedirs(SUPERVISOR_DIR + "/bin")


def start_supervisord(programs):
    """A real supervisord (supervisor from the test virtualenv) running
    ``programs`` (``[program:x]`` sections), its socket in /mnt/hc."""
    write(SUPERVISOR_DIR + "/supervisord.conf", SUPERVISORD_CONF + textwrap.dedent(programs))
    return subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "supervisord"),
                             "-c", SUPERVISOR_DIR + "/supervisord.conf"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def supervisor_info(program):
    """``getProcessInfo`` through hostcheck's own client (read-only use)."""
    if os.path.join(REPO, "_utils") not in sys.path:
        sys.path.insert(0, os.path.join(REPO, "_utils"))
    from hostcheck_service import supervisor_proxy  # pylint: disable=import-outside-toplevel
    server, why = supervisor_proxy("unix://" + SUPERVISOR_SOCK, timeout=10)
    assert server is not None, why
    return server.supervisor.getProcessInfo(program)


def wait_running(program, not_pid=None, limit=30):
    """PID of ``program`` once supervisord says RUNNING (and not ``not_pid``)."""
    import xmlrpc.client  # pylint: disable=import-outside-toplevel
    deadline = time.time() + limit
    while True:
        try:
            state = supervisor_info(program)
            if state["statename"] == "RUNNING" and state["pid"] and state["pid"] != not_pid:
                return state["pid"]
        except (OSError, xmlrpc.client.Error, AssertionError):
            pass
        assert time.time() < deadline, "supervisord did not (re)start " + program
        time.sleep(0.2)


def write(path, text):
    with open(path, "w") as fh:
        fh.write(text)
    return path


def salt_call(*args):
    cmd = [SALT_CALL, "--local", "-c", os.path.join(WORK, "conf"), "--out=json", "-l", "quiet"] + list(args)
    out = subprocess.run(cmd, capture_output=True, text=True)
    try:
        return json.loads(out.stdout)["local"]
    except ValueError:
        return {"error": out.stdout + out.stderr}


def alive(pid):
    try:
        with open("/proc/{}/stat".format(pid)) as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def plant_decoys(bindir):
    """Processes that only look like the daemon ``worker``, each adopted by
    init in its own session: argv0 ``worker`` on the sleep binary
    (``exec -a``), and a shell running an init script named ``worker``."""
    initd = write(os.path.join(bindir, "init.d-worker"), "sleep 600\n")
    os.makedirs(os.path.join(bindir, "init.d"), exist_ok=True)
    os.rename(initd, os.path.join(bindir, "init.d", "worker"))
    out = subprocess.run(
        ["sh", "-c", "setsid bash -c 'exec -a worker sleep 600' >/dev/null 2>&1 </dev/null & echo $!; "
                     "setsid sh {} status >/dev/null 2>&1 </dev/null & echo $!".format(
                         os.path.join(bindir, "init.d", "worker"))],
        capture_output=True, text=True)
    argv0, script = (int(x) for x in out.stdout.split())
    return {"exec_a": argv0, "init_script": script}


def main():
    assert os.getpid() == 1, "must be PID 1 of its namespace"
    synced = setup_minion(textwrap.dedent("""\
        hostcheck:
          orphans:
            daemons:
              worker: {}
        """))
    bindir = os.path.join(WORK, "bin")
    os.makedirs(bindir, exist_ok=True)
    supd = write(os.path.join(bindir, "supervisord"), SUPERVISORD)
    worker = write(os.path.join(bindir, "worker"), WORKER)
    twin_file = os.path.join(WORK, "twin.pid")

    # the managed copy: a live "supervisord" with its program below it
    supervisord = subprocess.Popen([sys.executable, supd, worker, twin_file], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # the leaked copy: started under supervisor provenance, then its parent
    # vanished, so init (this process) adopted it
    env = dict(os.environ, SUPERVISOR_ENABLED="1", SUPERVISOR_PROCESS_NAME="worker",
               SUPERVISOR_GROUP_NAME="worker", SUPERVISOR_SERVER_URL="unix:///tmp/sv.sock")
    launcher = ("import os, subprocess, sys; p = subprocess.Popen([sys.executable, sys.argv[1]], "
                "preexec_fn=os.setpgrp, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, "
                "stderr=subprocess.DEVNULL); print(p.pid, flush=True); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", launcher, worker], env=env, capture_output=True, text=True)
    leaked_root = int(out.stdout.strip())
    # a classic double-forked daemon adopted by init: not a leak
    out = subprocess.run(["sh", "-c", "setsid sleep 600 >/dev/null 2>&1 < /dev/null & echo $!"],
                         capture_output=True, text=True)
    daemon = int(out.stdout.strip())
    decoys = plant_decoys(bindir)
    deadline = time.time() + 10
    while not os.path.exists(twin_file) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # let the workers spawn their children
    twin = int(open(twin_file).read())

    report = {"leaked_root": leaked_root, "twin": twin, "supervisord": supervisord.pid, "daemon": daemon,
              "decoys": decoys, "synced": synced, "version": salt_call("test.version")}
    report["diagnosis"] = salt_call("hostcheck.orphans")
    report["grain"] = salt_call("grains.get", "hostcheck")
    report["test_run"] = salt_call("state.single", "hostcheck.orphans_reaped", "name=leaks", "test=True")
    report["alive_after_test"] = alive(leaked_root)
    report["apply"] = salt_call("state.single", "hostcheck.orphans_reaped", "name=leaks", "timeout=2")
    report["leaked_alive_after_apply"] = [p for p in report["diagnosis"]["findings"][0]["pids"] if alive(p)] \
        if report["diagnosis"].get("findings") else None
    report["survivors"] = {k: alive(report[k]) for k in ("twin", "supervisord", "daemon")}
    report["decoys_alive"] = {k: alive(v) for k, v in decoys.items()}
    report["second_apply"] = salt_call("state.single", "hostcheck.orphans_reaped", "name=leaks", "timeout=2")
    report["bad_args"] = salt_call("state.single", "hostcheck.orphans_reaped", "name=leaks", "exclude=7")
    print("REPORT " + json.dumps(report))


if __name__ == "__main__":
    main()
