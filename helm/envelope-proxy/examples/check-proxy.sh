#!/bin/sh
# Look at a running proxy through its admin listener: readiness, the target it forwards,
# and the sunset ledger. Usage: check-proxy.sh [ADMIN_URL]  (default http://127.0.0.1:9090,
# e.g. after `kubectl port-forward <pod> 9090:9090`).
set -eu
ADMIN="${1:-http://127.0.0.1:9090}"
echo "== readiness"
curl -fsS "$ADMIN/readyz"
echo
echo "== target in use"
curl -fsS "$ADMIN/metrics" | grep '^envelope_proxy_upstream_target_info'
echo "== clients"
# The verdict is also its exit status (0 ready, 1 not ready, 2 could not tell); here it is
# only shown.
envelope-proxy clients --admin "$ADMIN" || true
