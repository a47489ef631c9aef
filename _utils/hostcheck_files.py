"""Reading configuration files without following them into trouble, and
replacing them atomically: the one home of both.

Reading (:func:`read_regular`): non-blocking open (a FIFO planted at
``/etc/timezone`` must not hang the minion's grain loading), regular files
only, bounded size. With ``follow=False`` a symlink is not followed at all.

Writing (:func:`atomic_write`, :func:`atomic_symlink`): a new file in the
same directory, fsynced, renamed over the old one, then the directory
fsynced: a crash leaves the old file or the new one, never a truncated one.
Owner and mode are kept from the path itself (for a symlink, the link's
owner and the default mode; never the target's).

Runtime dependencies: the Python standard library only.
"""

import errno
import os
import stat as stat_mod
import tempfile
import time

#: default size limit of a configuration file read
LIMIT = 256 * 1024


class FileError(OSError):
    """A file hostcheck refuses to read (not a regular file, too large)."""


class Text:
    """A file's content: ``data`` (bytes), ``stamp`` (latest of mtime and
    ctime), ``link`` (the symlink target when the path was a symlink)."""

    __slots__ = ("data", "stamp", "link", "mode", "uid", "gid")

    def __init__(self, data, st, link=None):
        self.data = data
        self.stamp = max(st.st_mtime, st.st_ctime)
        self.link = link
        self.mode = stat_mod.S_IMODE(st.st_mode)
        self.uid = st.st_uid
        self.gid = st.st_gid

    def text(self):
        return self.data.decode("utf-8", "replace")


def read_regular(path, limit=LIMIT, follow=True):
    """The :class:`Text` of ``path``; ``None`` when it does not exist.

    Raises :class:`FileError` for a FIFO, device, socket or directory (never
    opened in a blocking way), for a file larger than ``limit``, and for a
    symlink when ``follow`` is False; ``OSError`` when unreadable.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    link = None
    try:
        lst = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat_mod.S_ISLNK(lst.st_mode):
        if not follow:
            raise FileError(errno.ELOOP, "is a symlink, not a regular file", path)
        link = os.readlink(path)
    try:
        fd = os.open(path, flags if follow else flags | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            raise FileError(errno.EINVAL, "is not a regular file", path)
        if st.st_size > limit:
            raise FileError(errno.EFBIG, "is larger than {} bytes".format(limit), path)
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileError(errno.EFBIG, "is larger than {} bytes".format(limit), path)
        return Text(b"".join(chunks), st, link)
    finally:
        os.close(fd)


def owner_mode(path, default_mode=0o644):
    """``(uid, gid, mode)`` a replacement of ``path`` keeps: the file's own,
    or for a symlink (or nothing) the link's owner and ``default_mode``."""
    try:
        st = os.lstat(path)
    except OSError:
        return None, None, default_mode
    if stat_mod.S_ISLNK(st.st_mode):
        return st.st_uid, st.st_gid, default_mode
    return st.st_uid, st.st_gid, stat_mod.S_IMODE(st.st_mode)


def _fsync_dir(directory):
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _install(tmp, path, fill=None):
    """Fill ``tmp`` (a new file beside ``path``), rename it over ``path`` and
    fsync the directory; on any failure ``tmp`` is removed and ``path`` untouched."""
    try:
        if fill is not None:
            fill()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(os.path.dirname(path) or ".")


def atomic_write(path, data, mode=None, uid=None, gid=None):
    """Replace ``path`` with ``data`` (bytes). Owner and mode: the given
    ones, else those of :func:`owner_mode`."""
    old_uid, old_gid, old_mode = owner_mode(path)
    mode = old_mode if mode is None else mode
    uid = old_uid if uid is None else uid
    gid = old_gid if gid is None else gid
    fd, tmp = tempfile.mkstemp(prefix=".hostcheck-", dir=os.path.dirname(path) or ".")

    def fill():
        with os.fdopen(fd, "wb") as fp:
            fp.write(data)
            fp.flush()
            os.fchmod(fp.fileno(), mode)
            if uid is not None and (uid, gid) != (os.geteuid(), os.getegid()):
                os.fchown(fp.fileno(), uid, gid)
            os.fsync(fp.fileno())

    _install(tmp, path, fill)


def atomic_symlink(target, path):
    """Point ``path`` at ``target`` by renaming a new symlink over it."""
    tmp = os.path.join(os.path.dirname(path) or ".",
                       ".hostcheck-{}-{}".format(os.getpid(), time.monotonic_ns()))
    os.symlink(target, tmp)
    _install(tmp, path)


class Snapshot:
    """What a path held before a write, so a failed multi-file change can be
    rolled back: a symlink's target, a regular file's bytes and owner/mode,
    or nothing."""

    __slots__ = ("path", "kind", "value", "uid", "gid", "mode")

    def __init__(self, path):
        self.path = path
        self.kind, self.value = "missing", None
        self.uid = self.gid = self.mode = None
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat_mod.S_ISLNK(st.st_mode):
            self.kind, self.value = "symlink", os.readlink(path)
        elif stat_mod.S_ISREG(st.st_mode):
            text = read_regular(path, follow=False)
            self.kind, self.value = "file", text.data
            self.uid, self.gid, self.mode = text.uid, text.gid, text.mode
        else:
            raise FileError(errno.EINVAL, "is neither a regular file nor a symlink", path)

    def restore(self):
        """Put the old content back (atomically); a path that did not exist is removed."""
        if self.kind == "symlink":
            atomic_symlink(self.value, self.path)
        elif self.kind == "file":
            atomic_write(self.path, self.value, self.mode, self.uid, self.gid)
        else:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
