#!/usr/bin/env bash
# DHCP DORA/s with perfdhcp: rackd's DHCP server vs Kea (memfile on tmpfs) vs dnsmasq (lease
# file on tmpfs), same machine, same run, same method as shared/lab/perfdhcp_bench.sh (server in
# one network namespace, perfdhcp in another acting as a relay, `-g single`, -R clients).
# rackd answers from reservations; its bench inventory has one for every MAC perfdhcp makes.
#
# Needs root, iproute2, kea-dhcp4-server, kea-admin (perfdhcp), dnsmasq. Installs what is missing.
# usage: [PERIOD=8] [RATES="2000 5000 10000 20000"] benches/scripts/dhcp_bench.sh
# results: benches/results/dhcp.{json,txt}
set -euo pipefail
cd "$(dirname "$0")/../.."
PERIOD=${PERIOD:-8} RATES=${RATES:-"2000 5000 10000 20000"} CLIENTS=${CLIENTS:-1000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/rackd-target}
RES=benches/results; mkdir -p "$RES"
S=rkdsrv$$ B=rkdbch$$ W=/dev/shm/rackd-dhcp-bench-$$
need=()
for p in kea-dhcp4-server kea-admin dnsmasq iproute2; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; fi
cargo build --release -q -p rackd-net --example dhcpd_bench
RACKD=$CARGO_TARGET_DIR/release/examples/dhcpd_bench

cleanup() {
  [ -n "${SPID:-}" ] && kill "$SPID" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true; ip netns del "$S" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W"
ip netns add "$S"; ip netns add "$B"
ip -n "$S" link add srv0 type veth peer name eth0 netns "$B"
ip -n "$S" addr add 10.195.0.1/16 dev srv0; ip -n "$S" link set srv0 up; ip -n "$S" link set lo up
ip -n "$B" addr add 10.195.0.5/16 dev eth0; ip -n "$B" link set eth0 up; ip -n "$B" link set lo up

cat > "$W/kea.json" <<JSON
{ "Dhcp4": {
    "interfaces-config": { "interfaces": [ "srv0" ], "dhcp-socket-type": "udp" },
    "lease-database": { "type": "memfile", "persist": true, "name": "$W/kea-leases4.csv", "lfc-interval": 3600 },
    "authoritative": true, "valid-lifetime": 3600, "renew-timer": 1800, "rebind-timer": 3150,
    "subnet4": [ { "id": 1, "subnet": "10.195.0.0/16", "pools": [ { "pool": "10.195.1.0 - 10.195.255.250" } ],
                   "option-data": [ { "name": "routers", "data": "10.195.0.1" } ] } ],
    "loggers": [ { "name": "kea-dhcp4", "output_options": [ { "output": "$W/kea.log" } ], "severity": "WARN" } ]
} }
JSON

start_server() {
  case $1 in
    rackd)   ip netns exec "$S" "$RACKD" srv0 10.195.0.1 >"$W/server.log" 2>&1 & ;;
    kea)     KEA_PIDFILE_DIR=$W KEA_LOCKFILE_DIR=$W ip netns exec "$S" kea-dhcp4 -c "$W/kea.json" >"$W/server.log" 2>&1 & ;;
    dnsmasq) ip netns exec "$S" dnsmasq -k --port=0 --interface=srv0 --bind-interfaces --user=root \
               --dhcp-range=10.195.1.0,10.195.255.250,255.255.0.0,1h --dhcp-leasefile="$W/dnsmasq.leases" \
               --dhcp-authoritative --no-ping --log-facility="$W/dnsmasq.log" --pid-file= >"$W/server.log" 2>&1 & ;;
  esac
  SPID=$!; sleep 1
  kill -0 "$SPID" 2>/dev/null || { echo "server $1 failed to start: $(cat "$W/server.log")" >&2; exit 1; }
}

rows=()
: > "$RES/dhcp.txt"
{ echo "# perfdhcp $(perfdhcp -v 2>&1 | head -1), kea-dhcp4 $(kea-dhcp4 -v), dnsmasq $(dnsmasq --version | head -1 | awk '{print $3}')"
  echo "# $(nproc) cores; veth between namespaces; -g single -R $CLIENTS, ${PERIOD}s per rate; relay mode (-l)"; } | tee -a "$RES/dhcp.txt"
for s in rackd kea dnsmasq; do
  start_server "$s"
  for r in $RATES; do
    out=$(ip netns exec "$B" timeout $((PERIOD + 15)) perfdhcp -4 -g single -l 10.195.0.5 -r "$r" -R "$CLIENTS" -p "$PERIOD" 10.195.0.1 2>&1 || true)
    row=$(python3 - "$s" "$r" <<PY
import json, re, sys
s, r = sys.argv[1], int(sys.argv[2])
out = """$out"""
m = re.search(r"Rate:\s*([0-9.]+)\s*4-way exchanges/second", out)
sent = re.findall(r"sent packets:\s*(\d+)", out)
recv = re.findall(r"received packets:\s*(\d+)", out)
drops = re.findall(r"drops:\s*(\d+)", out)
print(json.dumps({"server": s, "offered_rate": r, "dora_per_s": float(m.group(1)) if m else 0.0,
                  "sent": [int(x) for x in sent], "received": [int(x) for x in recv], "drops": [int(x) for x in drops]}))
PY
)
    rows+=("$row")
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("{server:<8} offered {offered_rate:>6}/s  achieved {dora_per_s:>9.1f} DORA/s  drops {drops}".format(**r))' "$row" | tee -a "$RES/dhcp.txt"
  done
  kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; SPID=
done
printf '%s\n' "${rows[@]}" | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin]
best = {}
for r in rows:
    best[r["server"]] = max(best.get(r["server"], 0.0), r["dora_per_s"])
json.dump({"benchmark": "dhcp-perfdhcp", "period_s": '"$PERIOD"', "clients": '"$CLIENTS"', "best_dora_per_s": best, "results": rows},
          open("'"$RES"'/dhcp.json", "w"), indent=1)
print("best DORA/s:", best)'
echo "wrote $RES/dhcp.json"
