"""Standard suites (YAML), the model zoo, compression recipes and evaluation data.

Importing this package is cheap: suite files are parsed on demand, zoo builders
(which need torch) are referenced by name and imported only when a model is built.
"""
from pathlib import Path

SUITES_DIR = Path(__file__).resolve().parent
