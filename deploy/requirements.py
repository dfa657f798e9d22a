"""The project's dependencies (and an extra's) from pyproject.toml, one per line, for `pip install -r`: the image
installs them in a layer of their own, before the code is copied, so a code change does not reinstall them."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

project = tomllib.loads(Path(sys.argv[1]).read_text())["project"]
lines = list(project["dependencies"])
for extra in sys.argv[2:]:
    lines += project["optional-dependencies"][extra]
print("\n".join(line for line in lines if not line.startswith("torch")))  # torch: its CPU build, installed first
