"""Injected faults: an apply through the engine converges with no duplicate instances.

A botocore ``before-send`` hook answers 30% of the provider's EC2 calls with throttling
(``RequestLimitExceeded``, 503) or a server error (503/500) before they reach moto; on top of
that, 30% of the launches that do reach moto have their answer lost on the way back (the
instance exists, the caller sees a connection error). Passes are repeated as ``infra apply``
would be by a user or the daemon; the world must end with exactly one instance per member.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

from botocore.exceptions import ConnectionClosedError

from providers.aws import AwsProvider
from reconciler.kit.retry import RetryPolicy
from tests.aws import moto_world
from tests.aws.conftest import make_engine, web_stack
from tests.aws.moto_world import World, all_instances, tags_of

SIZE = 20


def test_apply_converges_under_throttling_5xx_and_lost_responses(
    provider: AwsProvider, ec2: Any, world: World, tmp_path: Path
) -> None:
    faults = moto_world.Faults(provider.client, rate=0.3, seed=11)
    rng = random.Random(5)
    lost: list[str] = []

    def lose_some(parsed: dict[str, Any], **_: Any) -> None:
        if faults.enabled and rng.random() < 0.3:
            lost.append(parsed["Instances"][0]["InstanceId"])
            raise ConnectionClosedError(endpoint_url="https://ec2.us-east-1.amazonaws.com/")

    provider.client.meta.events.register("after-call.ec2.RunInstances", lose_some)
    engine = make_engine(web_stack(world, SIZE), provider, tmp_path, retry=RetryPolicy(base=0.01, cap=0.2))
    for _ in range(6):
        result = engine.reconcile()
        if result.ok and result.applied is None:  # a pass that found nothing to do
            break
    else:
        raise AssertionError(f"no convergence after 6 passes: {result.error}")
    assert sum(faults.injected.values()) >= 5 and lost, (faults.injected, lost)
    faults.enabled = False
    assert engine.plan().empty
    alive = all_instances(ec2, "pending", "running")
    members = Counter(tags_of(i)["infra-member"] for i in alive)
    assert members == Counter({f"web-{i}": 1 for i in range(SIZE)})  # no duplicate, none missing
    assert all(tags_of(i)["Name"].startswith(f"st-web-{tags_of(i)['infra-member']}-") for i in alive)
