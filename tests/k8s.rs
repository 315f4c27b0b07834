//! The Kubernetes artefacts against the real proxy: every metric the Grafana
//! dashboard and the alert rules query is exported on /metrics (or README or
//! docs/ documents where else it comes from); the config.yaml the Helm chart
//! renders starts the proxy and turns it ready; the chart's rendered sidecar
//! is the one `inject` adds; and `purposegate inject` works as a process.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{Harness, Tok};
use purposegate::inject::node::Node;

fn repo_file(rel: &str) -> String {
    std::fs::read_to_string(common::repo().join(rel)).unwrap()
}

/// Metric names in a PromQL expression: identifiers starting with one of the
/// prefixes the dashboard and rules use, plus `up`.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut rest = expr;
    while let Some(start) = rest.find(|c: char| is_ident(c)) {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !is_ident(c)).unwrap_or(tail.len());
        let word = &tail[..end];
        let preceded_by_ident = start > 0 && rest[..start].ends_with(|c: char| is_ident(c));
        let is_label_or_fn = tail[end..].trim_start().starts_with(['=', '!', '(']);
        if !preceded_by_ident
            && !is_label_or_fn
            && (word.starts_with("purposegate_") || word.starts_with("kube_") || word == "up")
        {
            into.insert(word.to_string());
        }
        rest = &tail[end..];
    }
}

fn dashboard_and_rule_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let dash: serde_json::Value =
        serde_json::from_str(&repo_file("helm/purposegate/dashboards/purposegate.json")).unwrap();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    for t in panels
        .iter()
        .filter_map(|p| p["targets"].as_array())
        .flatten()
    {
        metric_names(t["expr"].as_str().unwrap(), &mut names);
    }
    let rules: serde_json::Value =
        serde_saphyr::from_str(&repo_file("helm/purposegate/rules/alerts.yaml")).unwrap();
    let rules = rules["groups"][0]["rules"].as_array().unwrap().clone();
    assert!(rules.len() >= 5);
    for r in &rules {
        metric_names(r["expr"].as_str().unwrap(), &mut names);
    }
    names
}

#[test]
fn metric_name_extraction() {
    let mut n = BTreeSet::new();
    metric_names(
        r#"histogram_quantile(0.9, sum by (le) (rate(purposegate_request_duration_seconds_bucket{pod=~"$pod"}[5m]))) / up{job="x"} and kube_pod_container_status_ready{container="purposegate"}"#,
        &mut n,
    );
    let want: BTreeSet<String> = [
        "purposegate_request_duration_seconds_bucket",
        "up",
        "kube_pod_container_status_ready",
    ]
    .map(String::from)
    .into();
    assert_eq!(n, want);
}

#[tokio::test]
async fn dashboard_and_alert_metrics_are_exported_or_documented() {
    let mut h = Harness::start().await;
    // One allowed and one denied request, so labelled counters have samples.
    let ok = h
        .get(
            "/v1/users/u1/conversations/c1",
            Some(&h.token(&Tok::abuse("u1"))),
        )
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        h.get("/v1/users/u1/conversations/c1", None).await.status,
        401
    );
    let scrape = String::from_utf8(h.admin_get("/metrics").await.body.to_vec()).unwrap();
    h.stop().await;
    let exported: BTreeSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let docs = documentation();
    let names = dashboard_and_rule_metrics();
    assert!(names.contains("purposegate_requests_total"));
    assert!(names.contains("purposegate_request_duration_seconds_bucket"));
    for name in &names {
        assert!(
            exported.contains(name.as_str()) || docs.contains(&format!("`{name}`")),
            "{name} is queried by the dashboard or alerts but neither exported on /metrics nor documented in README.md or docs/"
        );
    }
}

/// README.md and every docs/*.md, where metrics that a default config does
/// not export (e.g. those of optional sections such as `budgets:`) are documented.
fn documentation() -> String {
    let mut text = repo_file("README.md");
    if let Ok(dir) = std::fs::read_dir(common::repo().join("docs")) {
        for entry in dir.flatten() {
            if entry.path().extension().is_some_and(|e| e == "md") {
                text.push_str(&std::fs::read_to_string(entry.path()).unwrap());
            }
        }
    }
    text
}

/// The rendered chart's ConfigMap (examples/k8s/rendered/configmap.yaml).
fn rendered_configmap() -> serde_json::Value {
    let text = repo_file("examples/k8s/rendered/configmap.yaml");
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    docs.into_iter().find(|d| d["kind"] == "ConfigMap").unwrap()
}

