{{/*
The proxy container and its volumes.

Exported (argument: dict "root" $ "values" <envelope-proxy values>, see _helpers.tpl):
  envelope-proxy.sidecarContainer  one list item for a host pod. sidecar.native=true: put it
                                   under initContainers (it carries restartPolicy: Always and a
                                   startupProbe, so the server starts once the proxy listens).
                                   sidecar.native=false: put it under containers (it carries a
                                   preStop sleep). Reads image.*, ports.*, probes.*, resources,
                                   securityContext, extraEnv, sidecar.*, rules.*.
  envelope-proxy.volumes           the list items for the pod's volumes (config ConfigMap,
                                   rules ConfigMap if any, emptyDirs for /tmp and the state dir).
                                   Reads rules.*, storage.*, nameOverride/fullnameOverride.
  envelope-proxy.terminationGracePeriodSeconds  (in _helpers.tpl) the pod's minimum grace.
Volume and port names start with "envelope-proxy"/"proxy" to stay clear of the host's own.
*/}}

{{- define "envelope-proxy.volumes" -}}
- name: envelope-proxy-config
  configMap:
    name: {{ include "envelope-proxy.configMapName" . }}
{{- with include "envelope-proxy.rulesConfigMapName" . }}
- name: envelope-proxy-rules
  configMap:
    name: {{ . }}
{{- end }}
- name: envelope-proxy-tmp
  emptyDir:
    sizeLimit: {{ .values.storage.tmpSizeLimit }}
- name: envelope-proxy-state
  emptyDir:
    sizeLimit: {{ .values.storage.stateSizeLimit }}
{{- end -}}

{{/* The container; .kind is "standalone", "native" or "classic". */}}
{{- define "envelope-proxy.container" -}}
{{- $v := .values -}}
- name: envelope-proxy
  image: {{ include "envelope-proxy.image" . | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  args: ["--config", "/etc/envelope-proxy/config.yaml"]
  {{- if eq .kind "native" }}
  restartPolicy: Always
  {{- end }}
  ports:
    - name: proxy
      containerPort: {{ int $v.ports.proxy }}
      protocol: TCP
    - name: proxy-admin
      containerPort: {{ int $v.ports.admin }}
      protocol: TCP
  {{- with $v.extraEnv }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  startupProbe:
    httpGet:
      path: /healthz
      port: proxy-admin
    {{- toYaml $v.probes.startup | nindent 4 }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: proxy-admin
    {{- toYaml $v.probes.liveness | nindent 4 }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: proxy-admin
    {{- toYaml $v.probes.readiness | nindent 4 }}
  {{- if eq .kind "classic" }}
  lifecycle:
    preStop:
      exec:
        command: ["sleep", "{{ int $v.sidecar.preStopSleepSeconds }}"]
  {{- end }}
  {{- with $v.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  volumeMounts:
    - name: envelope-proxy-config
      mountPath: /etc/envelope-proxy
      readOnly: true
    {{- if include "envelope-proxy.rulesConfigMapName" . }}
    - name: envelope-proxy-rules
      mountPath: /etc/envelope-proxy/rules
      readOnly: true
    {{- end }}
    - name: envelope-proxy-tmp
      mountPath: /tmp
    - name: envelope-proxy-state
      mountPath: /var/lib/envelope-proxy
{{- end -}}

{{- define "envelope-proxy.sidecarContainer" -}}
{{- if .values.sidecar.native -}}
{{- if semverCompare "<1.29.0-0" .root.Capabilities.KubeVersion.Version -}}
{{- fail (printf "envelope-proxy: sidecar.native=true needs Kubernetes >= 1.29 (native sidecar containers); this cluster is %s. Set sidecar.native=false for a classic sidecar." .root.Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- include "envelope-proxy.container" (merge (dict "kind" "native") .) -}}
{{- else -}}
{{- include "envelope-proxy.container" (merge (dict "kind" "classic") .) -}}
{{- end -}}
{{- end -}}
