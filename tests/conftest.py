import os
import sys

# Tests import the package from src/ even when it is not installed (editable install is the norm).
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
