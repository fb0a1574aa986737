{{/*
Names. The prefix is the release name when it already contains the chart name ("outrigger"), so
the documented install (`helm install outrigger ...`) produces exactly the operator's built-in
default names. Whatever the prefix, deployment.yaml passes every name to the operator as a flag.
*/}}
{{- define "outrigger.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "outrigger.fullname" -}}
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

{{/* The operator Deployment (and its pods' app.kubernetes.io/name). */}}
{{- define "outrigger.operatorName" -}}
{{- printf "%s-operator" (include "outrigger.fullname" .) -}}
{{- end -}}

{{/* --service-name: the webhook Service, also the serving certificate's DNS names. */}}
{{- define "outrigger.serviceName" -}}
{{- printf "%s-webhook" (include "outrigger.fullname" .) -}}
{{- end -}}

{{/* --secret-name: the webhook TLS Secret (self-managed by the operator, or cert-manager's). */}}
{{- define "outrigger.secretName" -}}
{{- printf "%s-webhook-tls" (include "outrigger.fullname" .) -}}
{{- end -}}

{{/* --mutating-webhook-name */}}
{{- define "outrigger.mutatingWebhookName" -}}
{{- printf "%s-sidecar-injector" (include "outrigger.fullname" .) -}}
{{- end -}}

{{/* --validating-webhook-name */}}
{{- define "outrigger.validatingWebhookName" -}}
{{- printf "%s-runtimeconfig-validator" (include "outrigger.fullname" .) -}}
{{- end -}}

{{/* --mesh-ca-secret: the mesh CA (self-managed by the operator, or supplied). */}}
{{- define "outrigger.meshCaSecretName" -}}
{{- default (printf "%s-mesh-ca" (include "outrigger.fullname" .)) .Values.identity.ca.secretName -}}
{{- end -}}

{{/* --lease-name */}}
{{- define "outrigger.leaseName" -}}
{{- printf "%s-operator" (include "outrigger.fullname" .) -}}
{{- end -}}

{{- define "outrigger.certificateName" -}}
{{- printf "%s-webhook" (include "outrigger.fullname" .) -}}
{{- end -}}

{{- define "outrigger.selfSignedIssuerName" -}}
{{- printf "%s-selfsigned" (include "outrigger.fullname" .) -}}
{{- end -}}

{{- define "outrigger.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "outrigger.operatorName" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Where the operator reads tls.crt and tls.key (--cert-dir); a volume is mounted here. */}}
{{- define "outrigger.certDir" -}}
/tmp/outrigger-webhook-certs
{{- end -}}

{{/* "true" when leader election is on: forced by the value, else exactly when replicas > 1. */}}
{{- define "outrigger.leaderElection" -}}
{{- if kindIs "bool" .Values.operator.leaderElection.enabled -}}
{{- .Values.operator.leaderElection.enabled -}}
{{- else -}}
{{- gt (int .Values.operator.replicas) 1 -}}
{{- end -}}
{{- end -}}

{{/* --cert-mode: the chart's cert-manager mode is the operator's external mode. */}}
{{- define "outrigger.operatorCertMode" -}}
{{- if eq .Values.webhook.certMode "cert-manager" -}}external{{- else -}}self-managed{{- end -}}
{{- end -}}

{{/* An image reference from {registry, repository, tag, digest}; the tag defaults to appVersion. */}}
{{- define "outrigger.image" -}}
{{- $image := .image -}}
{{- $repo := $image.repository -}}
{{- if $image.registry -}}
{{- $repo = printf "%s/%s" $image.registry $image.repository -}}
{{- end -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $repo $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .root.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object (with the selector labels below). */}}
{{- define "outrigger.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/part-of: {{ include "outrigger.name" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector of the operator pods (the Deployment, Service, PDB and spread constraints). */}}
{{- define "outrigger.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "outrigger.name" . }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "outrigger.operatorLabels" -}}
{{ include "outrigger.labels" . }}
{{ include "outrigger.operatorSelectorLabels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Namespaces whose pods never reach the injector. */}}
{{- define "outrigger.excludedNamespaces" -}}
{{- $ns := list "kube-system" .Release.Namespace -}}
{{- range .Values.webhook.excludeNamespaces -}}
{{- $ns = append $ns . -}}
{{- end -}}
{{- toJson (uniq $ns) -}}
{{- end -}}
