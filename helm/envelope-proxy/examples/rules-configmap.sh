#!/bin/sh
# Print the ConfigMap that host-values-rules.yaml mounts, built from a rules directory
# (a copy of the repository's rules/ with your changes). Apply it with kubectl:
#   sh rules-configmap.sh ./my-rules noetl | kubectl apply -f -
# The running proxies reload the new rules in process; an invalid set is refused and the
# previous one stays in force (see envelope_proxy_config_reloads_total{result="failed"}).
set -eu
RULES_DIR="$1"
NAMESPACE="${2:-noetl}"
kubectl create configmap noetl-envelope-rules --namespace "$NAMESPACE" \
  --from-file="$RULES_DIR" --dry-run=client -o yaml
