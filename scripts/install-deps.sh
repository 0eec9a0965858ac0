#!/usr/bin/env bash
# Installs the Debian packages rackd needs, only those missing (idempotent, safe to re-run).
#   scripts/install-deps.sh build   libclang-dev: enough to build and run rackd (RocksDB bindings)
#   scripts/install-deps.sh test    build + the real peers the test suite drives (default)
# Needs root (apt-get). Works on a fresh machine of this image, whose qemu-utils 10 comes from
# backports and would otherwise make `apt-get install qemu-system-x86` fail ("held broken
# packages"): qemu-system-x86 and qemu-utils are installed at the same Debian version.
set -euo pipefail
what="${1:-test}"

build_pkgs=(libclang-dev)
# tftp-hpa, atftp, busybox, curl: real TFTP clients (curl is also the HTTP boot client, and the
# third-party client of the API over TLS, tests/it/api_tls.rs); iproute2, udhcpc, isc-dhcp-client,
# isc-dhcp-relay: real DHCP clients and relay in network namespaces (net tests).
# qemu-system-x86, ipxe-qemu, seabios: a diskless VM PXE-boots from rackd (tests/it/pxe.rs).
# ipxe: the iPXE first stages rackd serves over TFTP. openipmi (ipmi_sim), ipmitool: a real
# BMC simulator and client. syslinux*, mtools, dosfstools, e2fsprogs, qemu-utils, binutils:
# `rackd appliance build`; ovmf: UEFI boot of an installed appliance (tests/it/appliance.rs).
# openssl: checks the cluster PKI's certificates as a third party (tests/it/cluster.rs), and
# makes the operator's own API certificate (tests/it/api_tls.rs). kea-admin: perfdhcp, a host
# inventing MAC addresses against DHCP discovery (tests/it/location.rs). prometheus: promtool
# checks /metrics and the shipped rules, and a real Prometheus scrapes a cluster (tests/it/metrics.rs).
test_pkgs=(openssl kea-admin tftp-hpa atftp busybox curl iproute2 udhcpc isc-dhcp-client isc-dhcp-relay
  qemu-system-x86 ipxe-qemu seabios ipxe openipmi ipmitool syslinux syslinux-common
  syslinux-efi mtools dosfstools e2fsprogs qemu-utils binutils ovmf prometheus python3-venv)

case "$what" in
  build) pkgs=("${build_pkgs[@]}") ;;
  test) pkgs=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
  *) echo "usage: $0 [build|test]" >&2; exit 2 ;;
esac

# The appliance test (tests/it/appliance.rs) takes its kernel from Debian's linux-image .deb,
# downloaded (not installed) into ~/.cache/rackd-kernel.
fetch_kernel() {
  local kdir="$HOME/.cache/rackd-kernel" pkg
  mkdir -p "$kdir"
  ls "$kdir"/linux-image-*.deb >/dev/null 2>&1 && return 0
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
  if [ -z "$pkg" ]; then
    apt-get update -qq
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
  fi
  (cd "$kdir" && apt-get download "$pkg" 2>&1 | tail -1)
}

# schemathesis (PyPI, pinned) checks a live node against openapi/rackd.json
# (tests/it/schemathesis.rs), from its own virtualenv.
SCHEMATHESIS_VERSION=4.32.5
install_schemathesis() {
  local venv="$HOME/.cache/rackd-venv"
  "$venv/bin/st" --version 2>/dev/null | grep -q "version $SCHEMATHESIS_VERSION\$" &&
    grep -q "^home = /usr/bin\$" "$venv/pyvenv.cfg" && return 0
  rm -rf "$venv"
  # Debian's Python: the 3.11.7 build on PATH fails to parse hypothesis' own sources
  # ("AST constructor recursion depth mismatch", CPython gh-106905, fixed in 3.11.8).
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
}

need=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -eq 0 ]; then
  [ "$what" = test ] && fetch_kernel && install_schemathesis
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "missing packages: ${need[*]}; run: sudo $0 $what" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# qemu-system-x86 needs qemu-utils of its own version; a qemu-utils from backports (newer than
# the candidate) is replaced by the matching one.
args=()
for p in "${need[@]}"; do
  case "$p" in
    qemu-system-x86|qemu-utils)
      v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/{print $2}')
      args+=("qemu-system-x86=$v" "qemu-utils=$v") ;;
    *) args+=("$p") ;;
  esac
done
# De-duplicate (both qemu packages may be missing).
mapfile -t args < <(printf '%s\n' "${args[@]}" | awk '!seen[$0]++')
apt-get install -y -qq --no-install-recommends --allow-downgrades "${args[@]}"
[ "$what" = test ] && fetch_kernel && install_schemathesis
exit 0
