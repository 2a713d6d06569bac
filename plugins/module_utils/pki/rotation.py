"""Which phase a CA rotation is in, derived from what every host serves and trusts, never from a saved state:
a run can stop anywhere and the next one continues where it stopped.

Phases, in order, each started only when the one before holds on every host:

- ``introduce``: the new CA exists (for a root, with the cross-certificate the old root signed for it);
- ``trust_both``: every server accepts client identities of both hierarchies, every client host trusts both roots;
- ``reissue``: every server serves a chain of the new hierarchy, every client host holds a new identity;
- ``withdraw``: the old CA is in no server's client-CA bundle and no client host's trust store;
- ``done``.

``violations`` names states a rotation must never pass through (a host refusing the old hierarchy while a peer
still depends on it): they come from hand edits or a foreign run, and are reported rather than built on.
"""

from dataclasses import dataclass, field

PHASES = ("introduce", "trust_both", "reissue", "withdraw", "done")


@dataclass(frozen=True)
class Server:
    accepts_old: bool = True  # its client-CA bundle holds the old hierarchy
    accepts_new: bool = False
    serves_new: bool = False  # its certificate chains to the new CA


@dataclass(frozen=True)
class Client:
    trusts_old: bool = True  # its trust store holds the old root
    trusts_new: bool = False
    holds_new: bool = False  # its client identity was issued under the new CA


@dataclass(frozen=True)
class Observed:
    new_ca: bool = False
    cross: bool = True  # the cross-certificate exists (or none is needed: not a root)
    servers: dict = field(default_factory=dict)  # host -> Server
    clients: dict = field(default_factory=dict)  # host -> Client


def phase(obs):
    """(phase, [why it is not finished: one sentence per host]) - the phase to run next."""
    if not obs.new_ca:
        return "introduce", ["the new CA does not exist yet"]
    if not obs.cross:
        return "introduce", ["the cross-certificate (new root signed by the old) does not exist yet"]
    steps = (
        ("trust_both", [f"{h} does not accept client identities of the new hierarchy"
                        for h, s in sorted(obs.servers.items()) if not s.accepts_new]
         + [f"{h} does not trust the new root" for h, c in sorted(obs.clients.items()) if not c.trusts_new]),
        ("reissue", [f"{h} does not serve a chain of the new hierarchy"
                     for h, s in sorted(obs.servers.items()) if not s.serves_new]
         + [f"{h} holds no identity of the new hierarchy" for h, c in sorted(obs.clients.items()) if not c.holds_new]),
        ("withdraw", [f"{h} still accepts client identities of the old hierarchy"
                      for h, s in sorted(obs.servers.items()) if s.accepts_old]
         + [f"{h} still trusts the old root" for h, c in sorted(obs.clients.items()) if c.trusts_old]),
    )
    for name, pending in steps:
        if pending:
            return name, pending
    return "done", []


def violations(obs):
    """Sentences naming hosts that refuse the old hierarchy while a peer still depends on it."""
    found = []
    old_clients = sorted(h for h, c in obs.clients.items() if not c.holds_new)
    old_servers = sorted(h for h, s in obs.servers.items() if not s.serves_new)
    for h, s in sorted(obs.servers.items()):
        if not s.accepts_old and old_clients:
            found.append(f"{h} refuses old identities, still held by {', '.join(old_clients)}")
        if not s.accepts_old and not s.accepts_new:
            found.append(f"{h} accepts no client identity of either hierarchy")
    for h, c in sorted(obs.clients.items()):
        if not c.trusts_old and old_servers:
            found.append(f"{h} does not trust the old root, still served by {', '.join(old_servers)}")
        if not c.trusts_old and not c.trusts_new:
            found.append(f"{h} trusts neither root")
    return found
