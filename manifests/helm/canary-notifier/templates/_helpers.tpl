{{- define "canary-notifier.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "canary-notifier.fullname" -}}
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

{{- define "canary-notifier.selectorLabels" -}}
app.kubernetes.io/name: {{ include "canary-notifier.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "canary-notifier.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "canary-notifier.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The Secret the Deployment reads its notification settings from. */}}
{{- define "canary-notifier.settingsSecret" -}}
{{- .Values.existingSecret | default (printf "%s-settings" (include "canary-notifier.fullname" .)) }}
{{- end }}

{{- define "canary-notifier.tlsSecret" -}}
{{- printf "%s-tls" (include "canary-notifier.fullname" .) }}
{{- end }}

{{/* Secret keys are the operator's environment variable names (Flagger's where it has one). */}}
{{- define "canary-notifier.settingsData" -}}
{{- $data := dict }}
{{- with .Values.slack.url }}{{ $_ := set $data "SLACK_URL" . }}{{ end }}
{{- with .Values.slack.token }}{{ $_ := set $data "SLACK_TOKEN" . }}{{ end }}
{{- with .Values.slack.proxyUrl }}{{ $_ := set $data "SLACK_PROXY_URL" . }}{{ end }}
{{- with .Values.msteams.url }}{{ $_ := set $data "MSTEAMS_URL" . }}{{ end }}
{{- with .Values.msteams.proxyUrl }}{{ $_ := set $data "MSTEAMS_PROXY_URL" . }}{{ end }}
{{- with .Values.eventWebhook }}{{ $_ := set $data "EVENT_WEBHOOK_URL" . }}{{ end }}
{{- with .Values.signingKey }}{{ $_ := set $data "CANARY_NOTIFIER_SIGNING_KEY" . }}{{ end }}
{{- toYaml $data }}
{{- end }}

{{- define "canary-notifier.validate" -}}
{{- if not (has .Values.certificates.mode (list "self-managed" "cert-manager")) }}
{{- fail (printf "certificates.mode must be self-managed or cert-manager, not %q" .Values.certificates.mode) }}
{{- end }}
{{- end }}
