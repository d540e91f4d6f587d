"""The comity client library: the front door other programs (a case-management
system, the CLI) use.

    async with Comity.at("/path/to/home") as c:
        c.unlock(passphrase)
        await c.send("refco", ["ana.perez"], {"type": "request", "subject": "..."}, "body")

Every method verifies what the relay serves against this member's pinned
relay key and network fingerprint; errors are ``client.errors.ClientError``
subclasses whose message is fit to show a user.
"""

from __future__ import annotations

from keys.encoding import b64d
from keys.identity import format_fingerprint

from .evidence import EvidenceMixin
from .forks import ForksMixin
from .messages import MessagesMixin
from .rotation import RotationMixin
from .networks import NetworksMixin


class Comity(NetworksMixin, MessagesMixin, EvidenceMixin, RotationMixin, ForksMixin):

    def whoami(self) -> dict:
        now = self.now()
        return {
            "handle": self.handle,
            "fingerprint": format_fingerprint(self.identity.public.fingerprint()),
            "home": str(self.home),
            "networks": [{"name": r.name, "relay": r.relay_url, "status": r.status,
                          "fingerprint": format_fingerprint(b64d(r.genesis_hash)[:20]),
                          "head": self.state.log_head(r.name)}
                         for r in self.state.networks()],
            "encryption_keys": [{"version": k.version, "created": k.created, "not_after": k.not_after,
                                 "age_days": (now - k.created) // 86400, "retired_at": k.retired_at}
                                for k in sorted(self.secrets.encryption_keys, key=lambda k: k.version)],
        }
