"""The rules that spread stacks over daemons converge, from any start, without thrash.

A simulation of N daemons over M stacks applying :func:`reconciler.daemon.spread.gives` and
:func:`~reconciler.daemon.spread.takes` (the rules the daemons apply) in any order hypothesis picks,
from any starting distribution (a daemon holding all, some stacks free, a new daemon with none):
it settles within a few rounds, with every stack led, each daemon leading ``floor(M/N)`` or
``ceil(M/N)``, fewer hand-overs than twice the stacks, and once settled no rule moves anything.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.daemon.spread import assign, gives, takes


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[str], list[str], dict[str, str | None], random.Random]:
    daemons = [f"d{i}" for i in range(draw(st.integers(1, 5)))]
    stacks = [f"s{i:03d}" for i in range(draw(st.integers(0, 60)))]
    holders = {s: draw(st.sampled_from([*daemons, None])) for s in stacks}
    return daemons, stacks, holders, draw(st.randoms(use_true_random=False))


def step(daemons: list[str], stacks: list[str], holders: dict[str, str | None], choice: dict[str, str],
         order: list[tuple[str, str]]) -> int:
    """One round: each (daemon, stack) pair in ``order`` looks once. The number of moves."""
    cap = -(-len(stacks) // len(daemons))
    floor = len(stacks) // len(daemons)
    moves = 0
    load = {d: sum(1 for h in holders.values() if h == d) for d in daemons}
    for daemon, stack in order:
        chosen = choice[stack]
        if holders[stack] == daemon:
            if gives(me=daemon, choice=chosen, led=load[daemon], cap=cap, floor=floor, choice_load=load[chosen]):
                holders[stack] = None
                load[daemon] -= 1
                moves += 1
        elif holders[stack] is None and takes(me=daemon, choice=chosen, led=load[daemon], cap=cap, free=True,
                                              choice_load=load[chosen], long_free=False):
            holders[stack] = daemon
            load[daemon] += 1
    return moves


@settings(max_examples=400, deadline=None)
@given(worlds())
def test_the_spread_settles_balanced_from_any_start(world: tuple[list[str], list[str], dict[str, str | None],
                                                                 random.Random]) -> None:
    daemons, stacks, holders, rng = world
    choice = assign(stacks, daemons)
    pairs = [(d, s) for d in daemons for s in stacks]
    moved: dict[str, int] = {}
    for _ in range(40):
        before = dict(holders)
        order = list(pairs)
        rng.shuffle(order)
        step(daemons, stacks, holders, choice, order)
        for stack in stacks:
            if before[stack] is not None and holders[stack] != before[stack]:
                moved[stack] = moved.get(stack, 0) + 1
        if holders == before:
            break
    else:
        raise AssertionError(f"not settled after 40 rounds: {holders}")
    assert all(h is not None for h in holders.values()), "a stack left unled"
    loads = [sum(1 for h in holders.values() if h == d) for d in daemons]
    assert max(loads) - min(loads) <= 1, loads
    assert step(daemons, stacks, holders, choice, pairs) == 0  # settled: nothing moves again
    # No thrash: hand-overs stay within twice the stacks, however bad the start.
    assert sum(moved.values()) <= 2 * len(stacks), moved


def test_assign_gives_each_daemon_its_share_and_moves_little_when_one_leaves() -> None:
    stacks = [f"s{i:04d}" for i in range(1000)]
    three = assign(stacks, ["a", "b", "c"])
    counts = sorted(list(three.values()).count(d) for d in "abc")
    assert counts == [333, 333, 334]
    two = assign(stacks, ["a", "b"])
    moved = sum(1 for s in stacks if three[s] != "c" and two[s] != three[s])
    assert moved < 100, moved  # mostly c's stacks move
