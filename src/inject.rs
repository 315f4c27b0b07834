//! `purposegate inject`: adds the purposegate sidecar (container, volumes,
//! pod annotations) to Deployments and StatefulSets in a stream of Kubernetes
//! manifests, leaving every other document and field as it was. Injection is
//! idempotent: an existing `purposegate` container or `purposegate-*` volume
//! is replaced in place, never duplicated.
//!
//! The sidecar matches the Helm chart's `purposegate.sidecar.container`
//! template (helm/purposegate/templates/_helpers.tpl): same names, mounts,
//! probes and securityContext.

pub mod node;

use node::Node;

/// Name of the injected container.
pub const CONTAINER: &str = "purposegate";
/// Volume names the sidecar owns.
pub const VOL_CONFIG: &str = "purposegate-config";
pub const VOL_JWT: &str = "purposegate-jwt";
pub const VOL_TLS: &str = "purposegate-tls";
pub const VOL_AUDIT: &str = "purposegate-audit";
/// Pod-template annotation naming the store's (loopback-only) port.
pub const ANNOTATION_STORE_PORT: &str = "purposegate.io/store-port";
/// Pod-template annotation marking an injected workload.
pub const ANNOTATION_INJECTED: &str = "purposegate.io/injected";

/// Which workloads to inject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Every Deployment and StatefulSet.
    All,
    /// Deployments/StatefulSets with one of these `metadata.name`s.
    Names(Vec<String>),
}

/// What the sidecar looks like.
#[derive(Clone, Debug)]
pub struct InjectOptions {
    pub selection: Selection,
    pub image: String,
    /// ConfigMap with `config.yaml`, `policy.yaml` and `consent.yaml`.
    pub config_map: String,
    /// Secret with `jwks.json` (JWT verification keys); `None`: not mounted.
    pub jwt_secret: Option<String>,
    /// Secret with `tls.crt`, `tls.key` (and `ca.crt`); `None`: not mounted.
    pub tls_secret: Option<String>,
    /// PersistentVolumeClaim for the audit log; `None`: an emptyDir.
    pub audit_claim: Option<String>,
    pub proxy_port: u16,
    pub admin_port: u16,
    /// The store's own port; the store must listen on 127.0.0.1 only.
    pub store_port: u16,
}

impl Default for InjectOptions {
    fn default() -> Self {
        InjectOptions {
            selection: Selection::All,
            image: format!(
                "ghcr.io/purposegate/purposegate:{}",
                env!("CARGO_PKG_VERSION")
            ),
            config_map: "purposegate-config".into(),
            jwt_secret: Some("purposegate-jwt".into()),
            tls_secret: None,
            audit_claim: None,
            proxy_port: 8443,
            admin_port: 9100,
            store_port: 9090,
        }
    }
}

/// Why injection failed.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("cannot parse the manifests: {0}")]
    Parse(String),
    #[error("cannot write the manifests: {0}")]
    Write(String),
    #[error("{kind} {name}: {message}")]
    Workload {
        kind: String,
        name: String,
        message: String,
    },
    #[error("no Deployment or StatefulSet named {0}")]
    NotFound(String),
    #[error("invalid options: {0}")]
    Options(String),
}

/// The result: the rewritten manifests and what was injected.
#[derive(Debug)]
pub struct Injected {
    pub yaml: String,
    /// `Kind/name` of every injected workload, in input order.
    pub workloads: Vec<String>,
    /// Things the user should check (printed on stderr by the CLI).
    pub warnings: Vec<String>,
}

/// Injects the sidecar into the selected workloads of a multi-document YAML
/// stream. Empty documents are dropped; everything else is written back.
pub fn inject_str(input: &str, opts: &InjectOptions) -> Result<Injected, InjectError> {
    check_options(opts)?;
    let mut docs: Vec<Node> = serde_saphyr::from_multiple_with_options(input, parse_options())
        .map_err(|e| InjectError::Parse(e.to_string()))?;
    let mut out = Injected {
        yaml: String::new(),
        workloads: Vec::new(),
        warnings: Vec::new(),
    };
    for doc in &mut docs {
        visit(doc, opts, &mut out)?;
    }
    if let Selection::Names(names) = &opts.selection {
        for name in names {
            if !out
                .workloads
                .iter()
                .any(|w| w.split('/').nth(1) == Some(name))
            {
                return Err(InjectError::NotFound(name.clone()));
            }
        }
    }
    out.yaml = write_docs(&docs)?;
    Ok(out)
}

/// Reads scalars the way Kubernetes (YAML 1.1 via go-yaml) does: `yes`/`on`
/// are booleans and `0644` is octal (420), so the output means the same.
fn parse_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        legacy_octal_numbers: true
    }
}

