{{/* The chart's name, truncated to a DNS label. */}}
{{- define "tailor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: "<release>" when it already contains the chart's name. */}}
{{- define "tailor.fullname" -}}
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

{{- define "tailor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tailor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tailor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tailor.labels" -}}
helm.sh/chart: {{ include "tailor.chart" . }}
{{ include "tailor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tailor
{{- end }}

{{- define "tailor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tailor.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tailor.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Where the webhook token Secret's key is mounted. */}}
{{- define "tailor.webhookTokenDir" -}}/var/run/secrets/tailor.dev/webhook{{- end }}

{{/* Where the webhook's TLS Secret (tls.crt, tls.key) is mounted. */}}
{{- define "tailor.webhookTlsDir" -}}/var/run/secrets/tailor.dev/webhook-tls{{- end }}

{{/*
The Secret holding the webhook's certificate: webhook.tls.secretName, or with cert-manager and
no name the one its Certificate writes; empty when the webhook serves plain HTTP.
*/}}
{{- define "tailor.webhookTlsSecret" -}}
{{- if .Values.webhook.enabled -}}
{{- if .Values.webhook.tls.secretName -}}
{{- .Values.webhook.tls.secretName -}}
{{- else if .Values.webhook.tls.certManager.enabled -}}
{{- include "tailor.fullname" . }}-webhook-tls
{{- end -}}
{{- end -}}
{{- end }}

{{/*
The operator's rules, used by a ClusterRole that a ClusterRoleBinding (all namespaces) or one
RoleBinding per watched namespace binds. Every verb is one the operator calls; see
docs/operator.md ("RBAC it uses").
*/}}
{{- define "tailor.operatorRules" -}}
# TrainingJobs: Kopf lists and watches them; the controller reads one (get), deletes finished
# ones after runPolicy.ttlSecondsAfterFinished (delete); DriftMonitors create retraining jobs
# (create) and list a monitor's earlier retrains by label (list).
- apiGroups: [tailor.dev]
  resources: [trainingjobs]
  verbs: [get, list, watch, create, delete]
# Status is written only through the status subresource (merge patch with a resourceVersion).
- apiGroups: [tailor.dev]
  resources: [trainingjobs/status, driftmonitors/status]
  verbs: [patch]
# DriftMonitors: Kopf lists and watches them into an index; the controller re-reads one (get).
- apiGroups: [tailor.dev]
  resources: [driftmonitors]
  verbs: [get, list, watch]
# Worker groups (the Indexed Job of torchrun workers; watched for status, created, read, and
# deleted (Foreground) on restart and suspend), a search's trial groups (also listed; deleted
# when pruned) and the promote Job of a manual approval.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete]
# The headless Services that give workers (and each trial's) their DNS names (created once;
# owned by the job).
- apiGroups: [""]
  resources: [services]
  verbs: [create]
# Worker pods are read to diagnose failures and to find worker 0's address for progress (and a
# trial's validation curve).
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
# One Event per phase transition of a TrainingJob or DriftMonitor.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if .Values.rbac.readReferencedSecrets }}
# The S3 access keys of a DriftMonitor's spec.storage.credentialsSecret, read by name.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}
{{- end }}
