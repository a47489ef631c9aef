"""What program a process runs, from its executable and its arguments together.

The one home of program identification. A process name alone never decides
anything: ``comm`` is the first 15 bytes of whatever the process called
itself, and ``argv[0]`` is whatever its parent chose (``exec -a salt-minion
sleep 5000`` has argv0 ``salt-minion``). So the executable (``/proc/PID/exe``)
says which binary runs; only when that binary is an interpreter do the
arguments name the program, and then only the first argument after the
interpreter's own options (each family's options that take a value are
skipped with their value: ``python3 -E -W ignore X``, ``ruby -r
bundler/setup X``, ``perl -w X``, ``node --require m X``, ``java -jar X``).

A shell running a script (``/bin/sh /etc/init.d/cron reload``) is
identified as that script with ``family == "shell"``: :func:`is_daemon`
never takes it for the daemon of the same name.

Runtime dependencies: the Python standard library only.
"""

import os

DELETED = " (deleted)"

#: Interpreter families. ``arg``: short options whose value is the next
#: argument when nothing follows the letter; ``attached``: short options
#: whose value is the rest of the same argument (``-MFoo``);
#: ``stop``: options that end the options and say what comes next
#: (``code``: no script; ``module``/``script``/``jar``: the value names the
#: program); ``long_arg``: long options taking the next argument.
FAMILIES = {
    "python": {"arg": "WXQ", "attached": "", "stop": {"m": "module", "c": "code"},
               "long_arg": ("--check-hash-based-pycs",)},
    "perl": {"arg": "I", "attached": "MmxlCdDFi0", "stop": {"e": "code", "E": "code"}, "long_arg": ()},
    "ruby": {"arg": "rIEC", "attached": "FKTx0", "stop": {"e": "code"}, "long_arg": ("--encoding",)},
    "node": {"arg": "r", "attached": "", "stop": {"e": "code", "p": "code"},
             "long_arg": ("--require", "--loader", "--experimental-loader", "--import", "--input-type",
                          "--title", "--conditions", "--env-file"),
             "long_stop": {"--eval": "code", "--print": "code"}},
    "php": {"arg": "cdz", "attached": "", "stop": {"r": "code", "f": "script", "S": "code", "a": "code"},
            "long_arg": ()},
    "shell": {"arg": "oO", "attached": "", "stop": {"c": "code"}, "long_arg": ("--rcfile", "--init-file")},
}

_SHELLS = ("sh", "bash", "dash", "zsh", "ksh", "mksh", "ash")
#: java options (single dash, several letters) that take the next argument
_JAVA_ARG = ("-cp", "-classpath", "--class-path", "-p", "--module-path", "--upgrade-module-path",
             "--add-modules", "--add-opens", "--add-exports", "--add-reads", "--limit-modules",
             "--patch-module")


class Program:
    """What runs in a process.

    ``name``: the program (the binary, or the script/module/jar an
    interpreter runs); ``exe``: the executable without `` (deleted)``
    (``None`` when unreadable); ``family``: the interpreter family, or
    ``None`` for a native binary; ``script``: the script path an interpreter
    runs, as given; ``args``: the arguments after the program;
    ``trusted``: the executable was read (not guessed from ``argv[0]``).
    """

    __slots__ = ("name", "exe", "family", "script", "args", "trusted")

    def __init__(self, name, exe=None, family=None, script=None, args=(), trusted=True):
        self.name = name
        self.exe = exe
        self.family = family
        self.script = script
        self.args = list(args)
        self.trusted = trusted

    def as_dict(self):
        return {"name": self.name, "exe": self.exe, "family": self.family, "script": self.script}

    def __repr__(self):
        return "<Program {} exe={} family={}>".format(self.name, self.exe, self.family)


def family_of(base):
    """Interpreter family of an executable's base name (``python3.10`` ->
    ``python``), ``"java"``, or ``None`` for anything else."""
    stem = base.rstrip("0123456789.-")
    if stem in ("python", "pypy"):
        return "python"
    if stem in ("perl", "ruby", "php"):
        return stem
    if stem in ("node", "nodejs"):
        return "node"
    if stem == "java":
        return "java"
    if stem in _SHELLS:
        return "shell"
    return None


def _short_cluster(arg, spec):
    """``(consumes_next, stop_kind, value)`` for one ``-abc`` argument."""
    letters = arg[1:]
    for idx, letter in enumerate(letters):
        rest = letters[idx + 1:]
        if letter in spec["stop"]:
            return (not rest), spec["stop"][letter], rest or None
        if letter in spec["attached"]:
            return False, None, None
        if letter in spec["arg"]:
            return (not rest), None, None
    return False, None, None


