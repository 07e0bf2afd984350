"""The ``/init`` of Debian-built images: what LinuxKit's init, dhcpcd and metadata packages do.

Shipped into every initramfs by :mod:`reconciler.engine.debianbuild` (it is part of the image
digest). A POSIX ``sh`` script for busybox, run as PID 1:

1. mounts ``/proc``, ``/sys``, ``/dev`` (devtmpfs), ``/run`` and ``/tmp``;
2. loads the network modules listed in ``/etc/infra/modules`` (in dependency order);
3. brings up ``lo`` and the first ethernet interface with DHCP (busybox ``udhcpc``);
4. fetches the user-data from the cloud's metadata server at 169.254.169.254 (``infra.metadata=``
   on the kernel command line, default from ``/etc/infra/metadata``): GCE's
   ``computeMetadata/v1/instance/attributes/user-data`` with ``Metadata-Flavor: Google``, or EC2's
   IMDSv2 (a ``PUT`` for a session token, then the token on the read), retrying for a minute,
   over HTTP/1.0 written with busybox ``nc`` (busybox's static ``wget`` crashes resolving names
   through glibc's NSS);
5. writes it under ``/run/config`` as LinuxKit's ``metadata`` package lays it out (``{"dir":
   {"entries": {"file": {"content", "perm"}}}}``, parsed with Debian's ``jq``), refusing paths
   that climb out of it, and ``/run/config/local_ipv4`` and ``hostname``;
6. starts each service in ``/etc/infra/services`` in its own mount namespace with
   ``/var/lib/infra/<name>`` bound on ``/var/lib/infra`` (LinuxKit's binds), restarts it when it
   exits (one second apart), and sends its output to the console prefixed with its name.

Every step says what it does on the serial console (``infra-init: [<uptime>] ...``: the seconds
since the kernel started, so the console shows how long the boot took).
"""

from __future__ import annotations

INIT = r"""#!/bin/sh
# infra's init for Debian-built images (reconciler/engine/debian_init.py).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
say() { echo "infra-init: [$(cut -d' ' -f1 /proc/uptime 2>/dev/null)] $*" > /dev/console; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /run /tmp /var/lib/infra /run/config
mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -p /run/config
mount -t tmpfs tmpfs /tmp
exec < /dev/console > /dev/console 2>&1
say "booted $(uname -r)"

while read -r module; do
  [ -n "$module" ] && insmod "/lib/modules/$(uname -r)/$module" && say "module $(basename "$module")"
done < /etc/infra/modules

ip link set lo up
ip addr add 127.0.0.1/8 dev lo 2>/dev/null
iface=""
for dev in /sys/class/net/*; do
  name=$(basename "$dev")
  [ "$name" = lo ] && continue
  iface=$name; break
done
if [ -n "$iface" ]; then
  ip link set "$iface" up
  udhcpc -i "$iface" -n -q -t 10 -s /etc/infra/udhcpc.sh >/dev/null 2>&1 || say "no DHCP lease on $iface"
  say "network $iface $(ip -4 -o addr show dev "$iface" | awk '{print $4}')"
else
  say "no network interface"
fi

metadata=$(cat /etc/infra/metadata)
for word in $(cat /proc/cmdline); do
  case "$word" in infra.metadata=*) metadata=${word#infra.metadata=};; esac
done
md=169.254.169.254
# One HTTP/1.0 request to the metadata server with busybox nc (its static wget resolves names
# through glibc's NSS, which a static binary cannot load): http METHOD PATH [HEADER...] prints
# the body of a 200 answer, fails otherwise. nc stops reading when its input ends, so the input
# stays open half a second for the answer (the server is one hop away; a late answer is a retry).
http() {
  method=$1; path=$2; shift 2
  { printf '%s %s HTTP/1.0\r\nHost: %s\r\n' "$method" "$path" "$md"
    for header in "$@"; do printf '%s\r\n' "$header"; done
    printf '\r\n'; sleep 0.5; } | nc "$md" 80 > /tmp/answer || return 1
  head -n 1 /tmp/answer | grep -q ' 200 ' || return 1
  tr -d '\r' < /tmp/answer | sed '1,/^$/d'
}
fetch() {
  case "$metadata" in
    gcp) http GET /computeMetadata/v1/instance/attributes/user-data "Metadata-Flavor: Google" > /tmp/user-data ;;
    aws) token=$(http PUT /latest/api/token "X-aws-ec2-metadata-token-ttl-seconds: 300" | tr -d '\n') &&
         [ -n "$token" ] && http GET /latest/user-data "X-aws-ec2-metadata-token: $token" > /tmp/user-data ;;
    *) return 1 ;;
  esac
}
tries=0
until fetch; do
  tries=$((tries + 1))
  if [ "$tries" -ge 120 ]; then say "no user-data from the $metadata metadata server"; break; fi
  sleep 0.5
done
if [ -s /tmp/user-data ]; then
  jq -r -f /etc/infra/userdata.jq /tmp/user-data > /tmp/user-data.list || say "user-data is not LinuxKit JSON"
  tab=$(printf '\t')
  written=0
  while IFS="$tab" read -r path perm content; do
    case "/$path/" in */../*|*/./*|//*) say "refused user-data path $path"; continue;; esac
    case "$perm" in [0-7][0-7][0-7]|[0-7][0-7][0-7][0-7]) ;; *) perm=0644;; esac
    mkdir -p "/run/config/$(dirname "$path")"
    printf '%s' "$content" | base64 -d > "/run/config/$path"
    chmod "$perm" "/run/config/$path"
    written=$((written + 1))
  done < /tmp/user-data.list
  say "user-data: $written files under /run/config"
  rm -f /tmp/user-data /tmp/user-data.list
fi
[ -n "$iface" ] && ip -4 -o addr show dev "$iface" | awk '{split($4, a, "/"); print a[1]}' > /run/config/local_ipv4
hostname > /run/config/hostname

for script in /etc/infra/services/*; do
  [ -f "$script" ] || continue
  name=$(basename "$script")
  (
    while true; do
      mkdir -p "/var/lib/infra/$name"
      say "service $name starting"
      unshare -m sh -c 'mount --bind "/var/lib/infra/$1" /var/lib/infra && exec sh "$2"' sh "$name" "$script" 2>&1 \
        | while IFS= read -r line; do echo "[$name] $line"; done  # line by line: sed would buffer
      say "service $name exited; restarting in 1s"
      sleep 1
    done
  ) &
done
say "services started"
while true; do wait; sleep 1; done
"""

#: The DHCP client's hook: set the address, the default route and the resolver it was given.
UDHCPC = r"""#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
    : > /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    ;;
esac
"""

#: LinuxKit's metadata JSON as ``path<TAB>perm<TAB>base64(content)`` lines (jq 1.6).
USERDATA_JQ = r"""def files(p):
  to_entries[] | (p + [.key]) as $q | .value
  | if type != "object" then empty
    elif has("entries") then (.entries | files($q))
    elif has("content") then "\($q | join("/"))\t\(.perm // "0644")\t\(.content | tostring | @base64)"
    else empty end;
files([])
"""
