#!/usr/bin/env bash
# Boot storm: N reserved machines PXE-boot at once (DHCP -> TFTP -> HTTP script + kernel +
# initrd, then M clients fetch a large image) from one rackd location node, then from
# dnsmasq (DHCP + TFTP) + nginx (HTTP) from Debian, same clients, same files, same run.
# Servers in one network namespace, the load generator (benches/src/storm_bench.rs, with
# perfdhcp for DHCP) in another, joined by a veth; files on tmpfs, except the cold image's copy,
# which lives on the disk under /var/tmp (bind-mounted into the served tree) so that it can be
# evicted from the page cache before the cold image phase. The servers run in a blkio cgroup
# that limits their reads from that disk to COLD_MIBPS MiB/s (default 100, a modest SATA disk;
# this VM's virtual disk is served from the host's RAM and would hide a cold cache).
#
# Needs root, iproute2, kea-admin (perfdhcp), dnsmasq, nginx, ipxe. Installs what is missing.
# usage: benches/scripts/storm_bench.sh [--machines N] [--image-mib M] [--image-clients K] ...
# results: benches/results/storm.json (or --out PATH)
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/rackd-target}
S=rkssrv$$ C=rkscli$$ W=/dev/shm/rackd-storm-$$ D=/var/tmp/rackd-storm-cold-$$
G=/sys/fs/cgroup/blkio/rackd-storm-$$ COLD_MIBPS=${COLD_MIBPS:-100}
need=()
for p in kea-admin dnsmasq nginx ipxe iproute2; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; fi
cargo build --release -q -p rackd --bin rackd -p rackd-benches --bin storm-bench

cleanup() {
  ip netns pids "$S" 2>/dev/null | xargs -r kill 2>/dev/null || true
  ip netns del "$C" 2>/dev/null || true; ip netns del "$S" 2>/dev/null || true
  umount "$W/www/artifacts/cold" 2>/dev/null || true
  rm -rf "$W" "$D"
  rmdir "$G" 2>/dev/null || true
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
mkdir -p "$W/www/artifacts/cold" "$D"
mount --bind "$D" "$W/www/artifacts/cold"
cold_args=()
if [ -d "${G%/*}" ]; then
  mkdir "$G"
  echo "$(findmnt -n -o MAJ:MIN -T "$D" | tr -d ' ') $((COLD_MIBPS << 20))" > "$G/blkio.throttle.read_bps_device"
  cold_args=(--cold-read-mibps "$COLD_MIBPS")
else
  echo "no blkio cgroup: the cold image is read at the disk's own speed" >&2
fi
ip netns add "$S"; ip netns add "$C"
ip -n "$S" link add srv0 type veth peer name eth0 netns "$C"
ip -n "$S" addr add 10.199.0.1/16 dev srv0; ip -n "$S" link set srv0 up; ip -n "$S" link set lo up
ip -n "$C" addr add 10.199.0.5/16 dev eth0; ip -n "$C" link set eth0 up; ip -n "$C" link set lo up
# Many clients share one address: give them the whole ephemeral port range.
ip netns exec "$C" sysctl -qw net.ipv4.ip_local_port_range="1024 65000"
# The bench joins the cgroup before it starts (here: inside the namespace /sys is remounted
# and the cgroup tree is not there); the servers it starts inherit it.
sh -c '[ ! -d "$1" ] || echo $$ > "$1/cgroup.procs"; shift; exec "$@"' sh "$G" \
  ip netns exec "$C" "$CARGO_TARGET_DIR/release/storm-bench" --server-ns "$S" --work "$W" \
  --rackd "$CARGO_TARGET_DIR/release/rackd" --server-ip 10.199.0.1 --client-ip 10.199.0.5 \
  "${cold_args[@]}" "$@"
