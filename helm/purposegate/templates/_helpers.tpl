{{/*
Named templates of the purposegate chart.

The purposegate.sidecar.* templates read only .Values and .Release, so a
parent chart can include them with this chart's values:

  {{- $pg := dict "Values" .Values.purposegate "Release" .Release }}
  spec:
    template:
      metadata:
        annotations:
          {{- include "purposegate.sidecar.annotations" $pg | nindent 10 }}
      spec:
        containers:
          - name: my-store            # listens on 127.0.0.1:<store.port>
            ...
          {{- include "purposegate.sidecar.container" $pg | nindent 10 }}
        volumes:
          {{- include "purposegate.sidecar.volumes" $pg | nindent 10 }}

The sidecar they produce is the one `purposegate inject` adds (src/inject.rs):
keep the two in step.
*/}}

{{/* Chart name, for labels. */}}
{{- define "purposegate.name" -}}
{{- default "purposegate" .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix: the release name (+ "-purposegate" unless it has it). */}}
{{- define "purposegate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains "purposegate" .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-purposegate" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Standard labels. */}}
{{- define "purposegate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "purposegate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of the example Deployment. */}}
{{- define "purposegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "purposegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of the pods that carry the sidecar (Service, NetworkPolicy). */}}
{{- define "purposegate.workloadSelector" -}}
{{- if .Values.workloadSelector }}
{{- toYaml .Values.workloadSelector }}
{{- else }}
{{- include "purposegate.selectorLabels" . }}
{{- end }}
{{- end }}

