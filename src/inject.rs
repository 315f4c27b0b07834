//! `purposegate inject`: adds the purposegate sidecar (container, volumes,
//! pod annotations) to Deployments and StatefulSets in a stream of Kubernetes
//! manifests, leaving every other document and field as it was. Injection is
//! idempotent: an existing `purposegate` container or `purposegate-*` volume
//! is replaced in place, never duplicated.
//!
//! The sidecar matches the Helm chart's `purposegate.sidecar.container`
//! template (helm/purposegate/templates/_helpers.tpl): same names, mounts,
//! probes and securityContext.
//!
//! The ports are the mounted config's: when the ConfigMap is in the input,
//! its `config.yaml` gives them and takes the ports asked for
//! (`config_map`); otherwise the ports asked for (or the defaults) are used
//! and a warning says the ConfigMap must agree. An audit claim is refused
//! where replicas would share it.

pub mod config_map;
pub mod node;

pub use config_map::{Ports, DEFAULT_ADMIN_PORT, DEFAULT_PROXY_PORT, DEFAULT_STORE_PORT};
use node::Node;

/// Name of the injected container.
pub const CONTAINER: &str = "purposegate";
/// Volume names the sidecar owns.
pub const VOL_CONFIG: &str = "purposegate-config";
pub const VOL_JWT: &str = "purposegate-jwt";
pub const VOL_TLS: &str = "purposegate-tls";
pub const VOL_AUDIT: &str = "purposegate-audit";
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
    /// PersistentVolumeClaim for the audit log; `None`: an emptyDir (or a
    /// StatefulSet's own `purposegate-audit` volumeClaimTemplate).
    pub audit_claim: Option<String>,
    /// The proxy (client-facing) port; `None`: the ConfigMap's, else 8443.
    pub proxy_port: Option<u16>,
    /// The admin port; `None`: the ConfigMap's, else 9100.
    pub admin_port: Option<u16>,
    /// The store's own port (it must listen on 127.0.0.1 only); `None`: the
    /// ConfigMap's upstream, else 9090.
    pub store_port: Option<u16>,
}

impl InjectOptions {
    fn wanted(&self) -> config_map::Wanted {
        config_map::Wanted {
            proxy: self.proxy_port,
            admin: self.admin_port,
            store: self.store_port,
        }
    }

    /// The ports the sidecar is given: asked for, else the defaults.
    fn ports(&self) -> Ports {
        self.wanted().or_defaults()
    }
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
            proxy_port: None,
            admin_port: None,
            store_port: None,
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
    /// Changes made to the ConfigMap's `config.yaml` (ports).
    pub changes: Vec<String>,
}

