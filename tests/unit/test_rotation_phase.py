"""Phase derivation of a CA rotation (plugins/module_utils/pki/rotation.py) over every combination of what two
servers and one client host serve, accept, trust and hold."""

import itertools

import pytest

from ansible_collections.mtls.rollout.plugins.module_utils.pki.rotation import (PHASES, Client, Observed, Server, phase,
                                                                                violations)

FLAGS = list(itertools.product([False, True], repeat=3))


def every_fleet():
    for s1, s2, c in itertools.product(FLAGS, FLAGS, FLAGS):
        yield Observed(new_ca=True, cross=True, servers={"web1": Server(*s1), "web2": Server(*s2)},
                       clients={"cli": Client(*c)})


def holds(step, obs):
    """Whether a phase's goal holds on every host (the definition, independent of the code under test)."""
    servers, clients = obs.servers.values(), obs.clients.values()
    return {"trust_both": all(s.accepts_new for s in servers) and all(c.trusts_new for c in clients),
            "reissue": all(s.serves_new for s in servers) and all(c.holds_new for c in clients),
            "withdraw": not any(s.accepts_old for s in servers) and not any(c.trusts_old for c in clients)}[step]


@pytest.mark.parametrize("obs", list(every_fleet()))
def test_the_next_phase_is_the_first_whose_goal_does_not_hold(obs):
    name, why = phase(obs)
    steps = ["trust_both", "reissue", "withdraw"]
    expected = next((s for s in steps if not holds(s, obs)), "done")
    assert name == expected
    assert bool(why) == (name != "done")
    for sentence in why:  # each reason names a host of the fleet
        assert sentence.split()[0] in {"web1", "web2", "cli"}


def test_introduce_comes_first():
    assert phase(Observed())[0] == "introduce"
    assert phase(Observed(new_ca=True, cross=False))[0] == "introduce"
    assert "cross" in phase(Observed(new_ca=True, cross=False))[1][0]


def test_a_finished_rotation_and_its_start():
    start = Observed(new_ca=True, servers={"web1": Server()}, clients={"cli": Client()})
    assert phase(start) == ("trust_both", ["web1 does not accept client identities of the new hierarchy",
                                           "cli does not trust the new root"])
    end = Observed(new_ca=True, servers={"web1": Server(False, True, True)}, clients={"cli": Client(False, True, True)})
    assert phase(end) == ("done", []) and violations(end) == []


def test_unsafe_states_are_named():
    obs = Observed(new_ca=True, servers={"web1": Server(accepts_old=False, accepts_new=True)},
                   clients={"cli": Client(trusts_old=False, trusts_new=True)})
    found = violations(obs)
    assert "web1 refuses old identities, still held by cli" in found
    assert "cli does not trust the old root, still served by web1" in found
    assert violations(Observed(new_ca=True, servers={"web1": Server(False, False, False)})) == [
        "web1 accepts no client identity of either hierarchy"]
    assert PHASES[0] == "introduce" and PHASES[-1] == "done"