fn check_options(opts: &InjectOptions) -> Result<(), InjectError> {
    let ports = [opts.proxy_port, opts.admin_port, opts.store_port];
    if ports.contains(&0) {
        return Err(InjectError::Options("ports must not be 0".into()));
    }
    if ports[0] == ports[1] || ports[0] == ports[2] || ports[1] == ports[2] {
        return Err(InjectError::Options(
            "proxy, admin and store ports must differ".into(),
        ));
    }
    if opts.image.trim().is_empty() || opts.config_map.trim().is_empty() {
        return Err(InjectError::Options(
            "image and config map must not be empty".into(),
        ));
    }
    Ok(())
}

/// Serializes documents separated by `---`, two-space indentation, lists
/// indented under their key like `kubectl` writes them.
fn write_docs(docs: &[Node]) -> Result<String, InjectError> {
    let options = serde_saphyr::ser_options! {
        indent_step: 2,
        compact_list_indent: false
    };
    let mut yaml = serde_saphyr::to_string_multiple_with_options(docs, options)
        .map_err(|e| InjectError::Write(e.to_string()))?;
    // A trailing block scalar is written without its final line break.
    if !yaml.is_empty() && !yaml.ends_with('\n') {
        yaml.push('\n');
    }
    Ok(yaml)
}

/// Injects a workload document, or each item of a `List`.
fn visit(doc: &mut Node, opts: &InjectOptions, out: &mut Injected) -> Result<(), InjectError> {
    let kind = doc
        .get("kind")
        .and_then(Node::as_str)
        .unwrap_or("")
        .to_string();
    if kind == "List" || kind.ends_with("List") {
        if let Some(Node::Seq(items)) = doc.get_mut("items") {
            for item in items {
                visit(item, opts, out)?;
            }
        }
        return Ok(());
    }
    if kind != "Deployment" && kind != "StatefulSet" {
        return Ok(());
    }
    let name = doc
        .get("metadata")
        .and_then(|m| m.name())
        .unwrap_or("")
        .to_string();
    let selected = match &opts.selection {
        Selection::All => true,
        Selection::Names(names) => names.contains(&name),
    };
    if !selected {
        return Ok(());
    }
    let err = |message: String| InjectError::Workload {
        kind: kind.clone(),
        name: name.clone(),
        message,
    };
    let pod = doc
        .get_mut("spec")
        .and_then(|s| s.get_mut("template"))
        .ok_or_else(|| err("has no spec.template".into()))?;
    inject_pod_template(pod, opts).map_err(err)?;
    if let Some(w) = store_port_warning(pod, opts) {
        out.warnings.push(format!("{kind} {name}: {w}"));
    }
    out.workloads.push(format!("{kind}/{name}"));
    Ok(())
}

/// Adds annotations, container and volumes to a pod template.
fn inject_pod_template(pod: &mut Node, opts: &InjectOptions) -> Result<(), String> {
    let meta = pod
        .entry("metadata", Node::Map(Vec::new()))
        .ok_or("spec.template is not a map")?;
    let annotations = meta
        .entry("annotations", Node::Map(Vec::new()))
        .ok_or("spec.template.metadata is not a map")?;
    set_key(annotations, ANNOTATION_INJECTED, str_node("true"))?;
    set_key(
        annotations,
        ANNOTATION_STORE_PORT,
        str_node(&opts.store_port.to_string()),
    )?;
    let spec = pod.get_mut("spec").ok_or("spec.template has no spec")?;
    let containers = spec
        .entry("containers", Node::Seq(Vec::new()))
        .ok_or("spec.template.spec is not a map")?;
    let Node::Seq(list) = containers else {
        return Err("spec.template.spec.containers is not a list".into());
    };
    check_port_clash(list, opts)?;
    upsert_named(list, sidecar_container(opts)?);
    let volumes = spec
        .entry("volumes", Node::Seq(Vec::new()))
        .ok_or("spec.template.spec is not a map")?;
    let Node::Seq(list) = volumes else {
        return Err("spec.template.spec.volumes is not a list".into());
    };
    // Volumes of an earlier injection that these options no longer want go.
    list.retain(|v| !v.name().is_some_and(|n| n.starts_with("purposegate-")));
    for volume in sidecar_volumes(opts)? {
        upsert_named(list, volume);
    }
    Ok(())
}

fn str_node(s: &str) -> Node {
    Node::Str(s.to_string())
}

/// Sets `key` in a map, replacing an existing value in place.
fn set_key(map: &mut Node, key: &str, value: Node) -> Result<(), String> {
    let slot = map
        .entry(key, Node::Null)
        .ok_or_else(|| format!("cannot set {key}: not a map"))?;
    *slot = value;
    Ok(())
}

/// Replaces the list item with the same `name`, or appends.
fn upsert_named(list: &mut Vec<Node>, item: Node) {
    match list.iter_mut().find(|n| n.name() == item.name()) {
        Some(existing) => *existing = item,
        None => list.push(item),
    }
}

