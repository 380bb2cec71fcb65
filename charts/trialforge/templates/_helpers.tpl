{{/* Names and labels shared by the templates. */}}

{{- define "trialforge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "trialforge.fullname" -}}
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

{{- define "trialforge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "trialforge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trialforge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "trialforge.labels" -}}
helm.sh/chart: {{ include "trialforge.chart" . }}
{{ include "trialforge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: trialforge
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The labels a Prometheus selects ServiceMonitors and PrometheusRules by: a
     kube-prometheus-stack selects `release: <its release name>`
     (metrics.prometheusRelease), plus the object's own `labels`, which win.
     Call with (dict "ctx" $ "labels" <the object's labels value>). */}}
{{- define "trialforge.prometheusLabels" -}}
{{- $out := dict }}
{{- with .ctx.Values.metrics.prometheusRelease }}
{{- $_ := set $out "release" . }}
{{- end }}
{{- $out = merge (deepCopy (default (dict) .labels)) $out }}
{{- if $out }}
{{- toYaml $out }}
{{- end }}
{{- end }}

{{- define "trialforge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "trialforge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "trialforge.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The namespaces watched in namespaced mode (default: the release namespace). */}}
{{- define "trialforge.watchNamespaces" -}}
{{- if .Values.watch.namespaces }}
{{- toJson (uniq .Values.watch.namespaces) }}
{{- else }}
{{- toJson (list .Release.Namespace) }}
{{- end }}
{{- end }}

{{- define "trialforge.ingestSecretName" -}}
{{- default (printf "%s-ingest-key" (include "trialforge.fullname" .)) .Values.ingest.existingSecret }}
{{- end }}

{{- define "trialforge.ingestURL" -}}
{{- if .Values.ingest.url }}
{{- .Values.ingest.url }}
{{- else }}
{{- printf "http://%s.%s.svc:%d/v1/observations" (include "trialforge.fullname" .) .Release.Namespace (int .Values.service.port) }}
{{- end }}
{{- end }}

{{/* The rules for Experiments and what the operator makes of them: exactly the
     API calls in operator/trialforge/kube/ (client.py, reconcile.py, ingest.py)
     and kopf's watches (operator.py). tests/cluster/test_chart.py runs the
     operator with only these rights through a whole experiment. */}}
{{- define "trialforge.workloadRules" -}}
# kopf watches Experiments; the reconciler reads one at a time.
- apiGroups: [trialforge.io]
  resources: [experiments]
  verbs: [get, list, watch]
# Phase, counts, best trial, conditions (merge patches of the status subresource).
- apiGroups: [trialforge.io]
  resources: [experiments/status]
  verbs: [patch]
# Trials are created by the reconciler, read back (get) after a conflict and by ingest.
- apiGroups: [trialforge.io]
  resources: [trials]
  verbs: [get, list, watch, create]
- apiGroups: [trialforge.io]
  resources: [trials/status]
  verbs: [patch]
# Children carry ownerReferences with blockOwnerDeletion: clusters that enable the
# OwnerReferencesPermissionEnforcement admission plugin (OpenShift does) require
# update on the owner's finalizers subresource for that.
- apiGroups: [trialforge.io]
  resources: [experiments/finalizers, trials/finalizers]
  verbs: [update]
# One Job per trial attempt; deleted when a trial is pruned, cancelled or timed out;
# patched by suspendPolicy Pause (suspended, or with a queue marked paused).
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, create, delete, patch]
# Kueue (spec.queue): a queued Job's Workload says why it waits (list); Pause
# deactivates it and resume reactivates it (patch of spec.active).
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads]
  verbs: [list, patch]
# Pods are only read: phases, exit codes, nodes, image digests.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# Headless Services for multi-worker trials, and each trial's ingest-token Secret.
# create only: the operator never reads, lists or changes a Secret or a Service.
- apiGroups: [""]
  resources: [services, secrets]
  verbs: [create]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/*
"true" when a monitoring object is to be rendered: its `enabled` is true, or
"auto" (the default) and the cluster serves its kind (prometheus-operator's
CRDs, which a kube-prometheus-stack installs). Call with
(list .Values.metrics.serviceMonitor.enabled . "ServiceMonitor").
*/}}
{{- define "trialforge.monitoring" -}}
{{- $enabled := toString (index . 0) -}}
{{- $root := index . 1 -}}
{{- $kind := index . 2 -}}
{{- if eq $enabled "true" -}}
true
{{- else if and (eq $enabled "auto") ($root.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" $kind)) -}}
true
{{- end -}}
{{- end -}}
