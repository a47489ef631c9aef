"""The NAT bed's hands on the master: a long-lived Python process in the
master's network namespace that runs Salt's LocalClient and RunnerClient
for the test (both talk to the master over TCP on its interface, which only
exists in that namespace), so each call costs a round trip, not a CLI start.

Protocol: one JSON object a line on stdin, one JSON answer a line on stdout::

    {"op": "cmd", "tgt": "*", "fun": "test.ping", "arg": [], "kwarg": {}, "timeout": 30, "tgt_type": "glob"}
    {"op": "runner", "fun": "hostcheck.fleet", "kwarg": {"timeout": 5}}
    -> {"ok": true, "result": ...} or {"ok": false, "error": "..."}

Run as ``python nat_agent.py MASTER_CONFIG_FILE``; exits on stdin EOF.
"""
import json
import sys
import time
import traceback


def main(conf_file):
    import salt.client  # pylint: disable=import-outside-toplevel
    import salt.config  # pylint: disable=import-outside-toplevel
    import salt.runner  # pylint: disable=import-outside-toplevel

    opts = salt.config.master_config(conf_file)
    opts["quiet"] = True
    client = salt.client.get_local_client(mopts=opts)
    runner = salt.runner.RunnerClient(opts)
    out = sys.stdout
    sys.stdout = sys.stderr  # Salt prints "No minions matched ..." on stdout
    out.write(json.dumps({"ok": True, "result": "ready"}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        t0 = time.monotonic()
        try:
            if req["op"] == "cmd":
                result = client.cmd(req["tgt"], req["fun"], req.get("arg", []), timeout=req.get("timeout", 30),
                                    tgt_type=req.get("tgt_type", "glob"), kwarg=req.get("kwarg") or None)
            elif req["op"] == "runner":
                result = runner.cmd(req["fun"], kwarg=req.get("kwarg") or {}, print_event=False)
            else:
                raise ValueError("unknown op {!r}".format(req["op"]))
            answer = {"ok": True, "result": result}
        except Exception as exc:  # pylint: disable=broad-except
            answer = {"ok": False, "error": "{}: {}".format(type(exc).__name__, exc),
                      "trace": traceback.format_exc()}
        answer["seconds"] = time.monotonic() - t0
        out.write(json.dumps(answer, default=str) + "\n")
        out.flush()
    client.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
