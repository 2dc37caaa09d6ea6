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

{{/*
The alert groups (see prometheusrule.yaml). Every threshold is a value of prometheusRule.*; the series are selected
by the release's scrape job.
*/}}
{{- define "aimass-serving.alertGroups" -}}
{{- $rule := .Values.prometheusRule -}}
{{- $job := printf "job=%q" (default (include "aimass-serving.fullname" .) $rule.job) -}}
groups:
  - name: aimass-serving
    rules:
      - alert: AimassServerDown
        expr: up{ {{- $job -}} } == 0
        for: {{ $rule.serverDownFor }}
        labels:
          severity: critical
        annotations:
          summary: "aimass server {{ "{{ $labels.instance }}" }} does not answer its metrics scrape"
          description: "The pod is down or not ready. kubectl -n {{ .Release.Namespace }} describe pod; `aimass release status` shows the revision it should serve; `aimass release rollback` serves the previous one."
      - alert: AimassHighErrorRate
        expr: |
          sum(rate(aimass_requests_total{ {{- $job -}} ,route=~"infer|predict_v1",code=~"5.."}[5m]))
            / sum(rate(aimass_requests_total{ {{- $job -}} ,route=~"infer|predict_v1"}[5m])) > {{ $rule.maxErrorRate }}
        for: 5m
        labels:
          severity: critical
        annotations:
          summary: "more than {{ $rule.maxErrorRate }} of inference requests fail with 5xx"
          description: "The server log names the failing version; `aimass release rollback` serves the previous revision."
      - alert: AimassHighLatency
        expr: |
          histogram_quantile(0.99, sum by (le) (rate(aimass_request_duration_seconds_bucket{ {{- $job -}} ,route=~"infer|predict_v1"}[5m]))) > {{ $rule.maxP99Seconds }}
        for: 10m
        labels:
          severity: warning
        annotations:
          summary: "p99 of inference requests above {{ $rule.maxP99Seconds }} s"
          description: "Scale out (replicaCount, autoscaling.*) or check the batch size panel; a new version that is slower: `aimass release rollback`."
      - alert: AimassDriftDetected
        expr: max(aimass_drift_detected{ {{- $job -}} }) == 1
        for: {{ $rule.driftFor }}
        labels:
          severity: warning
        annotations:
          summary: "live images drift from the served model's training data"
          description: "`aimass monitor` reports which statistic and by how much; `aimass monitor --retrain` retrains on the labelled captured images."
      - alert: AimassLiveAccuracyLow
        expr: |
          (aimass_live_accuracy{ {{- $job -}} } < on (job, instance, version) (aimass_model_reference_accuracy{ {{- $job -}} } - {{ $rule.accuracyMargin }}))
            and on (job, instance, version) aimass_feedback_total{ {{- $job -}} } >= {{ $rule.minLabelled }}
        for: 15m
        labels:
          severity: warning
        annotations:
          summary: "live accuracy of {{ "{{ $labels.version }}" }} is {{ $rule.accuracyMargin }} below its validation accuracy"
          description: "`aimass monitor` shows the classes it gets wrong; `aimass monitor --retrain` retrains on the labelled images, `aimass release rollback` serves the previous version."
      - alert: AimassCaptureDropping
        expr: sum(rate(aimass_capture_dropped_total{ {{- $job -}} }[10m])) > 0
        for: {{ $rule.captureDropFor }}
        labels:
          severity: warning
        annotations:
          summary: "the capture store is not taking every record"
          description: "Serving is unaffected; drift and retraining see fewer images. Check the store's credentials and reachability (capture.*), or lower capture.sampleRate."
      - alert: AimassCanaryAborted
        expr: sum(increase(aimass_canary_ended_total{ {{- $job -}} ,outcome="aborted"}[{{ $rule.canaryAbortedWindow }}])) > 0
        labels:
          severity: info
        annotations:
          summary: "a canary was aborted; production serves alone"
          description: "`aimass release history` names the failing check with its value and threshold (docs/OPERATIONS.md)."
{{- end }}
