"""Running the embedded PostgreSQL as the system user ``pgserver`` when we are root.

PostgreSQL refuses to run as root, so as root the server runs as ``pgserver`` (the user
the pgserver package itself would create), which owns the data directory. That user must
be able to enter every directory above the data directory and to run the server's
binaries. Botmain does not open anything up to make that true (an earlier version
chmodded every parent of the data directory, ``/root`` included, and the binaries inside
the virtualenv, which uv hard-links to its cache and to other virtualenvs): it checks,
and refuses with the directory and the ways out.

The binaries are used where the pgserver wheel put them when ``pgserver`` can run them
there (the usual case). When it cannot (a virtualenv under a private home, say, with the
data directory moved to a reachable place), they are copied once beside the data
directory, where the check above already holds; nothing outside that copy changes mode.
Directories Botmain creates on the way to the data directory get search permission
(``x``) for others and nothing more; directories that exist are never touched.
"""

from __future__ import annotations

import importlib.metadata
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

SYSTEM_USER = "pgserver"
_INSTALL_PARTS = ("bin", "lib", "share")  # include/ holds headers the server never reads


class UnreachableError(RuntimeError):
    """The server's user cannot enter a directory it needs; the message says which and how to fix it."""


def server_user() -> str | None:
    """The user the server runs as: ``pgserver`` when we are root, else ourselves (None)."""
    return SYSTEM_USER if os.geteuid() == 0 else None


def ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "-s", "/usr/sbin/nologin", name], check=True, capture_output=True)
        return pwd.getpwnam(name)


def make_dirs(path: Path, *, for_user: str | None) -> None:
    """Create ``path`` and any missing parents. With ``for_user``, each directory created
    here gets search permission for others (whatever the umask), so that user can pass."""
    missing = []
    for p in [path, *path.parents]:
        if p.exists():
            break
        missing.append(p)
    for p in reversed(missing):
        try:
            p.mkdir()
        except FileExistsError:  # another process made it meanwhile: not ours to change
            continue
        if for_user:
            p.chmod(stat.S_IMODE(p.stat().st_mode) | stat.S_IXGRP | stat.S_IXOTH)


def check_can_enter(user: str, directory: Path, *, what: str) -> None:
    """Refuse, naming the first one, unless ``user`` can enter ``directory`` and every
    directory above it."""
    blocked = _first_failing(user, [("-x", p) for p in reversed([directory, *directory.parents])])
    if blocked is not None:
        info = blocked.stat()
        owner = _owner(info.st_uid)
        raise UnreachableError(
            f"PostgreSQL refuses to run as root, so the embedded server runs as the system user {user!r}, "
            f"which cannot enter {blocked} (mode {stat.S_IMODE(info.st_mode):04o}, owner {owner}) on the way to "
            f"{what}. Botmain does not change the permissions of directories outside its own. Either let it pass: "
            f"`chmod o+x {blocked}` (search only, no listing); or set postgres.embedded.data_dir in "
            "configs/store.yaml to a directory it can reach (e.g. /var/lib/botmain/pg); or run as a user "
            "other than root; or set BOTMAIN_PG_DSN to use your own PostgreSQL."
        )


def server_install(user: str | None, bundled: Path, beside: Path, *, create: bool) -> Path:
    """The installation (``bin/``, ``lib/``, ``share/``) the server runs from: the bundled
    one (``.../pgserver/pginstall``) if ``user`` can run it, else a copy in ``beside``
    (made now if ``create``)."""
    if user is None:
        return bundled
    root = beside / f".pginstall-{importlib.metadata.version('pgserver')}"
    copy = root / "pgserver" / "pginstall"
    if copy.is_dir():
        return copy
    if not create or can_run(user, bundled):
        return bundled
    _copy_install(bundled, root)
    if not can_run(user, copy):
        raise UnreachableError(f"the copy of PostgreSQL's binaries in {root} does not run as {user!r}")
    return copy


def can_run(user: str, install: Path) -> bool:
    """True if ``user`` can reach ``install``'s files and run its server and tools."""
    bin_dir = install / "bin"
    checks = [("-x", p) for p in reversed([bin_dir, *bin_dir.parents])]
    checks += [("-x", install / part) for part in ("lib", "lib/postgresql", "share", "share/postgresql")]
    checks += [("-r", install / "share/postgresql/postgres.bki"), ("-r", install / "lib/postgresql/plpgsql.so")]
    if _first_failing(user, checks) is not None:
        return False
    # Running them proves the rest: the executable bits and the shared libraries (the
    # wheel's libpq sits in site-packages/pgserver.libs, found through an rpath).
    for name in ("postgres", "initdb", "pg_ctl"):
        ran = subprocess.run([str(bin_dir / name), "--version"], capture_output=True, user=user)
        if ran.returncode != 0:
            return False
    return True


def _copy_install(bundled: Path, root: Path) -> None:
    """Copy the installation with the layout its rpath expects: ``root/pgserver/pginstall``
    and ``root/pgserver.libs``."""
    staging = root.with_name(f"{root.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    target = staging / "pgserver" / "pginstall"
    target.mkdir(parents=True)
    for part in _INSTALL_PARTS:
        shutil.copytree(bundled / part, target / part, symlinks=True)
    libs = bundled.parent.parent / "pgserver.libs"
    if libs.is_dir():
        shutil.copytree(libs, staging / "pgserver.libs", symlinks=True)
    # The copy is ours: readable by all, executables executable by all.
    for dirpath, dirnames, filenames in os.walk(staging):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            p = Path(dirpath) / name
            if not p.is_symlink():
                p.chmod(0o755 if p.stat().st_mode & 0o111 else 0o644)
    try:
        staging.rename(root)
    except OSError:  # another process finished its copy first
        shutil.rmtree(staging, ignore_errors=True)


def _first_failing(user: str, checks: list[tuple[str, Path]]) -> Path | None:
    """Run ``test FLAG PATH`` for each check as ``user`` (one shell, so the kernel
    judges, ACLs and groups included); the first path that fails, or None."""
    script = 'while [ $# -gt 1 ]; do [ "$1" "$2" ] || { printf %s "$2"; exit 1; }; shift 2; done'
    args = [str(x) for flag, path in checks for x in (flag, path)]
    result = subprocess.run(["sh", "-c", script, "sh", *args], capture_output=True, text=True, user=user)
    if result.returncode == 0:
        return None
    if not result.stdout:
        raise UnreachableError(f"could not check access as {user!r}: {result.stderr.strip()}")
    return Path(result.stdout)


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