def _scan(argv, spec):
    """``(kind, value, index_after)`` for an interpreter's arguments:
    ``kind`` is ``script``/``module``/``code``/``jar`` or ``None``."""
    idx = 1
    n = len(argv)
    while idx < n:
        arg = argv[idx]
        if arg == "--":
            idx += 1
            break
        if arg == "-" or not arg.startswith("-"):
            break
        if arg.startswith("--"):
            opt = arg.split("=", 1)[0]
            stop = spec.get("long_stop", {}).get(opt)
            if stop:
                return stop, None, n
            idx += 2 if (opt in spec["long_arg"] and "=" not in arg) else 1
            continue
        consumes, stop, value = _short_cluster(arg, spec)
        if stop:
            if value is None and idx + 1 < n:
                value = argv[idx + 1]
                idx += 1
            return stop, value, idx + 1
        idx += 2 if consumes else 1
    if idx < n and argv[idx] != "-":
        return "script", argv[idx], idx + 1
    return None, None, n


def _scan_java(argv):
    idx = 1
    n = len(argv)
    while idx < n:
        arg = argv[idx]
        if arg == "-jar" and idx + 1 < n:
            return "jar", argv[idx + 1], idx + 2
        if arg in ("-m", "--module") and idx + 1 < n:
            return "module", argv[idx + 1], idx + 2
        if arg.startswith("--module="):
            return "module", arg.split("=", 1)[1], idx + 1
        if arg in _JAVA_ARG:
            idx += 2
            continue
        if arg.startswith("-"):
            idx += 1
            continue
        return "class", arg, idx + 1
    return None, None, n


def identify(exe, argv):
    """The :class:`Program` of a process with executable link ``exe`` (as
    ``/proc/PID/exe`` reads, maybe ending in `` (deleted)``; ``None`` when
    unreadable) and command line ``argv``. ``None`` for a kernel thread (no
    executable and no arguments)."""
    argv = list(argv or ())
    trusted = bool(exe)
    if exe:
        clean = _clean(exe)
    elif argv:
        # unreadable exe (another user's process, seen by a non-root minion):
        # a guess from argv[0], marked untrusted
        clean = argv[0].split(" ", 1)[0]
    else:
        return None
    base = _basename(clean)
    if base == "busybox" and argv:
        name = os.path.basename(argv[0]).lstrip("-")
        return Program(name, clean if trusted else None, None, None, argv[1:], trusted)
    family = family_of(base)
    if family is None or not argv:
        return Program(base, clean if trusted else None, None, None, argv[1:], trusted)
    if family == "java":
        kind, value, after = _scan_java(argv)
    else:
        kind, value, after = _scan(argv, FAMILIES[family])
    script = None
    if kind in ("script", "jar") and value:
        script = value
        name = os.path.basename(value)
    elif kind in ("module", "class") and value:
        name = value
    else:
        # a snippet (-c/-e) or an interactive interpreter: the name it was
        # called by (sh for dash, python3 for python3.11) when argv[0] names
        # the same interpreter family, else the executable's
        called = os.path.basename(argv[0]).lstrip("-")
        name = called if family_of(called) == family else base
    return Program(name, clean if trusted else None, family, script, argv[after:], trusted)


def _clean(exe):
    return exe[: -len(DELETED)] if exe.endswith(DELETED) else exe


def _basename(path):
    return os.path.basename(path).lstrip("-").rstrip(":")


def native_name(exe):
    """The name :func:`identify` gives a process whose executable link is
    ``exe`` when the executable alone names it (a native binary); ``None``
    when the arguments are needed too (an interpreter, a shell, busybox) or
    ``exe`` is unreadable. A caller looking for some programs can skip the
    command lines of the processes this already rules out."""
    if not exe:
        return None
    base = _basename(_clean(exe))
    return None if not base or base == "busybox" or family_of(base) is not None else base


def needs_args(exe):
    """True when :func:`identify` needs the arguments to name what ``exe``
    runs (an interpreter, a shell, busybox; an unreadable ``exe``); a native
    binary is named by its executable alone, so a caller may skip reading
    its ``cmdline``."""
    return native_name(exe) is None


def is_daemon(program, name):
    """True when ``program`` is the daemon ``name``: the same name from a
    trusted executable, and never a shell script of that name (an init
    script is not the daemon it controls)."""
    return (program is not None and program.trusted and program.name == name
            and program.family != "shell")


def option_values(args, options):
    """Values of ``options`` in ``args`` (``-c X``, ``-cX``, ``--opt X``, ``--opt=X``)."""
    found = {}
    idx = 0
    while idx < len(args):
        arg = args[idx]
        for opt in options:
            if arg == opt:
                if idx + 1 < len(args):
                    found[opt] = args[idx + 1]
                    idx += 1
                break
            if opt.startswith("--") and arg.startswith(opt + "="):
                found[opt] = arg[len(opt) + 1:]
                break
            if not opt.startswith("--") and len(opt) == 2 and arg.startswith(opt) and len(arg) > 2:
                found[opt] = arg[2:]
                break
        idx += 1
    return found
