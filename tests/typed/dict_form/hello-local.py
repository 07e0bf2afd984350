"""hello-local: three tiny web servers, each on port 8080 of its own loopback address.

    infra plan stacks/hello-local.py
    infra apply stacks/hello-local.py --yes
    infra status stacks/hello-local.py
"""

from reconciler import Group, Stack

stack = Stack(
    name="hello",
    provider="local",
    groups=[
        Group(
            name="web",
            size=3,
            role="command",
            config={
                "command": ["python3", "-m", "http.server", "8080", "--bind", "{address}",
                            "--directory", "{config}/web"],
                "port": 8080,
                "health": "http",
                "files": {"index.html": "<h1>hello from infra</h1>\n"},
            },
        ),
    ],
)
