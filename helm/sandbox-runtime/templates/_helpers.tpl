{{/* The chart's name (nameOverride wins). */}}
{{- define "sandbox-runtime.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource names: release-chart, or the release alone when it already names the chart. */}}
{{- define "sandbox-runtime.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* What the Service, the PDB and the Deployment select pods by: never changes across upgrades. */}}
{{- define "sandbox-runtime.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sandbox-runtime.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sandbox-runtime.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "sandbox-runtime.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The SAM template: template.content, else the example the image carries. */}}
{{- define "sandbox-runtime.template" -}}
{{- if .Values.template.content }}
{{- .Values.template.content }}
{{- else }}
{{- .Files.Get "files/template.yaml" }}
{{- end }}
{{- end }}

{{- define "sandbox-runtime.templatePath" -}}
{{- printf "%s/%s" (trimSuffix "/" .Values.template.directory) .Values.template.fileName }}
{{- end }}

{{- define "sandbox-runtime.dataClaim" -}}
{{- default (printf "%s-data" (include "sandbox-runtime.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{/* Refuse combinations that Kubernetes would reject late, or that would break the service. */}}
{{- define "sandbox-runtime.validate" -}}
{{- $security := .Values.securityContext | default dict }}
{{- if and (eq (toString $security.procMount) "Unmasked") .Values.hostUsers (ne (toString $security.privileged) "true") }}
{{- fail "securityContext.procMount: Unmasked needs hostUsers: false (Kubernetes refuses it otherwise); without user namespaces for pods, set hostUsers: true and securityContext.privileged: true (docs/deployment.md#the-security-context)" }}
{{- end }}
{{- if and (not .Values.hostUsers) (hasKey .Values.env "SANDBOX_UID_RANGE") }}
{{- $last := regexReplaceAll "^.*-" (toString .Values.env.SANDBOX_UID_RANGE) "" | atoi }}
{{- if gt $last 65535 }}
{{- fail (printf "env.SANDBOX_UID_RANGE %s: with hostUsers: false the pod has uids 0-65535 only; pick a range below 65536" .Values.env.SANDBOX_UID_RANGE) }}
{{- end }}
{{- end }}
{{- range $name := list "SANDBOX_HOST" "SANDBOX_PORT" "SANDBOX_TEMPLATE" "SANDBOX_DATA_DIR" "SANDBOX_CACHE_DIR" "SANDBOX_SHUTDOWN_TIMEOUT" }}
{{- if hasKey $.Values.env $name }}
{{- fail (printf "env.%s is set by the chart; use the chart's own value for it (values.yaml)" $name) }}
{{- end }}
{{- end }}
{{- if and .Values.persistence.enabled (or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1)) }}
{{- fail "persistence.enabled keeps SANDBOX_DATA_DIR on one volume, which replicas must never share: use it with replicaCount: 1 and autoscaling off (docs/deployment.md#scaling-out)" }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- if not (or .Values.autoscaling.inFlight.enabled .Values.autoscaling.cpu.enabled) }}
{{- fail "autoscaling.enabled needs a metric: autoscaling.inFlight.enabled or autoscaling.cpu.enabled" }}
{{- end }}
{{- if and .Values.autoscaling.cpu.enabled (not (dig "requests" "cpu" "" .Values.resources)) }}
{{- fail "autoscaling.cpu needs resources.requests.cpu: utilization is a percentage of it" }}
{{- end }}
{{- end }}
{{- end }}
