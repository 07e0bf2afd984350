"""Suite-wide safety: no test may open a connection outside loopback.

Setting ``INFRA_NETWORK_ALLOW`` here (before any test runs) makes every ``infra`` CLI subprocess
the tests start inherit it, and installing the guard covers in-process calls: instances in moto
and the fake Compute API carry made-up 10.x addresses that must never be probed.
"""

from __future__ import annotations

import os

os.environ.setdefault("INFRA_NETWORK_ALLOW", "127.0.0.0/8,::1/128")

from reconciler import netguard

netguard.install()
