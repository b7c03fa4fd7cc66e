{{/* The labels kustomize gives every object of deploy/ (never on selectors). */}}
{{- define "klutch-health.labels" -}}
app.kubernetes.io/name: klutch-health
app.kubernetes.io/part-of: klutch
{{- end }}

{{/* The variant's names: its RBAC prefix, its ServiceAccount, its ConfigMap, its ports. */}}
{{- define "klutch-health.sidecar" -}}
{{- if eq .Values.variant "sidecar" }}true{{ end -}}
{{- end }}
{{- define "klutch-health.prefix" -}}
{{- if include "klutch-health.sidecar" . }}klutch-health-sidecar{{ else }}klutch-health{{ end -}}
{{- end }}
{{- define "klutch-health.serviceAccount" -}}
{{- if include "klutch-health.sidecar" . }}provider-anynines{{ else }}klutch-health{{ end -}}
{{- end }}
{{- define "klutch-health.configMap" -}}
{{- if include "klutch-health.sidecar" . }}klutch-health-sidecar{{ else }}klutch-health-config{{ end -}}
{{- end }}
{{- define "klutch-health.port" -}}
{{- if include "klutch-health.sidecar" . }}8090{{ else }}8080{{ end -}}
{{- end }}
{{- define "klutch-health.publicPort" -}}
{{- if include "klutch-health.sidecar" . }}8091{{ else }}8081{{ end -}}
{{- end }}

{{/* The config.toml: the value, else the shipped one of the variant; its listeners checked against the ports. */}}
{{- define "klutch-health.config" -}}
{{- $config := .Values.config -}}
{{- if not $config -}}
{{- $config = .Files.Get (ternary "files/sidecar-config.toml" "files/config.toml" (eq .Values.variant "sidecar")) -}}
{{- end -}}
{{- $port := include "klutch-health.port" . -}}
{{- if not (regexMatch (printf "(?m)^listen *= *\"[^\"]*:%s\"" $port) $config) -}}
{{- fail (printf "config: its `listen` is not on port %s, where the %s variant's Service, probes and monitors reach it: set listen = \"[::]:%s\" in the config value" $port .Values.variant $port) -}}
{{- end -}}
{{- if .Values.publicListener.enabled -}}
{{- $public := include "klutch-health.publicPort" . -}}
{{- if not (regexMatch (printf "(?m)^public_listen *= *\"[^\"]*:%s\"" $public) $config) -}}
{{- fail (printf "config: its `public_listen` is not on port %s, where the Service klutch-health-public reaches it: set public_listen = \"[::]:%s\" in the config value, or publicListener.enabled=false" $public $public) -}}
{{- end -}}
{{- end -}}
{{- $config -}}
{{- end }}

{{/* The monitors' relabeling: control_plane first, klutch-health's own endpoint label kept, namespace and pod. */}}
{{- define "klutch-health.relabelings" -}}
relabelings:
  - action: replace
    targetLabel: control_plane
    replacement: {{ .Values.monitoring.controlPlane | quote }}
  - action: labeldrop
    regex: endpoint
  - sourceLabels: [__meta_kubernetes_namespace]
    targetLabel: namespace
  - sourceLabels: [__meta_kubernetes_pod_name]
    targetLabel: pod
{{- end }}

{{/* What both variants' klutch-health container has: image, args, the pod's identity. */}}
{{- define "klutch-health.container" -}}
image: {{ printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) | quote }}
{{- with .Values.image.pullPolicy }}
imagePullPolicy: {{ . }}
{{- end }}
args: ["--log-format", "json"]
env:
  - name: POD_NAME
    valueFrom: {fieldRef: {fieldPath: metadata.name}}
  - name: POD_NAMESPACE
    valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
  - name: POD_UID
    valueFrom: {fieldRef: {fieldPath: metadata.uid}}
{{- end }}
