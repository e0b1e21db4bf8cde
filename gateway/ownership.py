"""Who owns a conversation: the user of its first prompt.

The authority is the log, materialised by the session service (``owner`` in its snapshot). The
gateway keeps what it learns in a bounded cache: from snapshots, from the ``user_id`` of every
``ResponseStarted`` its reader sees, and from prompts it accepts for a conversation nobody owns
yet (the first prompt claims it). Conversation ids are chosen by clients; two users racing to
start the *same new* id through two gateways within milliseconds is the one case this cache
cannot order (the log's first prompt still decides for the session service). Clients use random
ids, which makes that race a guess of a 128-bit value.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class Owners:
    capacity: int = 1_000_000
    _owners: OrderedDict[str, str] = field(default_factory=OrderedDict)

    def get(self, conversation_id: str) -> str | None:
        owner = self._owners.get(conversation_id)
        if owner is not None:
            self._owners.move_to_end(conversation_id)
        return owner

    def learn(self, conversation_id: str, owner: str) -> str:
        """Record ``owner`` unless one is known already; the owner in force."""
        known = self._owners.get(conversation_id)
        if known is not None:
            return known
        self._owners[conversation_id] = owner
        while len(self._owners) > self.capacity:
            self._owners.popitem(last=False)
        return owner
