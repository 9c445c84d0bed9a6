"""Files written atomically (a temporary file renamed over the target) get the permissions a
plain `open()` would give them.

`tempfile.mkstemp` creates its file 0600 so that nobody else can read a temporary secret; our
temporary files become reports, audit records, specs and data that the operator, the local
endpoint or a dashboard reads as another user (a shared volume in compose): they get 0666 less
the process's umask, as `open(path, "w")` does.
"""

from __future__ import annotations

import os


def _umask() -> int:
    # The only way to read the umask is to set it; done once, at import, before any thread
    # of ours writes files.
    current = os.umask(0o022)
    os.umask(current)
    return current


FILE_MODE = 0o666 & ~_umask()


def plain_permissions(fd: int) -> None:
    """Give the file behind `fd` (from `tempfile.mkstemp`) the mode `open()` would have."""
    os.fchmod(fd, FILE_MODE)
