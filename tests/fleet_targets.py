"""Worker targets for tests/test_fleet.py (run inside bench's worker on a Ray node)."""
from __future__ import annotations

import os
import time


def nap(payload: dict) -> dict:
    """Write our pid to payload["pid_file"] (if given), sleep payload["seconds"], say who we are."""
    path = payload.get("pid_file")
    if path:
        with open(path + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(path + ".tmp", path)
    time.sleep(float(payload.get("seconds", 0)))
    return {"pid": os.getpid(), "tag": payload.get("tag")}
