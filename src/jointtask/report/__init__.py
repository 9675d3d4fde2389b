"""Report: figures and a self-contained HTML page from a finished sweep."""

from .html import write_report

__all__ = ["write_report"]
