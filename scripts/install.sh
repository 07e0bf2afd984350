#!/usr/bin/env bash
# Installs what infra needs on a fresh Debian machine (run as root or with sudo available).
#   scripts/install.sh          the package with every optional provider, plus etcd and Prometheus
#   scripts/install.sh --test   the same plus the test tools (pytest, hypothesis, moto, mypy, ruff)
#                               and what --vm adds
#   scripts/install.sh --vm     the package plus QEMU, dnsmasq, cpio, SYSLINUX and mtools, and the
#                               Debian packages of the Debian image builder (kernel, busybox, jq,
#                               etcd, Prometheus) in its cache: the emulators' --machines vm
set -euo pipefail
cd "$(dirname "$0")/.."

extra="all"
vm=""
if [[ "${1:-}" == "--test" ]]; then extra="test"; vm="yes"; fi
if [[ "${1:-}" == "--vm" ]]; then vm="yes"; fi

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v ip >/dev/null 2>&1 || need+=(iproute2)   # the tests run in a private network namespace
command -v dot >/dev/null 2>&1 || need+=(graphviz)   # infra graph renders SVG and PNG with it
if [[ "$extra" == "test" ]]; then               # the daemon's live page is tested in a real browser
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
fi
if [[ -n "$vm" ]]; then                          # Debian-built images boot under QEMU
  command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
  command -v dnsmasq >/dev/null 2>&1 || need+=(dnsmasq-base)   # DHCP on the VMs' bridge
  command -v cpio >/dev/null 2>&1 || need+=(cpio)
  command -v syslinux >/dev/null 2>&1 || need+=(syslinux syslinux-common)   # bootable raw disks
  command -v mcopy >/dev/null 2>&1 || need+=(mtools)
  command -v mkfs.fat >/dev/null 2>&1 || need+=(dosfstools)
  command -v sfdisk >/dev/null 2>&1 || need+=(fdisk)
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
if ((${#need[@]})); then
  echo "installing Debian packages: ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e ".[${extra}]"

if [[ -n "$vm" ]]; then
  # The Debian image builder's packages, fetched while online (the tests run without a network).
  apt-cache show --no-all-versions etcd-server >/dev/null 2>&1 || $SUDO apt-get update -qq
  python3 -m reconciler.engine.debianbuild fetch etcd-server prometheus >/dev/null
fi
