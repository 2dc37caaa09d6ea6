{{/* Names and labels shared by every object of the chart. */}}

{{- define "aimass-serving.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release name alone when it already contains the chart name (`aimass-serving`), else release-chart. */}}
{{- define "aimass-serving.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "aimass-serving.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aimass-serving.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "aimass-serving.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "aimass-serving.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: model-server
app.kubernetes.io/part-of: aimass
app.kubernetes.io/managed-by: {{ .Release.Service }}
aimass.io/model-version: {{ .Values.model.version | quote }}
{{- end }}

{{- define "aimass-serving.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "aimass-serving.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Where pods write their capture: capture.uri, else a prefix named after the release. */}}
{{- define "aimass-serving.captureUri" -}}
{{- default (printf "s3://aimass-capture/%s" .Release.Name) .Values.capture.uri }}
{{- end }}

{{/* The monitor CronJob's pods: a selector of their own, so the server's NetworkPolicy and Service never match. */}}
{{- define "aimass-serving.monitorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "aimass-serving.name" . }}-monitor
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "aimass-serving.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Replicas that run at least: what decides whether a disruption budget can be honoured. */}}
{{- define "aimass-serving.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ .Values.autoscaling.minReplicas }}{{ else }}{{ .Values.replicaCount }}{{ end }}
{{- end }}
