"""Telling the messages that just arrived from a mailbox change.

The store's change hook (:meth:`VoicemailStore.on_change`) says only which mailbox changed,
for MWI. Voicemail to e-mail and the cloud backup both need "each message that arrived
since I started watching, once": :class:`NewMessageWatch` remembers the ids seen per
mailbox to tell them apart. It is thread-safe: the hook runs on whichever thread saved the
message.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .store import MessageInfo, VoicemailStore

__all__ = ["NewMessageWatch"]


class NewMessageWatch:
    """Calls ``on_new(info)`` once for each message arriving after :meth:`attach`.

    ``folder`` limits it to messages in that folder (``"new"``: not already listened to).
    """

    def __init__(self, voicemail: VoicemailStore, on_new: Callable[[MessageInfo], object],
                 *, folder: str | None = None) -> None:
        self.voicemail = voicemail
        self._on_new = on_new
        self._folder = folder
        self._lock = threading.Lock()
        self._seen: dict[str, set[str]] = {}
        self._attached_at: float | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def attach(self) -> Callable[[], None]:
        """Subscribe to the store; returns the unsubscribe function."""
        if self._unsubscribe is None:
            self._attached_at = self.voicemail.clock()
            self._unsubscribe = self.voicemail.on_change(self.mailbox_changed)
        return self._unsubscribe

    def detach(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def mailbox_changed(self, mailbox: str, new: int, saved: int) -> None:
        """The store hook."""
        since = self._attached_at
        if since is None:
            return
        with self._lock:
            rows = self.voicemail.list_messages(mailbox)
            seen = self._seen.get(mailbox, set())
            fresh = [r for r in rows if r.id not in seen and r.received_at >= since
                     and (self._folder is None or r.folder == self._folder)]
            self._seen[mailbox] = {r.id for r in rows}  # bounded by the mailbox's size
        for info in fresh:
            self._on_new(info)
