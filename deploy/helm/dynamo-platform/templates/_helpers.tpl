{{/* Names, labels and addresses shared by every template of dynamo-platform. */}}

{{- define "dynamo-platform.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dynamo-platform.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "dynamo-platform.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Common labels; call with (dict "ctx" $ "component" "operator"). */}}
{{- define "dynamo-platform.labels" -}}
helm.sh/chart: {{ include "dynamo-platform.chart" .ctx }}
{{ include "dynamo-platform.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: dynamo
{{- end -}}

{{- define "dynamo-platform.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dynamo-platform.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "dynamo-platform.operator.fullname" -}}
{{- printf "%s-operator" (include "dynamo-platform.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dynamo-platform.operator.serviceAccountName" -}}
{{- $op := index .Values "dynamo-operator" -}}
{{- if $op.serviceAccount.create -}}
{{- default (include "dynamo-platform.operator.fullname" .) $op.serviceAccount.name -}}
{{- else -}}
{{- default "default" $op.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* registry/repository:tag, with the chart appVersion as the default tag. */}}
{{- define "dynamo-platform.image" -}}
{{- $repo := .image.repository -}}
{{- if .ctx.Values.global.imageRegistry -}}
{{- $repo = printf "%s/%s" .ctx.Values.global.imageRegistry $repo -}}
{{- end -}}
{{- printf "%s:%s" $repo (toString (default .ctx.Chart.AppVersion .image.tag)) -}}
{{- end -}}

{{- define "dynamo-platform.operator.image" -}}
{{- include "dynamo-platform.image" (dict "ctx" . "image" (index .Values "dynamo-operator").image) -}}
{{- end -}}

{{/* The one namespace a restricted operator watches. */}}
{{- define "dynamo-platform.operator.watchNamespace" -}}
{{- $op := index .Values "dynamo-operator" -}}
{{- default .Release.Namespace $op.namespaceRestriction.targetNamespace -}}
{{- end -}}

{{- define "dynamo-platform.etcd.fullname" -}}
{{- printf "%s-etcd" (include "dynamo-platform.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dynamo-platform.nats.fullname" -}}
{{- printf "%s-nats" (include "dynamo-platform.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* etcd URL given to graph services: explicit value, else the bundled etcd, else none. */}}
{{- define "dynamo-platform.etcdAddress" -}}
{{- $op := index .Values "dynamo-operator" -}}
{{- if $op.etcdAddr -}}
{{- $op.etcdAddr -}}
{{- else if .Values.global.etcd.install -}}
{{- printf "http://%s.%s.svc:2379" (include "dynamo-platform.etcd.fullname" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{- define "dynamo-platform.natsAddress" -}}
{{- $op := index .Values "dynamo-operator" -}}
{{- if $op.natsAddr -}}
{{- $op.natsAddr -}}
{{- else if .Values.global.nats.install -}}
{{- printf "nats://%s.%s.svc:4222" (include "dynamo-platform.nats.fullname" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* Whether to render PodMonitors: forced by monitoring.podMonitors.enabled, or (auto) when
the cluster serves the Prometheus Operator's PodMonitor API. */}}
{{- define "dynamo-platform.podMonitors" -}}
{{- $want := toString .Values.monitoring.podMonitors.enabled -}}
{{- if eq $want "true" -}}true
{{- else if eq $want "auto" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1/PodMonitor" -}}true{{- end -}}
{{- else if ne $want "false" -}}
{{- fail (printf "monitoring.podMonitors.enabled must be auto, true or false, not %q" $want) -}}
{{- end -}}
{{- end -}}

{{/* The namespaces graph pods run in: the watched one when restricted, else any. */}}
{{- define "dynamo-platform.graphNamespaceSelector" -}}
{{- if (index .Values "dynamo-operator").namespaceRestriction.enabled -}}
matchNames:
  - {{ include "dynamo-platform.operator.watchNamespace" . }}
{{- else -}}
any: true
{{- end -}}
{{- end -}}
