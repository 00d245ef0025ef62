{{/* Names: the chart's name, the release's full name (63 characters at most). */}}
{{- define "mcop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mcop.fullname" -}}
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

{{/* A component's object name: <fullname>-<component>, StatefulSet-safe (52 characters). */}}
{{- define "mcop.componentName" -}}
{{- $root := index . 0 }}{{- $component := index . 1 -}}
{{- printf "%s-%s" (include "mcop.fullname" $root | trunc (int (sub 51 (len $component)))  | trimSuffix "-") $component }}
{{- end }}

{{- define "mcop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object the chart renders; call with (list $ "component"). */}}
{{- define "mcop.labels" -}}
{{- $root := index . 0 }}{{- $component := index . 1 -}}
helm.sh/chart: {{ include "mcop.chart" $root }}
{{ include "mcop.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: montecarlo-operator
{{- end }}

{{/* Selector labels: stable across upgrades (never add the version here). */}}
{{- define "mcop.selectorLabels" -}}
{{- $root := index . 0 }}{{- $component := index . 1 -}}
app.kubernetes.io/name: {{ include "mcop.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ $component }}
{{- end }}

{{- define "mcop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mcop.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The one image of the project: the operator runs `mcop operator`, the workers `mcop worker`. */}}
{{- define "mcop.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "mcop.workerImage" -}}
{{- default (include "mcop.image" .) .Values.worker.image }}
{{- end }}

{{- define "mcop.workerImagePullPolicy" -}}
{{- default .Values.image.pullPolicy .Values.worker.imagePullPolicy }}
{{- end }}

{{/* Pod Security Standards "restricted": the container half (the pod half is in each pod). */}}
{{- define "mcop.restrictedContainerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end }}

{{/* Service host names of the bundled servers (fully qualified: the Secrets may be copied to other namespaces). */}}
{{- define "mcop.redisHost" -}}
{{- printf "%s.%s.svc" (include "mcop.componentName" (list . "redis")) .Release.Namespace }}
{{- end }}

{{- define "mcop.postgresqlHost" -}}
{{- printf "%s.%s.svc" (include "mcop.componentName" (list . "postgresql")) .Release.Namespace }}
{{- end }}

{{/*
A generated password kept across upgrades: the value already in the Secret when it exists
(lookup), else a new random one. `helm template` has no cluster, so it always generates.
Call with (list $ "secret-name" "key").
*/}}
{{- define "mcop.keptPassword" -}}
{{- $root := index . 0 }}{{- $name := index . 1 }}{{- $key := index . 2 -}}
{{- $existing := lookup "v1" "Secret" $root.Release.Namespace $name }}
{{- if and $existing $existing.data (hasKey $existing.data $key) }}
{{- index $existing.data $key | b64dec }}
{{- else }}
{{- randAlphaNum 32 }}
{{- end }}
{{- end }}