/// Injects the sidecar into the selected workloads of a multi-document YAML
/// stream. Empty documents are dropped; everything else is written back.
pub fn inject_str(input: &str, opts: &InjectOptions) -> Result<Injected, InjectError> {
    check_names(opts)?;
    let mut docs: Vec<Node> = serde_saphyr::from_multiple_with_options(input, parse_options())
        .map_err(|e| InjectError::Parse(e.to_string()))?;
    let mut out = Injected {
        yaml: String::new(),
        workloads: Vec::new(),
        warnings: Vec::new(),
        changes: Vec::new(),
    };
    let ports = configure_ports(&mut docs, opts, &mut out)?;
    check_ports(ports)?;
    let opts = &InjectOptions {
        proxy_port: Some(ports.proxy),
        admin_port: Some(ports.admin),
        store_port: ports.store,
        ..opts.clone()
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

/// The sidecar's ports: from the ConfigMap in the input (which takes the
/// ports asked for), else as asked for, with a warning that the ConfigMap
/// must say the same.
fn configure_ports(
    docs: &mut [Node],
    opts: &InjectOptions,
    out: &mut Injected,
) -> Result<Ports, InjectError> {
    let mut maps = Vec::new();
    config_map::find(docs, &opts.config_map, &mut maps);
    let cm_err = |message: String| InjectError::Workload {
        kind: "ConfigMap".into(),
        name: opts.config_map.clone(),
        message,
    };
    let mut found: Option<Ports> = None;
    for cm in maps {
        let (ports, changes) = config_map::apply(cm, opts.wanted()).map_err(cm_err)?;
        if found.is_some_and(|f| f != ports) {
            return Err(cm_err(
                "the ConfigMaps of this name in the input say different ports; inject them one at a time".into(),
            ));
        }
        found = Some(ports);
        for c in changes {
            out.changes
                .push(format!("ConfigMap {}: config.yaml {c}", opts.config_map));
        }
    }
    if let Some(ports) = found {
        return Ok(ports);
    }
    let w = opts.wanted();
    let ports = opts.ports();
    let mut says = Vec::new();
    if w.proxy.is_some() || w.admin.is_some() {
        says.push(format!(
            "listen: \"0.0.0.0:{}\" and admin_listen: \"0.0.0.0:{}\"",
            ports.proxy, ports.admin
        ));
    }
    if let Some(store) = w.store {
        says.push(format!("an upstream url of http://127.0.0.1:{store}"));
    }
    if !says.is_empty() {
        out.warnings.push(format!(
            "ConfigMap {} is not in the input, so its config.yaml was not changed: it must say {} (the sidecar listens and forwards where config.yaml says); give the ConfigMap in the same input to have inject set them",
            opts.config_map,
            says.join(" and ")
        ));
    }
    Ok(ports)
}

fn check_names(opts: &InjectOptions) -> Result<(), InjectError> {
    if opts.image.trim().is_empty() || opts.config_map.trim().is_empty() {
        return Err(InjectError::Options(
            "image and config map must not be empty".into(),
        ));
    }
    let w = opts.wanted();
    if [w.proxy, w.admin, w.store].contains(&Some(0)) {
        return Err(InjectError::Options("ports must not be 0".into()));
    }
    Ok(())
}

/// The ports the sidecar ends up with must differ.
fn check_ports(p: Ports) -> Result<(), InjectError> {
    let store = p.store.filter(|s| *s == p.proxy || *s == p.admin);
    if p.proxy == p.admin || store.is_some() {
        return Err(InjectError::Options(
            "proxy, admin and store ports must differ".into(),
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
    let claim = audit_volume(doc, &kind, opts, &mut out.warnings).map_err(err)?;
    let pod = doc
        .get_mut("spec")
        .and_then(|s| s.get_mut("template"))
        .ok_or_else(|| err("has no spec.template".into()))?;
    inject_pod_template(pod, opts, claim).map_err(err)?;
    if let Some(w) = store_port_warning(pod, opts) {
        out.warnings.push(format!("{kind} {name}: {w}"));
    }
    out.workloads.push(format!("{kind}/{name}"));
    Ok(())
}

/// Where the audit log lives in a workload's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuditVolume {
    /// A pod volume: the claim of `--audit-claim`, else an emptyDir.
    PodVolume,
    /// The StatefulSet's own `purposegate-audit` volumeClaimTemplate: one
    /// claim per replica, so no pod volume of that name.
    ClaimTemplate,
}

/// Decides the audit volume, refusing one claim shared by several replicas:
/// two writers would interleave one audit file (or, with ReadWriteOnce,
/// the second pod never starts).
fn audit_volume(
    doc: &Node,
    kind: &str,
    opts: &InjectOptions,
    warnings: &mut Vec<String>,
) -> Result<AuditVolume, String> {
    let spec = doc.get("spec");
    let replicas = match spec.and_then(|s| s.get("replicas")) {
        None | Some(Node::Null) => 1,
        Some(n) => n.as_i64().ok_or("spec.replicas is not a number")?,
    };
    let template = spec
        .and_then(|s| s.get("volumeClaimTemplates"))
        .is_some_and(|t| match t {
            Node::Seq(items) => items
                .iter()
                .any(|c| c.get("metadata").and_then(Node::name) == Some(VOL_AUDIT)),
            _ => false,
        });
    if template && kind == "StatefulSet" {
        if opts.audit_claim.is_some() {
            return Err(format!(
                "has a volumeClaimTemplate named {VOL_AUDIT}, which already gives each replica its audit volume; leave out --audit-claim"
            ));
        }
        return Ok(AuditVolume::ClaimTemplate);
    }
    let Some(claim) = &opts.audit_claim else {
        return Ok(AuditVolume::PodVolume);
    };
    if replicas > 1 {
        let instead = if kind == "StatefulSet" {
            format!("add a volumeClaimTemplates entry named {VOL_AUDIT} to the StatefulSet instead (one claim per replica; inject then mounts it) and leave out --audit-claim")
        } else {
            format!("run the store as a StatefulSet with a volumeClaimTemplates entry named {VOL_AUDIT} (one claim per replica), or use replicas: 1")
        };
        return Err(format!(
            "has {replicas} replicas, which would all mount the one PersistentVolumeClaim {claim} and write one audit log; {instead}"
        ));
    }
    if kind == "Deployment" {
        let recreate = spec
            .and_then(|s| s.get("strategy"))
            .and_then(|s| s.get("type"))
            .and_then(Node::as_str)
            == Some("Recreate");
        let name = doc.get("metadata").and_then(Node::name).unwrap_or("");
        if !recreate {
            warnings.push(format!(
                "Deployment {name}: a rolling update starts the new pod while the old one still holds the claim {claim} and its audit log: set spec.strategy.type: Recreate"
            ));
        }
        warnings.push(format!(
            "Deployment {name}: the claim {claim} is for one replica; scaling up (or an autoscaler) would share it — use a StatefulSet to scale"
        ));
    }
    Ok(AuditVolume::PodVolume)
}

/// Adds annotations, container and volumes to a pod template.
fn inject_pod_template(
    pod: &mut Node,
    opts: &InjectOptions,
    audit: AuditVolume,
) -> Result<(), String> {
    let meta = pod
        .entry("metadata", Node::Map(Vec::new()))
        .ok_or("spec.template is not a map")?;
    let annotations = meta
        .entry("annotations", Node::Map(Vec::new()))
        .ok_or("spec.template.metadata is not a map")?;
    set_key(annotations, ANNOTATION_INJECTED, str_node("true"))?;
    // Written by earlier versions, which did not forward to it.
    if let Node::Map(entries) = annotations {
        entries.retain(|(k, _)| k.as_str() != Some("purposegate.io/store-port"));
    }
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
        if audit == AuditVolume::ClaimTemplate && volume.name() == Some(VOL_AUDIT) {
            continue;
        }
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
    let ports = opts.ports();
    for c in containers.iter().filter(|c| c.name() != Some(CONTAINER)) {
        for port in declared_ports(c) {
            if port == i64::from(ports.proxy) || port == i64::from(ports.admin) {
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

/// A warning when no store container declares the port the sidecar
/// forwards to (its config's upstream `http://127.0.0.1:<port>`).
fn store_port_warning(pod: &Node, opts: &InjectOptions) -> Option<String> {
    let store = opts.store_port?;
    let Some(Node::Seq(containers)) = pod.get("spec").and_then(|s| s.get("containers")) else {
        return None;
    };
    let declared = containers
        .iter()
        .filter(|c| c.name() != Some(CONTAINER))
        .any(|c| declared_ports(c).contains(&i64::from(store)));
    (!declared).then(|| {
        format!(
            "no container declares containerPort {store}, where the sidecar forwards; check --store-port (or the config's upstream url) and that the store listens on 127.0.0.1"
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
        proxy = opts.ports().proxy,
        admin = opts.ports().admin,
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
