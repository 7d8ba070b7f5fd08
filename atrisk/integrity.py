"""SHA-256 checksums of saved files, written at save and verified before a file is unpickled.

``joblib``/``pickle`` files run code when they are loaded, so a model folder's pickled
parts are loaded only when their digest matches the one written beside them when they
were saved (``sha256sum`` format: ``<hex digest>  <file name>`` per line).  This does not
make an untrusted folder safe (whoever can write the file can write its checksum); it
refuses a file changed or swapped after its folder was written, and the service loads
models only from the folder its operator names.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from atrisk.errors import ModelLoadError


def sha256_file(path: Path | str) -> str:
    """Return the SHA-256 hex digest of a file (read in 1 MiB blocks).

    Args:
        path: The file.

    Returns:
        64 hex characters.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_checksums(folder: Path | str, names: list[str], sums_file: str) -> Path:
    """Write ``folder/sums_file`` with the digest of each file of ``names`` (atomic).

    Args:
        folder: The folder holding the files.
        names: File names inside ``folder`` (those that do not exist are skipped).
        sums_file: Name of the checksum file.

    Returns:
        The checksum file.
    """
    from atrisk.workspace import write_text

    folder = Path(folder)
    lines = [f"{sha256_file(folder / n)}  {n}\n" for n in names if (folder / n).is_file()]
    return write_text("".join(lines), folder / sums_file)


def verify_checksum(folder: Path | str, name: str, sums_file: str) -> Path:
    """Check ``folder/name`` against its line in ``folder/sums_file``; return its path.

    Args:
        folder: The model folder.
        name: The file to check.
        sums_file: The checksum file written by :func:`write_checksums`.

    Returns:
        ``folder/name``, safe to load as far as its checksum goes.

    Raises:
        ModelLoadError: The checksum file or its line is missing, or the digest differs.
    """
    folder = Path(folder)
    path, sums = folder / name, folder / sums_file
    if not sums.is_file():
        raise ModelLoadError(f"{sums} is missing: the model folder is incomplete or was "
                             "saved by an older atrisk; retrain the model")
    want = None
    for line in sums.read_text(encoding="utf-8").splitlines():
        digest, _, fname = line.partition("  ")
        if fname.strip() == name:
            want = digest.strip()
    if want is None:
        raise ModelLoadError(f"{sums} has no checksum of {name}; retrain the model")
    if sha256_file(path) != want:
        raise ModelLoadError(f"{path} does not match its checksum in {sums}: the file was "
                             "changed after it was saved; retrain the model")
    return path
