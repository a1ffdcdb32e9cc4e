"""The ``famr`` command line: a parser module and one thin handler per command (parse, call the
library, write, print). Nothing a Python user would also need lives here."""

from .common import _progress_factory
from .main import main
from .parser import build_parser

__all__ = ["build_parser", "main", "_progress_factory"]
