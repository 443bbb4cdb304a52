#!/usr/bin/env bash
# Makes a Docker engine available on a fresh Debian machine (run as root): installs docker.io,
# iptables and debootstrap if missing and starts dockerd in the background (overlay2) unless an
# engine already answers. Idempotent.
set -euo pipefail

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v iptables >/dev/null || need+=(iptables)
command -v debootstrap >/dev/null || need+=(debootstrap)
# jq and column (bsdextrautils) print `make chaos`'s summary table.
command -v jq >/dev/null || need+=(jq)
command -v column >/dev/null || need+=(bsdextrautils)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup-docker: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if docker info >/dev/null 2>&1; then
  echo "setup-docker: engine running ($(docker version --format '{{.Server.Version}}'))"
  exit 0
fi

log=${DOCKERD_LOG:-/var/log/dvlab-dockerd.log}
echo "setup-docker: starting dockerd (log: $log)"
nohup dockerd --storage-driver=overlay2 >"$log" 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    echo "setup-docker: engine running ($(docker version --format '{{.Server.Version}}'))"
    exit 0
  fi
  sleep 1
done
echo "setup-docker: dockerd did not come up within 60 s; last log lines:" >&2
tail -n 20 "$log" >&2
exit 1
