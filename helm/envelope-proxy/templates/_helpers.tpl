{{/*
Names and labels.

Every named template of this chart takes one argument, a dict:
  root    the top-level context ($) of the chart that renders (this chart or a host chart)
  values  this chart's values (in a host chart: index .Values "envelope-proxy", which Helm
          fills with this chart's defaults)
so the same definitions work in this chart and inside a host chart's pod.
The chart name, chart version and app version are repeated here because a host chart's
.Chart is its own; a test keeps them equal to Chart.yaml.
*/}}

{{- define "envelope-proxy.chartName" -}}envelope-proxy{{- end -}}
{{- define "envelope-proxy.chartVersion" -}}0.1.0{{- end -}}
{{- define "envelope-proxy.appVersion" -}}0.1.0{{- end -}}

{{/* Application name: values.nameOverride or "envelope-proxy". */}}
{{- define "envelope-proxy.name" -}}
{{- default (include "envelope-proxy.chartName" .) .values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource name prefix: values.fullnameOverride, else <release>-<name>. */}}
{{- define "envelope-proxy.fullname" -}}
{{- if .values.fullnameOverride -}}
{{- .values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "envelope-proxy.name" . -}}
{{- if contains $name .root.Release.Name -}}
{{- .root.Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .root.Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of the ConfigMap holding config.yaml. */}}
{{- define "envelope-proxy.configMapName" -}}
{{- printf "%s-config" (include "envelope-proxy.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of the ConfigMap holding custom rules, or "" when the built-in rules are used. */}}
{{- define "envelope-proxy.rulesConfigMapName" -}}
{{- if .values.rules.existingConfigMap -}}
{{- .values.rules.existingConfigMap -}}
{{- else if .values.rules.files -}}
{{- printf "%s-rules" (include "envelope-proxy.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Image reference: repository:tag (tag defaults to the app version), @digest when set. */}}
{{- define "envelope-proxy.image" -}}
{{- $ref := printf "%s:%s" .values.image.repository (default (include "envelope-proxy.appVersion" .) .values.image.tag) -}}
{{- if .values.image.digest -}}
{{- $ref = printf "%s@%s" $ref .values.image.digest -}}
{{- end -}}
{{- $ref -}}
{{- end -}}

{{/* Labels selecting this release's proxy pods (standalone). */}}
{{/* The Service that carries the admin port: its own with service.separateAdmin. */}}
{{- define "envelope-proxy.adminServiceName" -}}
{{- if .values.service.separateAdmin -}}
{{- printf "%s-admin" (include "envelope-proxy.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- include "envelope-proxy.fullname" . -}}
{{- end -}}
{{- end -}}

{{- define "envelope-proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "envelope-proxy.name" . }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* Labels of the `helm test` pod: not the proxy's selector, so no Service routes to it. */}}
{{- define "envelope-proxy.testSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-test" (include "envelope-proxy.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: test
{{- end -}}

{{- define "envelope-proxy.versionLabel" -}}
app.kubernetes.io/version: {{ default (include "envelope-proxy.appVersion" .) .values.image.tag | trunc 63 | trimSuffix "-" | quote }}
{{- end -}}

{{/* Standard labels of every object this chart renders. */}}
{{- define "envelope-proxy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" (include "envelope-proxy.chartName" .) (include "envelope-proxy.chartVersion" .) }}
{{ include "envelope-proxy.selectorLabels" . }}
{{ include "envelope-proxy.versionLabel" . }}
app.kubernetes.io/component: proxy
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{/*
Shortest safe terminationGracePeriodSeconds for a pod running the proxy:
drain_seconds + shutdown_timeout_seconds (+ the classic preStop sleep) + 10 s margin.
A host chart puts max(its own need, this) on its pod.
*/}}
{{- define "envelope-proxy.terminationGracePeriodSeconds" -}}
{{- $lifecycle := (.values.config.file | default dict).lifecycle | default dict -}}
{{- $drain := int (default 5 $lifecycle.drain_seconds) -}}
{{- $shutdown := int (default 20 $lifecycle.shutdown_timeout_seconds) -}}
{{- $preStop := 0 -}}
{{- if and (eq .values.mode "sidecar") (not .values.sidecar.native) -}}
{{- $preStop = int .values.sidecar.preStopSleepSeconds -}}
{{- end -}}
{{- add $drain $shutdown $preStop 10 -}}
{{- end -}}
