{{/* The chart's name, or nameOverride. */}}
{{- define "sovereign.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name: <release>-<chart>, or the release name alone when it already holds the
chart's name. Cluster-scoped objects (ClusterRoles) carry it too, so two releases never collide.
*/}}
{{- define "sovereign.fullname" -}}
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

{{- define "sovereign.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "sovereign.commonLabels" -}}
helm.sh/chart: {{ include "sovereign.chart" . }}
app.kubernetes.io/name: {{ include "sovereign.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sovereign
sovereign.ai/mode: {{ .Values.mode }}
{{- end }}

{{/* Labels on the operator's objects. */}}
{{- define "sovereign.labels" -}}
{{ include "sovereign.commonLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels on the attestation agent's objects. */}}
{{- define "sovereign.agentLabels" -}}
{{ include "sovereign.commonLabels" . }}
app.kubernetes.io/component: attestation-agent
{{- end }}

{{/* The operator pods' selector. */}}
{{- define "sovereign.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sovereign.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "sovereign.agentSelectorLabels" -}}
app.kubernetes.io/name: {{ include "sovereign.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: attestation-agent
{{- end }}

{{- define "sovereign.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sovereign.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository@digest, or repository:tag (tag default: the chart's appVersion). */}}
{{- define "sovereign.imageRef" -}}
{{- $image := .image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default .appVersion $image.tag) }}
{{- end }}
{{- end }}

{{- define "sovereign.image" -}}
{{- include "sovereign.imageRef" (dict "image" .Values.image "appVersion" .Chart.AppVersion) }}
{{- end }}

{{- define "sovereign.agentImage" -}}
{{- $agent := .Values.attestationAgent.image }}
{{- $image := dict "repository" (default .Values.image.repository $agent.repository) "tag" (default .Values.image.tag $agent.tag) "digest" (ternary $agent.digest .Values.image.digest (not (empty $agent.repository))) }}
{{- include "sovereign.imageRef" (dict "image" $image "appVersion" .Chart.AppVersion) }}
{{- end }}

{{- define "sovereign.replicas" -}}
{{- if kindIs "invalid" .Values.replicaCount }}
{{- ternary 2 1 (eq .Values.mode "hub") }}
{{- else }}
{{- .Values.replicaCount }}
{{- end }}
{{- end }}

{{/* The Lease the operator elects its leader on (operator/config.ts computes the same default). */}}
{{- define "sovereign.leaseName" -}}
{{- if .Values.leaderElection.id }}
{{- .Values.leaderElection.id }}
{{- else if eq .Values.mode "hub" }}
{{- print "sovereign-hub" }}
{{- else }}
{{- printf "sovereign-member-%s" .Values.member.region }}
{{- end }}
{{- end }}

{{/* True (non-empty) when the member runs its attestation gate. */}}
{{- define "sovereign.gateOn" -}}
{{- if and (eq .Values.mode "member") (not (empty .Values.member.attestation.policy)) (not .Values.insecureSkipAttestation) }}true{{ end }}
{{- end }}

{{/* The port in nats.url, or 4222 (NATS's default). */}}
{{- define "sovereign.natsPort" -}}
{{- $hostport := regexReplaceAll "^[a-z]+://([^/@]*@)?([^/]+).*$" .Values.nats.url "${2}" }}
{{- $port := regexFind "[0-9]+$" (regexFind ":[0-9]+$" $hostport) }}
{{- default "4222" $port }}
{{- end }}

{{/* Learner pods' namespace: fixed in the operator (operator/member/work-controller.ts LEARNER_NAMESPACE). */}}
{{- define "sovereign.learnerNamespace" -}}
sovereign-learners
{{- end }}
