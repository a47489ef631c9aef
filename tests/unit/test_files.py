"""hostcheck_files: reading configuration files safely, atomic replacement,
rollback snapshots; on files in a temporary directory."""
import os
import stat
import threading

import pytest

import hostcheck_files as hf


def _leftovers(directory):
    return sorted(n for n in os.listdir(directory) if n.startswith(".hostcheck-"))


def test_read_regular_missing_is_none(tmp_path):
    assert hf.read_regular(str(tmp_path / "nope")) is None


def test_read_regular_reads_bytes_mode_owner_and_stamp(tmp_path):
    path = tmp_path / "timezone"
    path.write_bytes(b"Europe/Berlin\n")
    os.chmod(path, 0o640)
    text = hf.read_regular(str(path))
    st = os.stat(path)
    assert text.data == b"Europe/Berlin\n" and text.text() == "Europe/Berlin\n"
    assert (text.mode, text.uid, text.gid, text.link) == (0o640, st.st_uid, st.st_gid, None)
    assert text.stamp == max(st.st_mtime, st.st_ctime)


def test_read_regular_fifo_is_refused_without_blocking(tmp_path):
    path = tmp_path / "timezone"
    os.mkfifo(path)
    result = {}

    def read():
        try:
            hf.read_regular(str(path))
        except hf.FileError as exc:
            result["error"] = exc

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), "reading a FIFO blocked"
    assert "not a regular file" in str(result["error"])


def test_read_regular_refuses_a_directory(tmp_path):
    with pytest.raises(hf.FileError, match="not a regular file"):
        hf.read_regular(str(tmp_path))


def test_read_regular_refuses_a_file_over_the_limit(tmp_path):
    path = tmp_path / "big"
    path.write_bytes(b"x" * 101)
    with pytest.raises(hf.FileError, match="larger than 100 bytes"):
        hf.read_regular(str(path), limit=100)
    assert hf.read_regular(str(path), limit=101).data == b"x" * 101


def test_read_regular_symlink_followed_or_refused(tmp_path):
    (tmp_path / "target").write_bytes(b"UTC\n")
    os.symlink("target", tmp_path / "link")
    text = hf.read_regular(str(tmp_path / "link"))
    assert text.data == b"UTC\n" and text.link == "target"
    with pytest.raises(hf.FileError, match="symlink"):
        hf.read_regular(str(tmp_path / "link"), follow=False)


def test_read_regular_dangling_symlink_is_none(tmp_path):
    os.symlink("gone", tmp_path / "link")
    assert hf.read_regular(str(tmp_path / "link")) is None


def test_owner_mode_of_file_symlink_and_nothing(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"")
    os.chmod(path, 0o600)
    st = os.stat(path)
    assert hf.owner_mode(str(path)) == (st.st_uid, st.st_gid, 0o600)
    os.symlink("f", tmp_path / "l")
    assert hf.owner_mode(str(tmp_path / "l"), 0o644) == (st.st_uid, st.st_gid, 0o644)
    assert hf.owner_mode(str(tmp_path / "none")) == (None, None, 0o644)


def test_atomic_write_replaces_and_keeps_mode(tmp_path):
    path = tmp_path / "limits.conf"
    path.write_bytes(b"old\n")
    os.chmod(path, 0o600)
    inode = os.stat(path).st_ino
    hf.atomic_write(str(path), b"new\n")
    st = os.stat(path)
    assert path.read_bytes() == b"new\n"
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_ino != inode  # a new file renamed over the old one, not rewritten in place
    assert _leftovers(tmp_path) == []


def test_atomic_write_new_file_takes_the_given_mode(tmp_path):
    path = tmp_path / "drop-in.conf"
    hf.atomic_write(str(path), b"[Service]\n", mode=0o644)
    assert path.read_bytes() == b"[Service]\n" and stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_atomic_write_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "timezone"
    path.write_bytes(b"UTC\n")
    with pytest.raises(TypeError):
        hf.atomic_write(str(path), "not bytes")
    assert path.read_bytes() == b"UTC\n"
    assert _leftovers(tmp_path) == []


def test_atomic_write_through_a_symlink_replaces_the_link_not_the_target(tmp_path):
    (tmp_path / "target").write_bytes(b"target\n")
    os.symlink("target", tmp_path / "link")
    hf.atomic_write(str(tmp_path / "link"), b"mine\n")
    assert not os.path.islink(tmp_path / "link")
    assert (tmp_path / "link").read_bytes() == b"mine\n"
    assert (tmp_path / "target").read_bytes() == b"target\n"


def test_atomic_symlink_points_the_path_at_the_target(tmp_path):
    path = tmp_path / "localtime"
    path.write_bytes(b"TZif copy")
    hf.atomic_symlink("/usr/share/zoneinfo/Europe/Berlin", str(path))
    assert os.readlink(path) == "/usr/share/zoneinfo/Europe/Berlin"
    hf.atomic_symlink("/usr/share/zoneinfo/UTC", str(path))
    assert os.readlink(path) == "/usr/share/zoneinfo/UTC"
    assert _leftovers(tmp_path) == []


def test_snapshot_restores_a_file_with_its_mode(tmp_path):
    path = tmp_path / "clock"
    path.write_bytes(b'ZONE="UTC"\n')
    os.chmod(path, 0o640)
    snap = hf.Snapshot(str(path))
    hf.atomic_write(str(path), b'ZONE="Europe/Berlin"\n', mode=0o644)
    snap.restore()
    assert path.read_bytes() == b'ZONE="UTC"\n'
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_snapshot_restores_a_symlink(tmp_path):
    path = tmp_path / "localtime"
    os.symlink("/usr/share/zoneinfo/UTC", path)
    snap = hf.Snapshot(str(path))
    hf.atomic_write(str(path), b"TZif copy")
    snap.restore()
    assert os.readlink(path) == "/usr/share/zoneinfo/UTC"


def test_snapshot_of_nothing_removes_what_was_written(tmp_path):
    path = tmp_path / "new.conf"
    snap = hf.Snapshot(str(path))
    hf.atomic_write(str(path), b"x\n")
    snap.restore()
    assert not os.path.lexists(path)
    snap.restore()  # twice: still nothing, no error
    assert not os.path.lexists(path)


def test_snapshot_refuses_a_fifo(tmp_path):
    path = tmp_path / "timezone"
    os.mkfifo(path)
    with pytest.raises(hf.FileError, match="neither a regular file nor a symlink"):
        hf.Snapshot(str(path))
