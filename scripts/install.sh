#!/usr/bin/env bash
# Installs what infra needs on a fresh Debian machine (run as root or with sudo available).
#   scripts/install.sh          the package with every optional provider, plus etcd and Prometheus
#   scripts/install.sh --test   the same plus the test tools (pytest, hypothesis, moto, mypy, ruff)
set -euo pipefail
cd "$(dirname "$0")/.."

extra="all"
if [[ "${1:-}" == "--test" ]]; then extra="test"; fi

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v ip >/dev/null 2>&1 || need+=(iproute2)   # the tests run in a private network namespace
command -v dot >/dev/null 2>&1 || need+=(graphviz)   # infra graph renders SVG and PNG with it
if [[ "$extra" == "test" ]]; then               # the daemon's live page is tested in a real browser
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
fi
if ((${#need[@]})); then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  echo "installing Debian packages: ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e ".[${extra}]"