{{/* Name of the ConfigMap with config.yaml, policy.yaml and consent.yaml. */}}
{{- define "purposegate.configMapName" -}}
{{- printf "%s-config" (include "purposegate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The sidecar image reference. */}}
{{- define "purposegate.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default "0.1.0") }}
{{- end }}

{{/* purposegate's config.yaml (README "Configuration"). */}}
{{- define "purposegate.configYaml" -}}
listen: "{{ .Values.proxy.listenHost }}:{{ .Values.proxy.port }}"
admin_listen: "{{ .Values.proxy.listenHost }}:{{ .Values.proxy.adminPort }}"
{{- if .Values.tls.enabled }}
tls:
  cert_file: /var/run/secrets/purposegate/tls/tls.crt
  key_file: /var/run/secrets/purposegate/tls/tls.key
  {{- if .Values.tls.clientAuth }}
  client_ca_file: /var/run/secrets/purposegate/tls/ca.crt
  client_auth: {{ .Values.tls.clientAuth | quote }}
  {{- end }}
{{- end }}
jwt:
  issuer: {{ .Values.config.jwt.issuer | quote }}
  audiences: {{ toJson .Values.config.jwt.audiences }}
  algorithms: {{ toJson .Values.config.jwt.algorithms }}
  jwks_file: /var/run/secrets/purposegate/jwt/jwks.json
  leeway_seconds: {{ int .Values.config.jwt.leewaySeconds }}
  max_lifetime_seconds: {{ int .Values.config.jwt.maxLifetimeSeconds }}
{{- with .Values.config.claims }}
claims: {{ toJson . }}
{{- end }}
policy_dir: policies
consent_file: policies/consent.yaml
upstreams:
  content:
    url: "http://127.0.0.1:{{ .Values.store.port }}"
    connect_timeout_ms: {{ int .Values.config.upstream.connectTimeoutMs }}
    response_timeout_ms: {{ int .Values.config.upstream.responseTimeoutMs }}
audit:
  path: /var/lib/purposegate/audit/audit.jsonl
  fsync: {{ .Values.config.audit.fsync | quote }}
shutdown_grace_seconds: {{ int .Values.config.shutdownGraceSeconds }}
reload_interval_ms: {{ int .Values.config.reloadIntervalMs }}
{{- with .Values.justifications }}
{{- if .enabled }}
justifications:
  url: {{ .url | quote }}
  {{- with .purposes }}
  purposes: {{ toJson . }}
  {{- end }}
  {{- if .bearerTokenSecret }}
  bearer_token_file: /var/run/secrets/purposegate/justifications/token
  {{- end }}
  {{- if .caSecret }}
  ca_file: /var/run/secrets/purposegate/justifications-ca/ca.crt
  {{- end }}
  allow_insecure_http: {{ .allowInsecureHttp | default false }}
  {{- /* Keys left out of the values keep the proxy's defaults. */}}
  {{- if hasKey . "cacheTtlSeconds" }}
  cache_ttl_seconds: {{ int .cacheTtlSeconds }}
  {{- end }}
  {{- if hasKey . "maxStalenessSeconds" }}
  max_staleness_seconds: {{ int .maxStalenessSeconds }}
  {{- end }}
  {{- if hasKey . "timeoutMs" }}
  timeout_ms: {{ int .timeoutMs }}
  {{- end }}
  {{- if hasKey . "failFastMs" }}
  fail_fast_ms: {{ int .failFastMs }}
  {{- end }}
  {{- if hasKey . "cacheMaxEntries" }}
  cache_max_entries: {{ int .cacheMaxEntries }}
  {{- end }}
{{- end }}
{{- end }}
{{- include "purposegate.budgetsYaml" . }}
{{- end }}

{{/* The budgets: section of config.yaml (docs/budgets.md), when enabled. */}}
{{- define "purposegate.budgetsYaml" -}}
{{- $b := .Values.budgets | default dict }}
{{- if $b.enabled }}
budgets:
  redis_url: {{ required "budgets.redisUrl is required when budgets.enabled" $b.redisUrl | quote }}
  {{- if and $b.secretName $b.passwordKey }}
  password_file: /var/run/secrets/purposegate/budgets/{{ $b.passwordKey }}
  {{- end }}
  {{- if and $b.secretName $b.hashKeyKey }}
  hash_key_file: /var/run/secrets/purposegate/budgets/{{ $b.hashKeyKey }}
  {{- end }}
  key_prefix: {{ $b.keyPrefix | default "purposegate:budget:" | quote }}
  timeout_ms: {{ int ($b.timeoutMs | default 50) }}
  connect_timeout_ms: {{ int ($b.connectTimeoutMs | default 1000) }}
  limits:
  {{- range $b.limits }}
    - purpose: {{ .purpose | quote }}
      {{- if hasKey . "distinctOwners" }}
      distinct_owners: {{ int .distinctOwners }}
      {{- end }}
      {{- if hasKey . "requests" }}
      requests: {{ int .requests }}
      {{- end }}
      window_seconds: {{ int .windowSeconds }}
  {{- end }}
{{- end }}
{{- end }}

{{/* The ConfigMap's data: config, policy and consent. */}}
{{- define "purposegate.configData" -}}
config.yaml: |
  {{- include "purposegate.configYaml" . | nindent 2 }}
policy.yaml: |
  {{- .Values.policy | default (.Files.Get "files/policy.yaml") | nindent 2 }}
consent.yaml: |
  {{- .Values.consent | default (.Files.Get "files/consent.yaml") | nindent 2 }}
{{- end }}

{{/* Pod-template annotations: a config change rolls the pods. */}}
{{- define "purposegate.sidecar.annotations" -}}
checksum/purposegate-config: {{ include "purposegate.configYaml" . | cat .Values.policy .Values.consent | sha256sum }}
{{- end }}

{{/* The sidecar container (one list item). */}}
{{- define "purposegate.sidecar.container" -}}
- name: purposegate
  image: {{ include "purposegate.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - serve
    - --config
    - /etc/purposegate/config.yaml
  ports:
    {{- include "purposegate.sidecar.ports" . | nindent 4 }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: pg-admin
    periodSeconds: 10
    timeoutSeconds: 2
    failureThreshold: 3
  readinessProbe:
    httpGet:
      path: /readyz
      port: pg-admin
    periodSeconds: 5
    timeoutSeconds: 2
    failureThreshold: 2
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: purposegate-config
      mountPath: /etc/purposegate
      readOnly: true
    - name: purposegate-audit
      mountPath: /var/lib/purposegate/audit
    - name: purposegate-jwt
      mountPath: /var/run/secrets/purposegate/jwt
      readOnly: true
    {{- if .Values.tls.enabled }}
    - name: purposegate-tls
      mountPath: /var/run/secrets/purposegate/tls
      readOnly: true
    {{- end }}
    {{- with .Values.justifications }}
    {{- if and .enabled .bearerTokenSecret }}
    - name: purposegate-justifications
      mountPath: /var/run/secrets/purposegate/justifications
      readOnly: true
    {{- end }}
    {{- if and .enabled .caSecret }}
    - name: purposegate-justifications-ca
      mountPath: /var/run/secrets/purposegate/justifications-ca
      readOnly: true
    {{- end }}
    {{- end }}
    {{- $b := .Values.budgets | default dict }}
    {{- if and $b.enabled $b.secretName }}
    - name: purposegate-budgets
      mountPath: /var/run/secrets/purposegate/budgets
      readOnly: true
    {{- end }}
{{- end }}

{{/* The sidecar's container ports (proxy and admin). */}}
{{- define "purposegate.sidecar.ports" -}}
- name: pg-proxy
  containerPort: {{ .Values.proxy.port }}
  protocol: TCP
- name: pg-admin
  containerPort: {{ .Values.proxy.adminPort }}
  protocol: TCP
{{- end }}

{{/* The sidecar's volumes (list items). */}}
{{- define "purposegate.sidecar.volumes" -}}
- name: purposegate-config
  configMap:
    name: {{ include "purposegate.configMapName" . }}
    items:
      - key: config.yaml
        path: config.yaml
      - key: policy.yaml
        path: policies/policy.yaml
      - key: consent.yaml
        path: policies/consent.yaml
{{- if .Values.audit.persistence.enabled }}
- name: purposegate-audit
  persistentVolumeClaim:
    claimName: {{ required "audit.persistence.existingClaim is required when audit.persistence.enabled" .Values.audit.persistence.existingClaim }}
{{- else }}
- name: purposegate-audit
  emptyDir:
    sizeLimit: {{ .Values.audit.sizeLimit }}
{{- end }}
- name: purposegate-jwt
  secret:
    secretName: {{ .Values.config.jwt.secretName }}
{{- if .Values.tls.enabled }}
- name: purposegate-tls
  secret:
    secretName: {{ .Values.tls.secretName }}
{{- end }}
{{- with .Values.justifications }}
{{- if and .enabled .bearerTokenSecret }}
- name: purposegate-justifications
  secret:
    secretName: {{ .bearerTokenSecret }}
    items:
      - key: {{ .bearerTokenKey | default "token" }}
        path: token
{{- end }}
{{- if and .enabled .caSecret }}
- name: purposegate-justifications-ca
  secret:
    secretName: {{ .caSecret }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end }}
{{- $b := .Values.budgets | default dict }}
{{- if and $b.enabled $b.secretName }}
- name: purposegate-budgets
  secret:
    secretName: {{ $b.secretName }}
{{- end }}
{{- end }}
