"""Who owns a conversation, as this gateway knows it: a bounded cache of what the log says.

The owner is the user of the conversation's first ``PromptSubmitted`` in its partition
(``schemas.ownership``). The gateway learns it only from sources that apply that rule to the log:

- the session app's snapshot ``owner``, which holds as of the snapshot's ``prompts_applied``;
- the ``user_id`` of a ``ResponseStarted`` its reader sees (the worker answers only the owner).

Never from "this gateway just wrote a prompt for this user": two gateways (or two requests)
racing on a new id would each believe their own writer. A prompt for a conversation whose owner
is not known here is written first and then settled (``service.Gateway.submit_prompt``): the
gateway waits until the session app has applied the prompts partition past it and asks who
the owner is. Since every source is authoritative, a learned owner that contradicts the cache
replaces it (and is logged: it means a source changed its mind, e.g. around an upgrade).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


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
        """Record ``owner``, as an authoritative source named it; the owner in force."""
        known = self._owners.get(conversation_id)
        if known == owner:
            return owner
        if known is not None:
            log.warning("the owner of a conversation changed in an authoritative source; replaced")
        self._owners[conversation_id] = owner
        self._owners.move_to_end(conversation_id)
        while len(self._owners) > self.capacity:
            self._owners.popitem(last=False)
        return owner
