#!/bin/bash
# rgw-s3.sh start|stop|status
# A throwaway single-node Ceph cluster (1 monitor, 1 OSD on memstore, no mgr, no cephx) with
# radosgw serving real S3 on 127.0.0.1 only, for cairn's S3 tests (test/s3/rgw.ts runs it).
# Run as root. Needs (Debian 12; scripts/install.sh installs them):
#   apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw
# Env: RGW_BASE (state dir, wiped on start and stop), RGW_PORT (S3, 7480), RGW_MON_PORT (3300),
#      RGW_ACCESS_KEY (testaccess), RGW_SECRET_KEY (testsecret).
# Several instances may run at once when each has its own RGW_BASE and ports.
set -euo pipefail

BASE=${RGW_BASE:-${TMPDIR:-/tmp}/cairn-rgw}
S3_PORT=${RGW_PORT:-7480}
MON_PORT=${RGW_MON_PORT:-3300}
ACCESS_KEY=${RGW_ACCESS_KEY:-testaccess}
SECRET_KEY=${RGW_SECRET_KEY:-testsecret}
CONF=$BASE/ceph.conf
CEPH="ceph -c $CONF --connect-timeout 10"
# `stop` wipes BASE: refuse anything as short as / or /tmp.
case "$BASE" in
  /*/*) ;;
  *) echo "RGW_BASE must be an absolute path at least 2 deep" >&2; exit 2 ;;
esac

log() { echo "[rgw-s3 $(date +%T.%3N)] $*" >&2; }

# From /proc rather than ps (procps is not in minimal images); a zombie holds no port or memory.
alive() {
  local _pid _comm state
  read -r _pid _comm state _ 2>/dev/null <"/proc/$1/stat" || return 1
  [ "$state" != Z ]
}

daemon() { # daemon NAME CMD... : run CMD detached; its pid goes to run/NAME.pid
  local n=$1
  shift
  setsid "$@" </dev/null >>"$BASE/log/$n.out" 2>&1 &
  echo $! >"$BASE/run/$n.pid"
  disown
}

wait_for() { # wait_for SECONDS DAEMON CMD... : poll CMD until it succeeds; fail fast if DAEMON died
  local t=$1 n=$2
  shift 2
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$(cat "$BASE/run/$n.pid")"; then log "$n died"; return 1; fi
    if ((SECONDS >= end)); then log "timeout waiting for $n"; return 1; fi
    sleep 0.1
  done
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# An anonymous ListBuckets answered by radosgw; bash's /dev/tcp, so curl is not needed.
s3_answers() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$S3_PORT
    printf 'GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    grep -q ListAllMyBucketsResult <&3"
}

stop() {
  local n pid pids=()
  for n in client.rgw osd.0 mon.a; do
    [ -f "$BASE/run/$n.pid" ] || continue
    pid=$(cat "$BASE/run/$n.pid")
    # Only a pid that is still one of ours (a pid may have been reused since).
    grep -qE '^(ceph-mon|ceph-osd|radosgw)$' "/proc/$pid/comm" 2>/dev/null || continue
    kill -9 "$pid" 2>/dev/null || true # throwaway data: no clean shutdown needed
    pids+=("$pid")
  done
  for pid in "${pids[@]}"; do while alive "$pid"; do sleep 0.05; done; done
  rm -rf "$BASE"
}

dump_logs() {
  local f
  for f in "$BASE"/log/*; do echo "==== $f" >&2; tail -n 30 "$f" >&2; done
}

write_conf() { # write_conf FSID
  cat >"$CONF" <<EOF
[global]
fsid = $1
mon_host = v2:127.0.0.1:$MON_PORT
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_ipv6 = false
ms_bind_msgr1 = false
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
run_dir = $BASE/run
admin_socket = $BASE/run/\$name.asok
log_file = $BASE/log/\$name.log
crash_dir = $BASE/crash
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
mon_data_avail_warn = 1
mon_data_avail_crit = 0
mon_warn_on_insecure_global_id_reclaim_allowed = false

[mon]
mon_data = $BASE/mon.\$id
# default 1 s: each pool creation then costs ~2 s and radosgw needs ~9 s to start instead of ~1
paxos_propose_interval = 0.1

[osd]
osd_data = $BASE/osd.\$id
osd_objectstore = memstore
memstore_device_bytes = 8589934592

[client.rgw]
# radosgw defaults to ms_mon_client_mode = secure, impossible without cephx: it hangs on -13
ms_mon_client_mode = crc
rgw_data = $BASE/rgw
# without tcp_nodelay every small request waits ~40 ms (Nagle + delayed ACK)
rgw_frontends = beast endpoint=127.0.0.1:$S3_PORT tcp_nodelay=1
# deleted data is garbage-collected after 2 h by default; memstore lives in RAM
rgw_gc_obj_min_wait = 5
rgw_gc_processor_period = 10
EOF
}

start() {
  stop
  local p
  for p in "$S3_PORT" "$MON_PORT"; do # radosgw does not exit promptly on a busy port
    if port_busy "$p"; then log "port $p already in use"; return 1; fi
  done
  mkdir -p "$BASE"/{run,log,mon.a,osd.0,rgw}
  local fsid
  fsid=$(cat /proc/sys/kernel/random/uuid)
  write_conf "$fsid"

  trap 'dump_logs; stop' ERR # show why, and kill whatever was started
  log "mon"
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$MON_PORT]" "$BASE/monmap" >/dev/null
  ceph-mon -c "$CONF" -i a --mkfs --monmap "$BASE/monmap"
  daemon mon.a ceph-mon -c "$CONF" -i a -f
  wait_for 60 mon.a $CEPH mon stat

  log "osd"
  local uuid id
  uuid=$(cat /proc/sys/kernel/random/uuid)
  id=$($CEPH osd new "$uuid")
  [ "$id" = 0 ] || { log "unexpected osd id $id"; return 1; }
  ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$uuid" >>"$BASE/log/mkfs.log" 2>&1
  daemon osd.0 ceph-osd -c "$CONF" -i 0 -f
  wait_for 60 osd.0 bash -c "$CEPH osd dump | grep -q '^osd.0 up'"

  log "rgw"
  daemon client.rgw radosgw -c "$CONF" -n client.rgw -f
  wait_for 60 client.rgw s3_answers
  radosgw-admin -c "$CONF" user create --uid=test --display-name=test \
    --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >/dev/null
  trap - ERR
  log "ready: http://127.0.0.1:$S3_PORT access=$ACCESS_KEY secret=$SECRET_KEY"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) $CEPH -s ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
