"""Fetch data files from public mirrors, md5-checked and written atomically."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from mlplab.errors import DataError
from mlplab.rundir import umask_mode

log = logging.getLogger(__name__)


def md5sum(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex md5 digest of a file."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(url: str, dest: Path, md5: str | None, timeout: float = 30.0) -> None:
    """Download ``url`` to ``dest``; the file appears only once complete and md5-verified.

    The bytes go to a temporary file in the destination folder that is renamed into place,
    so an interrupted download never leaves a valid-looking file behind.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.fchmod(fd, umask_mode())  # mkstemp's 0600 would stay with the renamed file
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
        if md5 is not None and (got := md5sum(tmp_name)) != md5:
            raise DataError(f"md5 mismatch for {url}: expected {md5}, got {got}")
        os.replace(tmp_name, dest)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def fetch(filename: str, data_dir: Path, mirrors: list[str], md5: str | None) -> Path:
    """Return ``data_dir/filename``, downloading it from the first mirror that serves it intact.

    Raises ``DataError`` (with every mirror's failure) when no mirror delivers a verified file.
    """
    dest = data_dir / filename
    if dest.exists():
        return dest
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the data dir {data_dir}: {exc.strerror}") from exc
    if not os.access(data_dir, os.W_OK):
        raise DataError(f"the data dir {data_dir} is not writable")
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        for attempt in (1, 2):  # a corrupt download (md5 mismatch) is fetched once more
            log.info("downloading %s", url)
            try:
                download_file(url, dest, md5)
                return dest
            except DataError as exc:  # md5 mismatch: the partial file is already removed
                failures.append(f"{url} (attempt {attempt}): {exc}")
            except (urllib.error.URLError, OSError) as exc:
                failures.append(f"{url}: {getattr(exc, 'reason', exc)}")
                break
    raise DataError("; ".join(failures) or "no mirrors configured")
