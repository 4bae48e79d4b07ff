"""Deletion requests as a workflow: a hash-chained ledger (SQLite or PostgreSQL),
sequential processing with a retrain policy, and a certificate per request.

``unlearn request init|add|process|status|verify|export`` on the command line;
:class:`Ledger` in Python. See ``docs/ledger.md``.
"""

from .certificate import check_certificate
from .core import Ledger, VerifyReport, parse_threshold

__all__ = ["Ledger", "VerifyReport", "check_certificate", "parse_threshold"]
