{{/* Chart name, truncated to fit DNS labels. */}}
{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Object-name prefix. Kept short enough that "<prefix>-storage-NN" and "<prefix>-etcd-N" stay valid
DNS labels.
*/}}
{{- define "sluice.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sluice.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "sluice.labels" -}}
helm.sh/chart: {{ include "sluice.chart" . }}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sluice
{{- end -}}

{{/* Labels that select this release's pods (add app.kubernetes.io/component per role). */}}
{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Object names. */}}
{{- define "sluice.clientServiceName" -}}{{ include "sluice.fullname" . }}{{- end -}}
{{- define "sluice.coordinatorName" -}}{{ include "sluice.fullname" . }}-coordinator{{- end -}}
{{- define "sluice.storageName" -}}{{ include "sluice.fullname" . }}-storage{{- end -}}
{{- define "sluice.etcdName" -}}{{ include "sluice.fullname" . }}-etcd{{- end -}}
{{- define "sluice.configName" -}}{{ include "sluice.fullname" . }}-config{{- end -}}

{{- define "sluice.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Address of a bundled etcd member's DNS name: sluice.etcdHost (list $ ordinal). */}}
{{- define "sluice.etcdHost" -}}
{{- $root := index . 0 -}}
{{- $name := include "sluice.etcdName" $root -}}
{{- printf "%s-%d.%s.%s.svc.%s" $name (index . 1) $name $root.Release.Namespace $root.Values.cluster.domain -}}
{{- end -}}

{{/* etcd endpoints, comma separated: every bundled member, or the external ones. */}}
{{- define "sluice.etcdEndpoints" -}}
{{- if .Values.etcd.bundled -}}
{{- $eps := list -}}
{{- range $i := until (int .Values.etcd.replicas) -}}
{{- $eps = append $eps (printf "http://%s:2379" (include "sluice.etcdHost" (list $ $i))) -}}
{{- end -}}
{{- join "," $eps -}}
{{- else -}}
{{- required "etcd.endpoints must list at least one endpoint when etcd.bundled is false" (join "," (default (list) .Values.etcd.endpoints)) -}}
{{- end -}}
{{- end -}}

{{/* The bundled etcd's --initial-cluster value. */}}
{{- define "sluice.etcdInitialCluster" -}}
{{- $name := include "sluice.etcdName" . -}}
{{- $members := list -}}
{{- range $i := until (int .Values.etcd.replicas) -}}
{{- $members = append $members (printf "%s-%d=http://%s:2380" $name $i (include "sluice.etcdHost" (list $ $i))) -}}
{{- end -}}
{{- join "," $members -}}
{{- end -}}

{{/*
Pod anti-affinity by hostname for one component: sluice.antiAffinity (list $ "storage" mode).
*/}}
{{- define "sluice.antiAffinity" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $mode := index . 2 -}}
{{- if eq $mode "preferred" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "sluice.selectorLabels" $root | nindent 12 }}
            app.kubernetes.io/component: {{ $component }}
{{- else if eq $mode "required" -}}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "sluice.selectorLabels" $root | nindent 10 }}
          app.kubernetes.io/component: {{ $component }}
{{- end }}
{{- end -}}

{{/* Annotations for annotation-based Prometheus scraping. */}}
{{- define "sluice.prometheusAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.metrics.port | quote }}
prometheus.io/path: /metrics
{{- end -}}

{{/* The native gRPC probes against grpc.health.v1 (overall service ""). */}}
{{- define "sluice.grpcProbes" -}}
{{- $root := index . 0 -}}
{{- $port := index . 1 -}}
startupProbe:
  grpc:
    port: {{ $port }}
  periodSeconds: {{ $root.Values.probes.startup.periodSeconds }}
  failureThreshold: {{ $root.Values.probes.startup.failureThreshold }}
readinessProbe:
  grpc:
    port: {{ $port }}
    service: readiness
  periodSeconds: {{ $root.Values.probes.readiness.periodSeconds }}
  failureThreshold: {{ $root.Values.probes.readiness.failureThreshold }}
livenessProbe:
  grpc:
    port: {{ $port }}
  periodSeconds: {{ $root.Values.probes.liveness.periodSeconds }}
  failureThreshold: {{ $root.Values.probes.liveness.failureThreshold }}
{{- end -}}
