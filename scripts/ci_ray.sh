#!/usr/bin/env bash
# Start a throwaway single-machine Ray cluster on loopback, run the Ray sweep test against it (through
# hydra-ray-launcher joining that cluster), and always stop the cluster afterwards.
#
#   bash scripts/ci_ray.sh                         # the Ray tests of tests/cli/test_sweeps.py
#   bash scripts/ci_ray.sh python -m pytest        # any command, here the whole suite, with the cluster up
#
# Needs the project's environment active with the `sweep-ray` (or `sweep`) extra installed. The command's
# exit status is this script's. `ray stop --force` ends every Ray process of this user on the machine: run it
# where no other Ray cluster lives (CI, a developer's machine).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v ray >/dev/null || ! python -c "import hydra_plugins.hydra_ray_launcher" 2>/dev/null; then
    echo "ci_ray.sh: ray / hydra-ray-launcher missing; install them with: pip install -e '.[dev,sweep]'" >&2
    exit 2
fi

# Ray replaces 127.0.0.1 by the host's network address unless it treats the cluster as single-machine; with
# this, every Ray process binds and connects on loopback only (the test's driver inherits it).
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
# No usage report to Ray's servers.
export RAY_USAGE_STATS_ENABLED=0
# A throwaway loopback cluster: no token authentication (Ray 2.5x enables it when it finds a token file in
# ~/.ray, which a local ray.init elsewhere may have left; the clients here would then be refused).
export RAY_AUTH_MODE=disabled

free_port() {
    python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port=$(free_port)
client_port=$(free_port)
agent_port=$(free_port)
# Short path: Ray's unix sockets live below it (108-byte limit).
ray_tmp=$(mktemp -d /tmp/rayci.XXXXXX)

stop_ray() {
    ray stop --force >/dev/null 2>&1 || true
    rm -rf "$ray_tmp"
}
trap stop_ray EXIT

start=$SECONDS
# Fixed-default ports (GCS 6379, client 10001, dashboard agent 52365) are taken free instead, so a second
# cluster elsewhere cannot collide; the remaining ports Ray picks at random.
ray start --head --node-ip-address=127.0.0.1 --port="$port" --ray-client-server-port="$client_port" \
    --dashboard-agent-listen-port="$agent_port" --include-dashboard=false --disable-usage-stats \
    --num-cpus=2 --object-store-memory=100000000 --temp-dir="$ray_tmp" --log-style=record >/dev/null
echo "ci_ray.sh: Ray head on 127.0.0.1:$port (started in $((SECONDS - start)) s)"

export RECOVER_PYRO_RAY_ADDRESS="127.0.0.1:$port"
if [ "$#" -eq 0 ]; then
    set -- python -m pytest tests/cli/test_sweeps.py -k ray
fi
"$@"
