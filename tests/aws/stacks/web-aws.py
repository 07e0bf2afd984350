"""web-aws: three members of the ``command`` role on EC2, for the aws end-to-end tests.

Settings come from the environment the test sets: ``WEB_AWS_STACK`` (name), ``WEB_AWS_SIZE``,
``WEB_AWS_SUBNETS`` and ``WEB_AWS_SECURITY_GROUPS`` (comma-separated ids), ``WEB_AWS_AMI``
(an AMI id or name). The endpoint (a moto server) comes from ``AWS_ENDPOINT_URL``.
"""

import os

from reconciler import Group, Stack

stack = Stack(
    name=os.environ.get("WEB_AWS_STACK", "webaws"),
    provider="aws",
    provider_config={
        "subnets": [s for s in os.environ.get("WEB_AWS_SUBNETS", "").split(",") if s],
        "security_group_ids": [s for s in os.environ.get("WEB_AWS_SECURITY_GROUPS", "").split(",") if s],
    },
    groups=(
        Group(
            name="web",
            size=int(os.environ.get("WEB_AWS_SIZE", "3")),
            role="command",
            image=os.environ.get("WEB_AWS_AMI", "infra-test-linuxkit"),
            machine_type="t3.micro",
            config={
                "command": ["httpd", "-f", "-p", "8080", "-h", "{config}/web"],
                "port": 8080,
                "files": {"index.html": "<h1>hello from ec2</h1>\n"},
            },
        ),
    ),
)
