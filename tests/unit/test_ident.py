"""hostcheck_ident: what a process runs, from executable and arguments together."""
import pytest

import hostcheck_ident as hi


@pytest.mark.parametrize("exe,argv,name,script,family", [
    ("/usr/bin/python3.11", ["/usr/bin/python3", "/usr/bin/salt-minion", "-c", "/etc/salt"],
     "salt-minion", "/usr/bin/salt-minion", "python"),
    ("/opt/saltstack/salt/bin/python3.10", ["/opt/saltstack/salt/bin/python3.10", "-E", "-s",
                                            "/opt/saltstack/salt/salt-minion"],
     "salt-minion", "/opt/saltstack/salt/salt-minion", "python"),
    ("/usr/bin/python3", ["python3", "-E", "/usr/bin/salt-minion"], "salt-minion", "/usr/bin/salt-minion", "python"),
    ("/usr/bin/python3", ["python3", "-W", "ignore", "-X", "dev", "/srv/app.py"], "app.py", "/srv/app.py", "python"),
    ("/usr/bin/python3", ["python3", "-Wignore", "-u", "/srv/app.py"], "app.py", "/srv/app.py", "python"),
    ("/usr/bin/python3", ["python3", "-m", "http.server", "8000"], "http.server", None, "python"),
    ("/usr/bin/python3", ["python3", "-c", "import x"], "python3", None, "python"),
    ("/usr/bin/ruby3.1", ["ruby", "-r", "bundler/setup", "/srv/app/daemon.rb"], "daemon.rb",
     "/srv/app/daemon.rb", "ruby"),
    ("/usr/bin/ruby3.1", ["ruby", "-rbundler/setup", "/srv/app/daemon.rb"], "daemon.rb", "/srv/app/daemon.rb", "ruby"),
    ("/usr/bin/perl", ["perl", "-w", "/usr/sbin/ddclient"], "ddclient", "/usr/sbin/ddclient", "perl"),
    ("/usr/bin/perl", ["perl", "-MFoo", "-I", "/lib", "/srv/x.pl"], "x.pl", "/srv/x.pl", "perl"),
    ("/usr/bin/perl", ["perl", "-e", "print 1"], "perl", None, "perl"),
    ("/usr/bin/node", ["node", "--max-old-space-size=512", "--require", "dotenv/config", "/srv/app.js"],
     "app.js", "/srv/app.js", "node"),
    ("/usr/bin/node", ["node", "--eval", "x"], "node", None, "node"),
    ("/usr/lib/jvm/bin/java", ["java", "-Xmx1g", "-cp", "a:b", "-jar", "/opt/app.jar", "run"],
     "app.jar", "/opt/app.jar", "java"),
    ("/usr/lib/jvm/bin/java", ["java", "-cp", "a:b", "org.x.Main"], "org.x.Main", None, "java"),
    ("/usr/bin/dash", ["/bin/sh", "/etc/init.d/salt-minion", "status"], "salt-minion",
     "/etc/init.d/salt-minion", "shell"),
    ("/usr/bin/bash", ["/bin/sh", "-c", "exec salt-minion"], "sh", None, "shell"),
    ("/usr/bin/dash", ["salt-minion", "-c", "x"], "dash", None, "shell"),  # argv0 no interpreter: exe
    ("/usr/bin/python3.11", ["python3", "-c", "x"], "python3", None, "python"),
    ("/usr/bin/sleep", ["salt-minion", "5000"], "sleep", None, None),
    ("/usr/sbin/cron (deleted)", ["/usr/sbin/cron", "-f"], "cron", None, None),
    ("/bin/busybox", ["crond", "-f"], "crond", None, None),
])
def test_identify(exe, argv, name, script, family):
    prog = hi.identify(exe, argv)
    assert (prog.name, prog.script, prog.family) == (name, script, family)
    assert prog.trusted


def test_args_after_the_program():
    assert hi.identify("/usr/bin/python3", ["python3", "-E", "/usr/bin/salt-minion", "-c", "/x"]).args == ["-c", "/x"]
    assert hi.identify("/usr/sbin/cron", ["/usr/sbin/cron", "-f"]).args == ["-f"]


def test_exe_deleted_suffix_is_dropped():
    assert hi.identify("/usr/sbin/cron (deleted)", ["cron"]).exe == "/usr/sbin/cron"


def test_unreadable_exe_is_a_guess_from_argv0():
    prog = hi.identify(None, ["sshd:", "root@pts/0"])
    assert prog.name == "sshd" and not prog.trusted and prog.exe is None
    assert not hi.is_daemon(prog, "sshd")  # a guess never identifies a daemon
    assert hi.identify(None, []) is None  # kernel thread


def test_is_daemon_needs_the_binary_not_a_script_of_that_name():
    assert hi.is_daemon(hi.identify("/usr/sbin/cron", ["/usr/sbin/cron", "-f"]), "cron")
    assert not hi.is_daemon(hi.identify("/usr/bin/dash", ["sh", "/etc/init.d/cron", "reload"]), "cron")
    assert not hi.is_daemon(hi.identify("/usr/bin/sleep", ["cron"]), "cron")
    assert hi.is_daemon(hi.identify("/usr/bin/python3", ["python3", "/usr/bin/supervisord"]), "supervisord")


@pytest.mark.parametrize("args,opts,found", [
    (["-c", "/etc/salt"], ["-c"], {"-c": "/etc/salt"}),
    (["-c/etc/salt"], ["-c"], {"-c": "/etc/salt"}),
    (["--config-dir=/x"], ["--config-dir"], {"--config-dir": "/x"}),
    (["--config-dir", "/x"], ["--config-dir"], {"--config-dir": "/x"}),
    (["-d"], ["-c"], {}),
])
def test_option_values(args, opts, found):
    assert hi.option_values(args, opts) == found


def test_needs_args_only_for_interpreters_shells_and_busybox():
    assert hi.needs_args("/usr/bin/python3.11") and hi.needs_args("/bin/dash") and hi.needs_args("/bin/busybox")
    assert hi.needs_args("/usr/bin/java (deleted)") and hi.needs_args(None)
    assert not hi.needs_args("/usr/sbin/cron") and not hi.needs_args("/usr/sbin/cron (deleted)")


def test_native_name_is_the_name_identify_gives_or_none():
    for exe in ("/usr/sbin/cron", "/usr/sbin/cron (deleted)", "/usr/lib/systemd/systemd-timedated"):
        assert hi.native_name(exe) == hi.identify(exe, ["anything", "-x"]).name
    assert hi.native_name("/usr/sbin/cron (deleted)") == "cron"
    for exe in ("/usr/bin/python3.11", "/bin/dash", "/bin/busybox", "/usr/bin/java (deleted)", None, ""):
        assert hi.native_name(exe) is None, exe
