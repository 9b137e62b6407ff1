import os
import sys

# Tests import the package from src/ even when it is not installed (editable install is the norm).
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
# Helpers shared by the test directories (proc_checks.py), which are not packages.
sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _durations_file_out_of_home(tmp_path_factory):
    """Every CLI run writes a durations file (for --shard); keep the suite's out of ~/.cache."""
    if "PROVIUM_DURATIONS" not in os.environ:
        os.environ["PROVIUM_DURATIONS"] = str(tmp_path_factory.mktemp("durations") / "durations.json")
    yield