/// Lays out the ConfigMap as the pod sees it, with the pod's absolute paths
/// moved under `root` and the listeners on loopback.
fn materialize_chart_config(root: &Path) -> std::path::PathBuf {
    let data = &rendered_configmap()["data"];
    let etc = root.join("etc/purposegate");
    std::fs::create_dir_all(etc.join("policies")).unwrap();
    std::fs::create_dir_all(root.join("jwt")).unwrap();
    std::fs::create_dir_all(root.join("audit")).unwrap();
    let config = data["config.yaml"]
        .as_str()
        .unwrap()
        .replace(
            "/var/run/secrets/purposegate/jwt",
            &root.join("jwt").display().to_string(),
        )
        .replace(
            "/var/lib/purposegate/audit",
            &root.join("audit").display().to_string(),
        )
        .replace("0.0.0.0:8443", "127.0.0.1:0")
        .replace("0.0.0.0:9100", "127.0.0.1:0");
    std::fs::write(etc.join("config.yaml"), config).unwrap();
    for key in ["policy.yaml", "consent.yaml"] {
        std::fs::write(etc.join("policies").join(key), data[key].as_str().unwrap()).unwrap();
    }
    etc.join("config.yaml")
}

#[tokio::test]
async fn chart_config_starts_the_proxy_ready() {
    let dir = tempfile::tempdir().unwrap();
    let path = materialize_chart_config(dir.path());
    let key =
        purposegate::auth::mint::generate_dev_key(jsonwebtoken::Algorithm::ES256, "k8s-1").unwrap();
    std::fs::write(
        dir.path().join("jwt/jwks.json"),
        purposegate::auth::mint::jwks_json(&[&key]),
    )
    .unwrap();
    let config = purposegate::config::Config::load(&path).unwrap();
    assert_eq!(
        config.upstreams["content"].url.to_string(),
        "http://127.0.0.1:9090/"
    );
    let running = purposegate::server::start(config).await.unwrap();
    let ready = common::send(running.admin_addr, http::Method::GET, "/readyz", None, &[]).await;
    assert_eq!(ready.status, 200, "{:?}", ready.body);
    running.shutdown().await;
}

fn to_json(n: &Node) -> serde_json::Value {
    serde_json::to_value(n).unwrap()
}

#[test]
fn chart_sidecar_is_the_injected_sidecar() {
    let text = repo_file("examples/k8s/rendered/deployment.yaml");
    let docs: Vec<Node> = serde_saphyr::from_multiple(&text).unwrap();
    let pod = docs[0]
        .get("spec")
        .unwrap()
        .get("template")
        .unwrap()
        .get("spec")
        .unwrap();
    let Some(Node::Seq(containers)) = pod.get("containers") else {
        panic!("no containers")
    };
    let names: Vec<_> = containers.iter().filter_map(Node::name).collect();
    assert_eq!(names, ["store", "purposegate"]);
    let opts = purposegate::inject::InjectOptions::default();
    let sidecar = purposegate::inject::sidecar_container(&opts).unwrap();
    assert_eq!(to_json(&containers[1]), to_json(&sidecar));
    let volumes = purposegate::inject::sidecar_volumes(&opts).unwrap();
    assert_eq!(
        to_json(pod.get("volumes").unwrap()),
        to_json(&Node::Seq(volumes))
    );
}

fn inject(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_purposegate"))
        .arg("inject")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The command may refuse its arguments and exit before reading stdin:
    // a broken pipe here is not the failure under test.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn inject_as_a_process_reads_stdin_and_is_idempotent() {
    let input = repo_file("examples/k8s/store-deployment.yaml");
    let (code, once, err) = inject(&["--all"], &input);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("injected Deployment/content-store"), "{err}");
    assert!(err.contains("injected StatefulSet/file-store"), "{err}");
    assert_eq!(once.matches("- name: purposegate\n").count(), 2);
    let docs: Vec<Node> = serde_saphyr::from_multiple(&once).unwrap();
    assert_eq!(docs.len(), 5);
    let (code, twice, _) = inject(&["--all", "-"], &once);
    assert_eq!(code, 0);
    assert_eq!(once, twice);
}

#[test]
fn inject_from_a_file_with_options() {
    let path = common::repo().join("examples/k8s/store-deployment.yaml");
    let (code, out, err) = inject(
        &[
            path.to_str().unwrap(),
            "--workload",
            "file-store",
            "--tls-secret",
            "store-tls",
            "--image",
            "example.test/purposegate:dev",
            "--proxy-port",
            "8444",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.trim(), "injected StatefulSet/file-store");
    assert_eq!(
        out.matches("image: example.test/purposegate:dev").count(),
        1
    );
    assert!(out.contains("secretName: store-tls"));
    assert!(out.contains("containerPort: 8444"));
}

#[test]
fn inject_errors_exit_nonzero() {
    let input = repo_file("examples/k8s/store-deployment.yaml");
    let (code, out, err) = inject(&["--workload", "missing"], &input);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.contains("no Deployment or StatefulSet named missing"),
        "{err}"
    );
    // A selection is required.
    let (code, _, err) = inject(&[], &input);
    assert_eq!(code, 2, "{err}");
}
