"""Files shipped with the package: the real CVPR 2023 Track 2 validation labels (Apache-2.0, from the
official track repository; the images are not public), used to render the demo's validation gallery."""

from __future__ import annotations

import gzip
from importlib import resources
from pathlib import Path

from trafficsearch.ioutil import atomic_write_bytes

VAL_LABELS_GZ = "cvpr2023_val_label.txt.gz"


def extract_val_labels(out: str | Path) -> Path:
    """Write the packaged validation label file (10,000 lines) to `out` and return its path."""
    data = gzip.decompress(resources.files(__package__).joinpath(VAL_LABELS_GZ).read_bytes())
    atomic_write_bytes(out, data)
    return Path(out)
