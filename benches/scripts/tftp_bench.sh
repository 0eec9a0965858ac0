#!/usr/bin/env bash
# TFTP download throughput of a 64 MiB file: rackd's TFTP server vs tftpd-hpa and atftpd, same
# clients, same method as shared/lab/tftp_bench.sh (server in one network namespace, clients in
# another, joined by a veth; tmpfs file; median of REPS runs; md5 checked).
#
# Needs root, iproute2, tftp-hpa, atftp, busybox, curl, tftpd-hpa (in.tftpd), and atftpd
# (unpacked to $ATFTPD_DIR because it conflicts with tftpd-hpa). Installs what is missing.
# usage: [REPS=3] benches/scripts/tftp_bench.sh      results: benches/results/tftp.{json,txt}
set -euo pipefail
cd "$(dirname "$0")/../.."
REPS=${REPS:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/rackd-target}
TARGET=$CARGO_TARGET_DIR
ATFTPD_DIR=${ATFTPD_DIR:-$HOME/.cache/rackd-bench/atftpd}
RES=benches/results; mkdir -p "$RES"
S=rkbsrv$$ C=rkbcli$$ W=/dev/shm/rackd-tftp-bench-$$
SRV_IP=10.197.0.1

need=()
for p in tftp-hpa atftp busybox curl tftpd-hpa iproute2 bc; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; fi
if [ ! -x "$ATFTPD_DIR/usr/sbin/atftpd" ]; then
  tmp=$(mktemp -d); (cd "$tmp" && apt-get download atftpd >/dev/null)
  mkdir -p "$ATFTPD_DIR" && dpkg-deb -x "$tmp"/atftpd_*.deb "$ATFTPD_DIR"; rm -rf "$tmp"
fi
cargo build --release -q -p rackd-net --example tftpd
RACKD_TFTPD="$TARGET/release/examples/tftpd"

cleanup() {
  [ -n "${SPID:-}" ] && kill "$SPID" 2>/dev/null || true
  ip netns del "$C" 2>/dev/null || true; ip netns del "$S" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
ip netns add "$S"; ip netns add "$C"
ip -n "$S" link add srv0 type veth peer name eth0 netns "$C"
ip -n "$S" addr add $SRV_IP/24 dev srv0; ip -n "$S" link set srv0 up; ip -n "$S" link set lo up
ip -n "$C" addr add 10.197.0.5/24 dev eth0; ip -n "$C" link set eth0 up; ip -n "$C" link set lo up
mkdir -p "$W/root" "$W/dl"; chmod 755 "$W" "$W/root"
head -c 67108864 /dev/urandom > "$W/root/big64.bin"
SUM=$(md5sum < "$W/root/big64.bin" | cut -d' ' -f1)

start_server() {
  case $1 in
    rackd)     ip netns exec "$S" "$RACKD_TFTPD" "$W/root" $SRV_IP:69 >/dev/null 2>&1 & ;;
    tftpd-hpa) ip netns exec "$S" /usr/sbin/in.tftpd -L -4 -a $SRV_IP:69 -u root -s "$W/root" >/dev/null 2>&1 & ;;
    atftpd)    ip netns exec "$S" "$ATFTPD_DIR/usr/sbin/atftpd" --daemon --no-fork --user root.root \
                 --bind-address $SRV_IP --port 69 --logfile /dev/null "$W/root" >/dev/null 2>&1 & ;;
  esac
  SPID=$!; sleep 0.5
  kill -0 "$SPID" 2>/dev/null || { echo "server $1 failed to start" >&2; exit 1; }
}

declare -A CLIENT=(
  ["tftp-hpa (512)"]="tftp $SRV_IP -m binary -c get big64.bin OUT"
  ["atftp (512)"]="atftp -g -r big64.bin -l OUT $SRV_IP"
  ["atftp blksize 1468"]="atftp --option blksize\\ 1468 -g -r big64.bin -l OUT $SRV_IP"
  ["atftp blksize 1468 windowsize 8"]="atftp --option blksize\\ 1468 --option windowsize\\ 8 -g -r big64.bin -l OUT $SRV_IP"
  ["atftp blksize 1468 windowsize 16"]="atftp --option blksize\\ 1468 --option windowsize\\ 16 -g -r big64.bin -l OUT $SRV_IP"
  ["busybox tftp -b 1468"]="busybox tftp -b 1468 -g -r big64.bin -l OUT $SRV_IP"
  ["curl --tftp-blksize 1468"]="curl -sS --tftp-blksize 1468 -o OUT tftp://$SRV_IP/big64.bin"
)
ORDER=("tftp-hpa (512)" "atftp (512)" "atftp blksize 1468" "atftp blksize 1468 windowsize 8"
       "atftp blksize 1468 windowsize 16" "busybox tftp -b 1468" "curl --tftp-blksize 1468")

rows=()
: > "$RES/tftp.txt"
echo "# 64 MiB over a veth between network namespaces, median of $REPS runs" | tee -a "$RES/tftp.txt"
for s in rackd tftpd-hpa atftpd; do
  start_server "$s"
  for c in "${ORDER[@]}"; do
    eval "args=(${CLIENT[$c]//OUT/$W/dl/out})"
    times=() ok=true
    for i in $(seq 1 "$REPS"); do
      rm -f "$W/dl/out"
      t0=$(date +%s.%N)
      ip netns exec "$C" timeout 300 "${args[@]}" > /dev/null 2>&1 || ok=false
      t1=$(date +%s.%N)
      [ "$(md5sum < "$W/dl/out" 2>/dev/null | cut -d' ' -f1)" = "$SUM" ] || ok=false
      times+=("$(echo "$t1 - $t0" | bc)")
    done
    row=$(python3 - "$s" "$c" "$ok" "${times[@]}" <<'PY'
import json, statistics, sys
s, c, ok, *t = sys.argv[1:]
t = [float(x) for x in t]; m = statistics.median(t)
print(json.dumps({"server": s, "client": c, "median_s": round(m, 3), "mb_per_s": round(67108864 / 1e6 / m, 1),
                  "runs_s": [round(x, 3) for x in t], "ok": ok == "true"}))
PY
)
    rows+=("$row")
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("{server:<10} {client:<34} {median_s:>7}s {mb_per_s:>7} MB/s ok={ok}".format(**r))' "$row" | tee -a "$RES/tftp.txt"
  done
  kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; SPID=
done
printf '%s\n' "${rows[@]}" | python3 -c 'import json,sys; rows=[json.loads(l) for l in sys.stdin]; json.dump({"benchmark":"tftp-64MiB","reps":'"$REPS"',"results":rows}, open("'"$RES"'/tftp.json","w"), indent=1)'
echo "wrote $RES/tftp.json"
