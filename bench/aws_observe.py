"""AWS observation benchmark: EC2 API calls and time to plan a stack of N instances, against moto.

Run from the repository root::

    python bench/aws_observe.py            # N=2000 (about a minute; most of it is moto)
    python bench/aws_observe.py --n 5000
    python bench/aws_observe.py --quick    # N=200: checks the bench itself works

Everything runs in this process against moto's in-process EC2 (``mock_aws``): N instances of one
``command`` group are put straight into moto's backend, tagged exactly as
``AwsProvider.create`` tags them (one reservation each, as ``create`` launches them), and then

* ``provider.list(stack)``: the observation itself (the paginated ``DescribeInstances``);
* ``engine.plan()``: a whole ``infra plan`` pass (observe, validate, expand, diff), which must
  find nothing to do;

are timed (wall clock, best of ``--repeat``) while a botocore ``before-call`` hook counts every
EC2 operation. The target for calls is the issue's bound, ceil(N/1000)+1 ``DescribeInstances``;
times are printed, never judged (benches never pass or fail on time). moto's own work (it
serialises every instance's full description into XML) dominates the time; real EC2 answers a
1000-instance page in a second or two. moto's tag lookup is given a per-resource index
(``tests.aws.moto_world.index_moto_tags``; same answers) so that moto's O(N²) tag scan does not
swamp the figure. The exit status is non-zero only when the bench breaks (a non-empty plan,
a call count above the bound).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="instances in the stack (default 2000)")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of each row (best is shown)")
    parser.add_argument("--quick", action="store_true", help="N=200, one run: check the bench works")
    args = parser.parse_args()
    n = 200 if args.quick else args.n
    repeat = 1 if args.quick else max(1, args.repeat)

    from tests.aws import moto_world

    for key, value in moto_world.FAKE_ENV.items():
        os.environ[key] = value
    for key in moto_world.CLEARED:
        os.environ.pop(key, None)
    os.environ.setdefault("INFRA_NETWORK_ALLOW", "127.0.0.0/8,::1/128")

    from moto import mock_aws

    from providers.aws import AwsProvider
    from reconciler.core.model import stack_selector
    from reconciler.core.stack import Group, Stack
    from reconciler.engine.engine import Engine
    from reconciler.kit import netguard, registry

    netguard.install()
    moto_world.index_moto_tags(setattr)
    bound = math.ceil(n / 1000) + 1
    failures: list[str] = []
    with mock_aws(), tempfile.TemporaryDirectory() as tmp:
        world = moto_world.build(moto_world.client())
        stack = Stack(
            name="bench",
            provider="aws",
            provider_config=world.provider_config(),
            groups=(Group(name="web", size=n, role="command", image=world.ami_name,
                          machine_type=moto_world.INSTANCE_TYPE,
                          config={"command": ["httpd"], "port": 8080, "health": "none"}),),
        )
        provider = AwsProvider.open(stack.provider_config, stack=stack.name, state_dir=Path(tmp))
        roles = {g.name: registry.role(g.role) for g in stack.groups}
        configs = {g.name: roles[g.name].config_model.model_validate(g.config) for g in stack.groups}
        engine = Engine(stack, provider, roles, configs, state_dir=Path(tmp))
        start = time.perf_counter()
        members = engine.desired({})[0].members
        moto_world.populate(world, members, tag=lambda s: {**s.labels, "Name": s.name})
        print(f"aws observe bench: moto in-process (mock_aws), N={n} instances, one command group")
        print(f"{'setup: expand + put N instances in moto':48s} {time.perf_counter() - start:8.2f} s")
        calls = moto_world.CallCounter(provider.client)
        # Time moto spends answering (from the request leaving botocore to the raw answer being
        # back, before botocore parses it): the rest is botocore's parsing and the provider.
        in_moto = [0.0]
        sent: list[float] = []
        provider.client.meta.events.register_first("before-send.ec2", lambda **_: sent.append(time.perf_counter()))
        provider.client.meta.events.register(
            "before-parse.ec2", lambda **_: in_moto.__setitem__(0, in_moto[0] + time.perf_counter() - sent.pop())
        )

        best, best_moto = math.inf, 0.0
        for _ in range(repeat):
            calls.reset()
            in_moto[0] = 0.0
            t0 = time.perf_counter()
            seen = provider.list(stack_selector(stack.name))
            took = time.perf_counter() - t0
            if took < best:
                best, best_moto = took, in_moto[0]
        describe = calls.counts["DescribeInstances"]
        print(f"{'provider.list (observe) N=' + str(n):48s} {best:8.2f} s   DescribeInstances calls: "
              f"{describe} (bound ceil(N/1000)+1 = {bound})   instances seen: {len(seen)}")
        print(f"{'  of which moto answering':48s} {best_moto:8.2f} s   botocore parsing + provider: "
              f"{best - best_moto:.2f} s")
        if describe > bound or len(seen) != n:
            failures.append(f"list made {describe} calls and saw {len(seen)} instances")

        best = math.inf
        for _ in range(repeat):
            calls.reset()
            t0 = time.perf_counter()
            plan = engine.plan()
            best = min(best, time.perf_counter() - t0)
        ops = ", ".join(f"{op}={count}" for op, count in sorted(calls.counts.items()))
        print(f"{'engine.plan (infra plan pass) N=' + str(n):48s} {best:8.2f} s   calls: {ops}   "
              f"plan empty: {'yes' if plan.empty else 'NO'}")
        if not plan.empty or calls.counts["DescribeInstances"] > bound:
            failures.append(f"plan not empty ({plan.counts()}) or too many calls ({ops})")
        provider.close()
    for failure in failures:
        print(f"BENCH BROKEN: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