/// Errors when another container already declares the proxy or admin port
/// (they share the pod's network namespace).
fn check_port_clash(containers: &[Node], opts: &InjectOptions) -> Result<(), String> {
    for c in containers.iter().filter(|c| c.name() != Some(CONTAINER)) {
        for port in declared_ports(c) {
            if port == i64::from(opts.proxy_port) || port == i64::from(opts.admin_port) {
                return Err(format!(
                    "container {} already uses port {port}; choose other --proxy-port/--admin-port",
                    c.name().unwrap_or("?")
                ));
            }
        }
    }
    Ok(())
}

fn declared_ports(container: &Node) -> Vec<i64> {
    match container.get("ports") {
        Some(Node::Seq(ports)) => ports
            .iter()
            .filter_map(|p| p.get("containerPort").and_then(Node::as_i64))
            .collect(),
        _ => Vec::new(),
    }
}

/// A warning when no store container declares the store port (the sidecar's
/// config must point its upstream at `http://127.0.0.1:<store-port>`).
fn store_port_warning(pod: &Node, opts: &InjectOptions) -> Option<String> {
    let Some(Node::Seq(containers)) = pod.get("spec").and_then(|s| s.get("containers")) else {
        return None;
    };
    let declared = containers
        .iter()
        .filter(|c| c.name() != Some(CONTAINER))
        .any(|c| declared_ports(c).contains(&i64::from(opts.store_port)));
    (!declared).then(|| {
        format!(
            "no container declares containerPort {}; check --store-port and that the store listens on 127.0.0.1",
            opts.store_port
        )
    })
}

/// JSON string syntax is valid YAML, so values are embedded quoted that way.
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn parse_fragment(yaml: &str) -> Result<Node, String> {
    serde_saphyr::from_str(yaml).map_err(|e| format!("internal sidecar template: {e}"))
}

/// The sidecar container (keep in step with `purposegate.sidecar.container`).
pub fn sidecar_container(opts: &InjectOptions) -> Result<Node, String> {
    let mut mounts = String::from(
        "  - {name: purposegate-config, mountPath: /etc/purposegate, readOnly: true}\n  - {name: purposegate-audit, mountPath: /var/lib/purposegate/audit}\n",
    );
    if opts.jwt_secret.is_some() {
        mounts.push_str(
            "  - {name: purposegate-jwt, mountPath: /var/run/secrets/purposegate/jwt, readOnly: true}\n",
        );
    }
    if opts.tls_secret.is_some() {
        mounts.push_str(
            "  - {name: purposegate-tls, mountPath: /var/run/secrets/purposegate/tls, readOnly: true}\n",
        );
    }
    let yaml = format!(
        r#"name: {CONTAINER}
image: {image}
imagePullPolicy: IfNotPresent
args: ["serve", "--config", "/etc/purposegate/config.yaml"]
ports:
  - {{name: pg-proxy, containerPort: {proxy}, protocol: TCP}}
  - {{name: pg-admin, containerPort: {admin}, protocol: TCP}}
livenessProbe:
  httpGet: {{path: /healthz, port: pg-admin}}
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
readinessProbe:
  httpGet: {{path: /readyz, port: pg-admin}}
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 2
resources:
  requests: {{cpu: 50m, memory: 64Mi}}
  limits: {{cpu: "1", memory: 256Mi}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {{drop: [ALL]}}
  seccompProfile: {{type: RuntimeDefault}}
volumeMounts:
{mounts}"#,
        image = q(&opts.image),
        proxy = opts.proxy_port,
        admin = opts.admin_port,
    );
    parse_fragment(&yaml)
}

/// The sidecar's volumes (keep in step with `purposegate.sidecar.volumes`).
pub fn sidecar_volumes(opts: &InjectOptions) -> Result<Vec<Node>, String> {
    let mut yaml = format!(
        r#"- name: {VOL_CONFIG}
  configMap:
    name: {cm}
    items:
      - {{key: config.yaml, path: config.yaml}}
      - {{key: policy.yaml, path: policies/policy.yaml}}
      - {{key: consent.yaml, path: policies/consent.yaml}}
"#,
        cm = q(&opts.config_map)
    );
    match &opts.audit_claim {
        Some(claim) => yaml.push_str(&format!(
            "- {{name: {VOL_AUDIT}, persistentVolumeClaim: {{claimName: {}}}}}\n",
            q(claim)
        )),
        None => yaml.push_str(&format!(
            "- {{name: {VOL_AUDIT}, emptyDir: {{sizeLimit: 1Gi}}}}\n"
        )),
    }
    if let Some(secret) = &opts.jwt_secret {
        yaml.push_str(&format!(
            "- {{name: {VOL_JWT}, secret: {{secretName: {}}}}}\n",
            q(secret)
        ));
    }
    if let Some(secret) = &opts.tls_secret {
        yaml.push_str(&format!(
            "- {{name: {VOL_TLS}, secret: {{secretName: {}}}}}\n",
            q(secret)
        ));
    }
    match parse_fragment(&yaml)? {
        Node::Seq(items) => Ok(items),
        _ => Err("internal sidecar template: volumes is not a list".into()),
    }
}

#[cfg(test)]
mod tests;
