//! One decision path: every case of the shipped `policies/tests/` suite is
//! decided three ways — by `policy test`'s runner, by `purposegate explain`
//! (the binary) and by the real proxy in front of a recording store that
//! serves the case's response metadata — and all three must agree on the
//! decision and the reason. Cases that state their own consent registry or
//! an unavailable one, or an access budget (rule 18), exercise only the
//! runner (the proxy's registry is the suite's file, and it has no budgets),
//! and are counted apart. Cases that state the case service's answer
//! (`justification:`) go to a second proxy that checks justifications
//! against a case service answering exactly that (asked afresh for every
//! request); a stated outage is runner-only too.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Reply, Upstream};
use http::Method;
use jsonwebtoken::Algorithm;
use purposegate::auth::mint::{generate_dev_key, mint, DevKey, MintRequest};
use purposegate::consent::file::ConsentData;
use purposegate::justification::sample::CaseService;
use purposegate::justification::{Answer, Kind};
use purposegate::policy::testcases::{self, Case, TokenSpec, Unavailable};
use purposegate::policy::{Outcome, Policy};

fn token(key: &DevKey, case: &Case, iat: i64) -> Option<String> {
    let TokenSpec::Claims(c) = &case.token else {
        return match case.token {
            TokenSpec::Invalid(_) => Some("not.a.token".into()),
            _ => None,
        };
    };
    let req = MintRequest {
        alg: key.alg,
        key: key.signing_key(),
        kid: Some(key.kid.clone()),
        iss: common::ISSUER.into(),
        aud: vec![common::AUDIENCE.into()],
        sub: c.sub.clone(),
        roles: c.roles.clone(),
        purpose: c.purpose.clone(),
        justification: c
            .strings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        subjects: c.subjects.clone(),
        training_cert_exp: c.training_cert_exp,
        iat,
        ttl_seconds: 600,
        jti: c.jti.clone(),
        ..MintRequest::default()
    };
    Some(mint(&req).unwrap())
}

fn meta_pairs(case: &Case) -> Vec<(String, String)> {
    let Some(m) = &case.response else {
        return Vec::new();
    };
    [
        ("x-content-owner", &m.owner),
        ("x-content-created-at", &m.created_at),
        ("x-content-source", &m.source),
        ("x-content-org", &m.org),
        ("x-content-deidentified", &m.deidentified),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), v.clone())))
    .collect()
}

