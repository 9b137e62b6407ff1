"""The zygote's entry for scheduler tests: runs the stand-in runner (fake_runner.py) in the
forked child, so the tests of dispatch.py can run each case through the zygote too."""

import runpy
import sys
from pathlib import Path

FAKE = str(Path(__file__).with_name("fake_runner.py"))


def main(argv: list[str]) -> int:
    sys.argv = [FAKE, *argv]
    runpy.run_path(FAKE, run_name="__main__")
    return 0
