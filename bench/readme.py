"""Write one benchmark's section into bench/README.md, replacing its previous version."""

import re
from pathlib import Path

README = Path(__file__).with_name("README.md")
HEADER = "# Benchmarks\n\nEach section is written by its benchmark script (`--write-readme`).\n"


def os_name(default: str = "unknown") -> str:
    """The machine's distribution as /etc/os-release names it (PRETTY_NAME), else `default`."""
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return default


def write_section(name: str, section: str) -> None:
    """`section` starts with `## name`; other sections are kept as they are."""
    text = README.read_text() if README.exists() else HEADER
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda m: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    README.write_text(text)
    print(f"wrote the {name} section of {README}")
