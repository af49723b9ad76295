{{/*
The proxy's configuration file and the ConfigMaps that carry it.

Exported (argument: dict "root" $ "values" <envelope-proxy values>, see _helpers.tpl):
  envelope-proxy.configYaml      config.yaml text. Reads upstream.url, upstream.version, shadow,
                                 proxyMode, quarantine.*, ports.proxy, ports.admin, rules.*,
                                 tracing.*, log.*, config.file.
  envelope-proxy.configMap       the ConfigMap manifest holding config.yaml. Reads the above
                                 plus nameOverride/fullnameOverride, image.tag (labels).
  envelope-proxy.rulesConfigMap  the ConfigMap manifest of rules.files ("" when none).
  envelope-proxy.configChecksum  sha256 of config.yaml and rules.files.
  envelope-proxy.restartChecksum sha256 of the settings the proxy reads only at start.
  envelope-proxy.podAnnotations  annotations for the pod template (the host pod's too):
                                 checksum/envelope-proxy-restart always: a change to a setting
                                 the live reload cannot apply (shadow, quarantine, tracing, log,
                                 clients, ports, workers, pool size, keep-alive timeout, machine
                                 id) rolls the pods;
                                 checksum/envelope-proxy-config only with config.rollOnChange:
                                 any change rolls the pods. Without it, upstream.version and
                                 rules changes reach running pods through the in-process reload.
*/}}

{{- define "envelope-proxy.configYaml" -}}
{{- $v := .values -}}
{{- $cfg := deepCopy ($v.config.file | default dict) -}}
{{- $upstream := deepCopy (get $cfg "upstream" | default dict) -}}
{{- $_ := set $upstream "url" $v.upstream.url -}}
{{- $_ = set $upstream "version" (toString $v.upstream.version) -}}
{{- $_ = set $cfg "upstream" $upstream -}}
{{- $_ = set $cfg "listen" (printf "0.0.0.0:%d" (int $v.ports.proxy)) -}}
{{- $_ = set $cfg "admin_listen" (printf "0.0.0.0:%d" (int $v.ports.admin)) -}}
{{- $_ = set $cfg "shadow" (eq (toString $v.shadow) "true") -}}
{{- $_ = set $cfg "mode" ($v.proxyMode | default "enforce") -}}
{{- $q := $v.quarantine | default dict -}}
{{- $_ = set $cfg "quarantine" (dict "enabled" (eq (toString $q.enabled) "true") "dir" ($q.dir | default "/var/lib/envelope-proxy/quarantine") "max_bytes" (int ($q.maxBytes | default 8388608))) -}}
{{- if include "envelope-proxy.rulesConfigMapName" . -}}
{{- $_ = set $cfg "rules_dir" "/etc/envelope-proxy/rules" -}}
{{- end -}}
{{- $tracing := dict "service_name" $v.tracing.serviceName -}}
{{- if $v.tracing.otlpEndpoint -}}
{{- $_ = set $tracing "otlp_endpoint" $v.tracing.otlpEndpoint -}}
{{- end -}}
{{- $_ = set $cfg "tracing" $tracing -}}
{{- $log := $v.log | default dict -}}
{{- $_ = set $cfg "log" (dict "format" ($log.format | default "text") "level" ($log.level | default "info") "access" (eq (toString $log.access) "true") "levels" ($log.levels | default dict)) -}}
{{- toYaml $cfg -}}
{{- end -}}

{{- define "envelope-proxy.configMap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "envelope-proxy.configMapName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "envelope-proxy.labels" . | nindent 4 }}
data:
  config.yaml: |
    {{- include "envelope-proxy.configYaml" . | nindent 4 }}
{{- end -}}

{{- define "envelope-proxy.rulesConfigMap" -}}
{{- if and .values.rules.files (not .values.rules.existingConfigMap) -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "envelope-proxy.rulesConfigMapName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "envelope-proxy.labels" . | nindent 4 }}
data:
  {{- toYaml .values.rules.files | nindent 2 }}
{{- end -}}
{{- end -}}

{{- define "envelope-proxy.configChecksum" -}}
{{- printf "%s\n---\n%s" (include "envelope-proxy.configYaml" .) (toYaml (.values.rules.files | default dict)) | sha256sum -}}
{{- end -}}

{{/* Keep in step with RESTART_ONLY in proxy/config/restart.py (a test compares them). */}}
{{- define "envelope-proxy.restartChecksum" -}}
{{- $cfg := include "envelope-proxy.configYaml" . | fromYaml -}}
{{- $startOnly := pick $cfg "listen" "admin_listen" "workers" "clients" "tracing" "shadow" "quarantine" "log" -}}
{{- $_ := set $startOnly "upstream.pool_size" (get ($cfg.upstream | default dict) "pool_size") -}}
{{- $_ = set $startOnly "limits.keepalive_timeout_seconds" (get ($cfg.limits | default dict) "keepalive_timeout_seconds") -}}
{{- $_ = set $startOnly "lifecycle.shutdown_timeout_seconds" (get ($cfg.lifecycle | default dict) "shutdown_timeout_seconds") -}}
{{- $_ = set $startOnly "envelope.machine_id" (get ($cfg.envelope | default dict) "machine_id") -}}
{{- toYaml $startOnly | sha256sum -}}
{{- end -}}

{{- define "envelope-proxy.podAnnotations" -}}
checksum/envelope-proxy-restart: {{ include "envelope-proxy.restartChecksum" . }}
{{- if .values.config.rollOnChange }}
checksum/envelope-proxy-config: {{ include "envelope-proxy.configChecksum" . }}
{{- end -}}
{{- end -}}
