//! Unit tests of `inject`: selection, idempotence, untouched documents,
//! scalar round trips, option and workload errors.

use super::*;

const EXAMPLE: &str = include_str!("../../examples/k8s/store-deployment.yaml");

fn docs(yaml: &str) -> Vec<Node> {
    serde_saphyr::from_multiple(yaml).unwrap()
}

fn opts(selection: Selection) -> InjectOptions {
    InjectOptions {
        selection,
        ..InjectOptions::default()
    }
}

fn containers(doc: &Node) -> Vec<String> {
    match doc
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("spec"))
        .and_then(|s| s.get("containers"))
    {
        Some(Node::Seq(cs)) => cs
            .iter()
            .filter_map(|c| c.name().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

fn volumes(doc: &Node) -> Vec<String> {
    match doc
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("spec"))
        .and_then(|s| s.get("volumes"))
    {
        Some(Node::Seq(vs)) => vs
            .iter()
            .filter_map(|v| v.name().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn all_injects_every_deployment_and_statefulset() {
    let out = inject_str(EXAMPLE, &opts(Selection::All)).unwrap();
    assert_eq!(
        out.workloads,
        vec!["Deployment/content-store", "StatefulSet/file-store"]
    );
    let d = docs(&out.yaml);
    assert_eq!(d.len(), 5);
    assert_eq!(containers(&d[1]), vec!["store", "purposegate"]);
    assert_eq!(containers(&d[2]), vec!["store", "purposegate"]);
    assert_eq!(
        volumes(&d[1]),
        vec!["purposegate-config", "purposegate-audit", "purposegate-jwt"]
    );
}

#[test]
fn other_documents_and_fields_are_untouched() {
    let before = docs(EXAMPLE);
    let out = inject_str(EXAMPLE, &opts(Selection::Names(vec!["file-store".into()]))).unwrap();
    let after = docs(&out.yaml);
    // Namespace, Deployment (not selected), Service and ConfigMap are equal.
    for i in [0, 1, 3, 4] {
        assert_eq!(before[i], after[i], "document {i} changed");
    }
    assert_ne!(before[2], after[2]);
    // Within the injected one, everything but the pod template is the same.
    for key in ["apiVersion", "kind", "metadata"] {
        assert_eq!(before[2].get(key), after[2].get(key));
    }
    assert_eq!(
        before[2].get("spec").unwrap().get("volumeClaimTemplates"),
        after[2].get("spec").unwrap().get("volumeClaimTemplates")
    );
}

#[test]
fn ambiguous_strings_stay_strings() {
    let out = inject_str(EXAMPLE, &opts(Selection::All)).unwrap();
    let after = docs(&out.yaml);
    let data = after[4].get("data").unwrap();
    assert_eq!(data.get("enabled"), Some(&Node::Str("true".into())));
    assert_eq!(data.get("count"), Some(&Node::Str("10".into())));
    assert_eq!(
        data.get("multi"),
        Some(&Node::Str("line one\nline two: with colon\n".into()))
    );
    assert!(out.yaml.contains("\"0644\"") || out.yaml.contains("'0644'"));
    assert!(out.yaml.contains("\"on\"") || out.yaml.contains("'on'"));
}

#[test]
fn injecting_twice_changes_nothing() {
    let o = opts(Selection::All);
    let once = inject_str(EXAMPLE, &o).unwrap();
    let twice = inject_str(&once.yaml, &o).unwrap();
    assert_eq!(once.yaml, twice.yaml);
    assert_eq!(
        containers(&docs(&twice.yaml)[1]),
        vec!["store", "purposegate"]
    );
}

#[test]
fn reinjecting_with_new_options_replaces_in_place() {
    let once = inject_str(EXAMPLE, &opts(Selection::All)).unwrap();
    let o = InjectOptions {
        tls_secret: Some("my-tls".into()),
        jwt_secret: None,
        image: "example.test/pg:9".into(),
        ..InjectOptions::default()
    };
    let again = inject_str(&once.yaml, &o).unwrap();
    let d = docs(&again.yaml);
    assert_eq!(containers(&d[1]), vec!["store", "purposegate"]);
    assert_eq!(
        volumes(&d[1]),
        vec!["purposegate-config", "purposegate-audit", "purposegate-tls"]
    );
    assert!(again.yaml.contains("example.test/pg:9"));
    assert!(again.yaml.contains("secretName: my-tls"));
}

#[test]
fn sidecar_has_probes_ports_and_locked_down_security_context() {
    let c = sidecar_container(&InjectOptions::default()).unwrap();
    let probe = |p: &str| c.get(p).and_then(|p| p.get("httpGet")).cloned().unwrap();
    assert_eq!(
        probe("livenessProbe").get("path").unwrap().as_str(),
        Some("/healthz")
    );
    assert_eq!(
        probe("readinessProbe").get("path").unwrap().as_str(),
        Some("/readyz")
    );
    let sc = c.get("securityContext").unwrap();
    assert_eq!(sc.get("readOnlyRootFilesystem"), Some(&Node::Bool(true)));
    assert_eq!(sc.get("runAsNonRoot"), Some(&Node::Bool(true)));
    assert_eq!(sc.get("allowPrivilegeEscalation"), Some(&Node::Bool(false)));
    assert_eq!(
        sc.get("capabilities").unwrap().get("drop"),
        Some(&Node::Seq(vec![Node::Str("ALL".into())]))
    );
    assert_eq!(declared_ports(&c), vec![8443, 9100]);
}

#[test]
fn named_workload_missing_is_an_error() {
    let err = inject_str(EXAMPLE, &opts(Selection::Names(vec!["nope".into()]))).unwrap_err();
    assert!(matches!(err, InjectError::NotFound(n) if n == "nope"));
}

#[test]
fn port_clash_with_an_app_container_is_an_error() {
    let o = InjectOptions {
        proxy_port: Some(9090),
        store_port: Some(9091),
        ..InjectOptions::default()
    };
    let err = inject_str(EXAMPLE, &o).unwrap_err().to_string();
    assert!(err.contains("Deployment content-store"), "{err}");
    assert!(err.contains("9090"), "{err}");
}

#[test]
fn equal_ports_are_refused() {
    let o = InjectOptions {
        admin_port: Some(8443),
        ..InjectOptions::default()
    };
    assert!(matches!(
        inject_str(EXAMPLE, &o),
        Err(InjectError::Options(_))
    ));
}

#[test]
fn missing_store_port_is_a_warning() {
    let o = InjectOptions {
        store_port: Some(7000),
        ..InjectOptions::default()
    };
    let out = inject_str(EXAMPLE, &o).unwrap();
    let undeclared: Vec<_> = out
        .warnings
        .iter()
        .filter(|w| w.contains("no container declares containerPort 7000"))
        .collect();
    assert_eq!(undeclared.len(), 2, "{:?}", out.warnings);
    // The port is the config's to set: without the ConfigMap, inject says so.
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("not in the input") && w.contains("http://127.0.0.1:7000")),
        "{:?}",
        out.warnings
    );
    assert!(!out.yaml.contains("purposegate.io/store-port"));
}

/// The chart's ConfigMap (rendered with the default values) ahead of the
/// example workloads, as `cat configmap.yaml deploy.yaml | inject` sees it.
fn with_config_map() -> String {
    let cm = include_str!("../../examples/k8s/rendered/configmap.yaml");
    format!("{cm}---\n{EXAMPLE}")
}

fn config_text(yaml: &str) -> String {
    docs(yaml)
        .iter()
        .find(|d| {
            d.get("kind").and_then(Node::as_str) == Some("ConfigMap")
                && d.get("metadata").and_then(Node::name) == Some("purposegate-config")
        })
        .and_then(|d| d.get("data"))
        .and_then(|d| d.get("config.yaml"))
        .and_then(Node::as_str)
        .unwrap()
        .to_string()
}

fn sidecar_ports(doc: &Node) -> Vec<i64> {
    let Some(Node::Seq(cs)) = doc
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("spec"))
        .and_then(|s| s.get("containers"))
    else {
        panic!("no containers")
    };
    declared_ports(cs.iter().find(|c| c.name() == Some(CONTAINER)).unwrap())
}

#[test]
fn ports_asked_for_are_written_into_the_config_map_in_the_input() {
    let o = InjectOptions {
        proxy_port: Some(8444),
        admin_port: Some(9101),
        store_port: Some(9091),
        selection: Selection::Names(vec!["file-store".into()]),
        ..InjectOptions::default()
    };
    let input = with_config_map().replace(
        "containerPort: 9090\n          volumeMounts",
        "containerPort: 9091\n          volumeMounts",
    );
    let out = inject_str(&input, &o).unwrap();
    assert_eq!(out.changes.len(), 3, "{:?}", out.changes);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let config = config_text(&out.yaml);
    assert!(config.contains("listen: \"0.0.0.0:8444\""), "{config}");
    assert!(
        config.contains("admin_listen: \"0.0.0.0:9101\""),
        "{config}"
    );
    assert!(
        config.contains("url: \"http://127.0.0.1:9091\""),
        "{config}"
    );
    let ports = crate::inject::config_map::ports_of(&config).unwrap();
    assert_eq!(
        (ports.proxy, ports.admin, ports.store),
        (8444, 9101, Some(9091))
    );
    let d = docs(&out.yaml);
    let sts = d
        .iter()
        .find(|d| d.get("kind").and_then(Node::as_str) == Some("StatefulSet"))
        .unwrap();
    assert_eq!(sidecar_ports(sts), vec![8444, 9101]);

    // Injected again without the flags, the ports come from the ConfigMap.
    let again = inject_str(
        &out.yaml,
        &opts(Selection::Names(vec!["file-store".into()])),
    )
    .unwrap();
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    assert_eq!(again.yaml, out.yaml);
}

#[test]
fn ports_without_the_config_map_in_the_input_are_a_warning() {
    let o = InjectOptions {
        proxy_port: Some(8444),
        ..opts(Selection::Names(vec!["file-store".into()]))
    };
    let out = inject_str(EXAMPLE, &o).unwrap();
    assert!(out.changes.is_empty());
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(
        out.warnings[0].contains("ConfigMap purposegate-config is not in the input")
            && out.warnings[0].contains("listen: \"0.0.0.0:8444\""),
        "{}",
        out.warnings[0]
    );
    // The defaults need no warning.
    let out = inject_str(EXAMPLE, &opts(Selection::Names(vec!["file-store".into()]))).unwrap();
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

#[test]
fn a_config_map_whose_config_does_not_parse_is_an_error() {
    let input = with_config_map().replace("listen: \"0.0.0.0:8443\"", "listen: \"nowhere\"");
    let err = inject_str(&input, &opts(Selection::All))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("ConfigMap purposegate-config: config.yaml:"),
        "{err}"
    );
}

#[test]
fn one_audit_claim_for_several_replicas_is_refused() {
    let claim = |selection: &str| InjectOptions {
        audit_claim: Some("audit-log".into()),
        ..opts(Selection::Names(vec![selection.into()]))
    };
    // content-store is a Deployment with 2 replicas.
    let err = inject_str(EXAMPLE, &claim("content-store"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("Deployment content-store: has 2 replicas"),
        "{err}"
    );
    assert!(err.contains("PersistentVolumeClaim audit-log"), "{err}");
    assert!(
        err.contains("StatefulSet") && err.contains("volumeClaimTemplates"),
        "{err}"
    );

    // A StatefulSet with several replicas is told to use a claim template.
    let three = EXAMPLE.replace(
        "serviceName: file-store\n  replicas: 1",
        "serviceName: file-store\n  replicas: 3",
    );
    assert_ne!(three, EXAMPLE);
    let err = inject_str(&three, &claim("file-store"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has 3 replicas")
            && err.contains("add a volumeClaimTemplates entry named purposegate-audit"),
        "{err}"
    );

    // One replica: the claim is mounted.
    let out = inject_str(EXAMPLE, &claim("file-store")).unwrap();
    assert!(out.yaml.contains("claimName: audit-log"), "{}", out.yaml);

    // A Deployment of one replica gets it, with what to watch for.
    let one = EXAMPLE.replace("  replicas: 2\n", "  replicas: 1\n");
    let out = inject_str(&one, &claim("content-store")).unwrap();
    assert!(out.yaml.contains("claimName: audit-log"));
    assert!(
        out.warnings.iter().any(|w| w.contains("Recreate")),
        "{:?}",
        out.warnings
    );
}

#[test]
fn a_statefulsets_audit_claim_template_gives_each_replica_its_log() {
    let template = EXAMPLE.replace(
        "  volumeClaimTemplates:\n",
        "  volumeClaimTemplates:\n    - metadata:\n        name: purposegate-audit\n      spec:\n        accessModes: [\"ReadWriteOnce\"]\n        resources:\n          requests:\n            storage: 1Gi\n",
    ).replace("serviceName: file-store\n  replicas: 1", "serviceName: file-store\n  replicas: 3");
    let out = inject_str(
        &template,
        &opts(Selection::Names(vec!["file-store".into()])),
    )
    .unwrap();
    let d = docs(&out.yaml);
    let sts = d
        .iter()
        .find(|d| d.get("kind").and_then(Node::as_str) == Some("StatefulSet"))
        .unwrap();
    assert_eq!(volumes(sts), vec!["purposegate-config", "purposegate-jwt"]);
    assert!(out.yaml.contains("mountPath: /var/lib/purposegate/audit"));
    let err = inject_str(
        &template,
        &InjectOptions {
            audit_claim: Some("audit-log".into()),
            ..opts(Selection::Names(vec!["file-store".into()]))
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("leave out --audit-claim"), "{err}");
}

#[test]
fn lists_are_injected_item_by_item() {
    let list = "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: apps/v1\n    kind: Deployment\n    metadata: {name: a}\n    spec:\n      selector: {matchLabels: {app: a}}\n      template:\n        metadata: {labels: {app: a}}\n        spec:\n          containers: [{name: app, image: x, ports: [{containerPort: 9090}]}]\n";
    let out = inject_str(list, &opts(Selection::All)).unwrap();
    assert_eq!(out.workloads, vec!["Deployment/a"]);
    assert!(out.yaml.contains("name: purposegate"));
}

#[test]
fn workload_without_template_is_an_error() {
    let bad = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {}\n";
    let err = inject_str(bad, &opts(Selection::All))
        .unwrap_err()
        .to_string();
    assert!(err.contains("Deployment x: has no spec.template"), "{err}");
}

#[test]
fn garbage_is_a_parse_error() {
    assert!(matches!(
        inject_str("a: [1, 2\n", &opts(Selection::All)),
        Err(InjectError::Parse(_))
    ));
}

#[test]
fn ambiguous_strings_round_trip_quoted() {
    let words = [
        "y", "n", "yes", "No", "off", "ON", "0o14", "1_000", "0x1F", "~", "null", "", "1e3", ".5",
        "12:30", "0644", "+1", "-", "true", "a: b", "#x", "- x", "*a", "&a", "!t", "%", "@", "{",
        "[", "x #y", "<<", ".inf", ".NaN", "0b11",
    ];
    let n = Node::Seq(words.iter().map(|w| Node::Str(w.to_string())).collect());
    let yaml = write_docs(std::slice::from_ref(&n)).unwrap();
    let back: Vec<Node> = serde_saphyr::from_multiple_with_options(&yaml, parse_options()).unwrap();
    assert_eq!(back, vec![n], "{yaml}");
}

#[test]
fn yaml_1_1_scalars_are_read_as_kubernetes_reads_them() {
    let yaml = "a: 0644\nb: yes\nc: '0644'\nd: 1.5\ne: ~\n";
    let out = write_docs(
        &serde_saphyr::from_multiple_with_options::<Node>(yaml, parse_options()).unwrap(),
    )
    .unwrap();
    assert_eq!(out, "a: 420\nb: true\nc: \"0644\"\nd: 1.5\ne: null\n");
}
