"""Typed errors of the transaction layer: all are transaction-user misuse.

Network input never raises: what the RFC gives no meaning to is dropped and
counted (see ``TransactionLayer.stats``).
"""

from __future__ import annotations


class TransactionError(Exception):
    """Base class of everything the transaction layer raises."""


class TransactionStateError(TransactionError):
    """The TU's input is not allowed in the transaction's current state.

    For example a second final response, a 1xx after a final response, or a CANCEL
    before any provisional response arrived (RFC 3261 §9.1).
    """


class UnknownTransactionError(TransactionStateError):
    """No live transaction has this key (never created, or already Terminated)."""


class TransactionUsageError(TransactionError):
    """The TU handed over something unusable: an ACK as a transaction, a request
    without a z9hG4bK branch, a duplicate branch, a status outside 100-699."""


class TransactionLimitError(TransactionError):
    """``LayerConfig.max_transactions`` live transactions already exist."""