/// `purposegate explain`'s decision, as `allow` or the reason code.
fn explain(config: &Path, dir: &Path, case: &Case, token: Option<&str>) -> String {
    let tok = dir.join("token");
    std::fs::write(&tok, token.unwrap_or("")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_purposegate"));
    cmd.args(["explain", "--config"])
        .arg(config)
        .arg("--token-file")
        .arg(&tok)
        .arg("--now")
        .arg(purposegate::time::format_rfc3339(case.now))
        .arg(case.method.as_str())
        .arg(&case.path);
    for (k, v) in meta_pairs(case) {
        cmd.arg("--meta").arg(format!("{k}:{v}"));
    }
    if let Some(m) = &case.response {
        cmd.arg("--meta").arg(format!("status:{}", m.status));
    }
    if case.method_override {
        cmd.arg("--header").arg("X-HTTP-Method-Override:DELETE");
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if text.contains("decision: allow") {
        return "allow".into();
    }
    text.lines()
        .find_map(|l| l.strip_prefix("reason: "))
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "no decision: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// Makes `svc` answer what `case` states about its token's justification
/// (when the token names one its purpose is checked for).
fn serve_stated(svc: &CaseService, policy: &Policy, case: &Case) {
    let (TokenSpec::Claims(c), Some(answer)) = (&case.token, &case.justification) else {
        return;
    };
    let Some(claim) = c
        .purpose
        .as_deref()
        .and_then(|p| policy.purpose(p))
        .and_then(|p| p.justification_claim.as_deref())
    else {
        return;
    };
    let (Some(kind), Some(id)) = (Kind::from_claim(claim), c.strings.get(claim)) else {
        return;
    };
    match answer {
        Answer::Found(j) => svc.insert(kind, id, (**j).clone()),
        _ => svc.remove(kind, id),
    }
}

fn word(o: Outcome) -> String {
    match o {
        Outcome::Allow => "allow".into(),
        Outcome::Deny(r) => r.code().to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_test_explain_and_serve_decide_every_shipped_case_alike() {
    let root = common::repo().join("policies");
    let consent = ConsentData::load(&root.join("consent.yaml")).unwrap();
    let policy =
        purposegate::policy::load_dir(&root, &[root.join("consent.yaml").as_path()]).unwrap();
    let cases = testcases::load_cases(&root.join("tests")).unwrap();

    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = generate_dev_key(Algorithm::ES256, "one-path").unwrap();
    let config_path = common::write_config(dir.path(), &key, up.addr, &common::Opts::default());
    // The proxy's registry is the suite's.
    std::fs::copy(root.join("consent.yaml"), dir.path().join("consent.yaml")).unwrap();
    let config = purposegate::config::Config::load(&config_path).unwrap();
    let running = purposegate::server::start(config).await.unwrap();
    // The second proxy, for cases that state the case service's answer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let svc = CaseService::start(listener, [], None).unwrap();
    let jdir = tempfile::tempdir().unwrap();
    let opts = common::Opts {
        extra_yaml: format!(
            "justifications:\n  url: \"{}\"\n  cache_ttl_seconds: 0\n  max_staleness_seconds: 0\n  fail_fast_ms: 0\n",
            svc.url()
        ),
        ..common::Opts::default()
    };
    let jconfig_path = common::write_config(jdir.path(), &key, up.addr, &opts);
    std::fs::copy(root.join("consent.yaml"), jdir.path().join("consent.yaml")).unwrap();
    let jconfig = purposegate::config::Config::load(&jconfig_path).unwrap();
    let jrunning = purposegate::server::start(jconfig).await.unwrap();

    let now = purposegate::time::now_millis() / 1000;
    let (mut compared, mut runner_only, mut justified) = (0, 0, 0);
    let mut differences = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let (expected, _) = testcases::evaluate(&policy, &consent, case);
        let runner = word(expected);
        let stated_outage = matches!(case.justification, Some(Answer::Unavailable(_)));
        // A stated budget needs a Redis holding that usage: rule 18 is
        // compared through the proxy in tests/budget_e2e.rs instead.
        if case.consent.is_some()
            || case.unavailable != Unavailable::None
            || stated_outage
            || case.budget.is_some()
        {
            runner_only += 1;
            continue;
        }
        compared += 1;
        let (config_path, addr) = match case.justification {
            Some(_) => {
                justified += 1;
                serve_stated(&svc, &policy, case);
                (&jconfig_path, jrunning.addr)
            }
            None => (&config_path, running.addr),
        };
        let explained = explain(
            config_path,
            dir.path(),
            case,
            token(&key, case, case.now / 1000).as_deref(),
        );
        // A path of its own per case, answered with the case's metadata.
        let path = case.path.clone();
        let status = case.response.as_ref().map_or(200, |m| m.status);
        let mut reply = Reply::ok(&[]);
        reply.status = status;
        reply.headers = meta_pairs(case);
        up.reply(&path, reply);
        let tok = token(&key, case, now);
        let mut headers = Vec::new();
        if case.method_override {
            headers.push(("X-HTTP-Method-Override", "DELETE"));
        }
        let method = Method::from_bytes(case.method.as_str().as_bytes()).unwrap();
        let resp = common::send(addr, method, &path, tok.as_deref(), &headers).await;
        let served = if (200..300).contains(&resp.status)
            || (resp.reason().is_none() && resp.status >= 300)
        {
            "allow".to_string()
        } else {
            resp.reason()
                .unwrap_or_else(|| format!("status {}", resp.status))
        };
        if runner != explained || runner != served {
            differences.push(format!(
                "#{i} {}: policy test {runner}, explain {explained}, serve {served}",
                case.name
            ));
        }
    }
    running.shutdown().await;
    jrunning.shutdown().await;
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    assert!(
        justified >= 8,
        "only {justified} justification cases compared"
    );
    assert!(svc.asked_count() >= 2 * 8, "explain and serve both asked");
    assert!(
        compared >= 40,
        "only {compared} cases compared ({runner_only} runner-only)"
    );
}
