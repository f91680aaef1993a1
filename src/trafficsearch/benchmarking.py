"""What ran a benchmark, stored next to its numbers: results from shared machines mean little without it."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any


def machine_info() -> dict[str, Any]:
    """CPU model, cores, load average and the versions of the libraries that set the speed."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for module in ("torch", "faiss", "numpy"):
        with contextlib.suppress(ImportError):
            info[module] = __import__(module).__version__
    with contextlib.suppress(ImportError):
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info
