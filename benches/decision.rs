//! Micro-benchmarks of the functional core: the access decision
//! (`decide_pre` + `decide_post` for an allowed training read, and a denial)
//! and route matching at 10 / 1,000 / 10,000 routes (the trie should keep
//! lookup cost flat). Run: `cargo bench --bench decision`.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::Method;
use purposegate::auth::Claims;
use purposegate::consent::UserConsent;
use purposegate::policy::{
    decide_post, decide_pre, load_dir, AuthState, Lookup, MetaValue, NoTrace, Outcome, Policy,
    RequestFacts, ResponseMeta, Route, RouteTable,
};
use purposegate::time::{parse_rfc3339, Millis};

fn millis(s: &str) -> Millis {
    parse_rfc3339(s).unwrap_or_default()
}

fn default_policy() -> Policy {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let consent = dir.join("consent.yaml");
    match load_dir(&dir, &[consent.as_path()]) {
        Ok(p) => p,
        Err(e) => panic!("default policy: {e}"),
    }
}

fn training_claims() -> Claims {
    Claims {
        sub: "employee-42".into(),
        roles: vec!["research".into()],
        purpose: Some("training".into()),
        training_cert_exp: Some(millis("2027-01-01T00:00:00Z") / 1000),
        ..Claims::default()
    }
}

/// One whole decision as the proxy makes it: route match, rules 1-11, then
/// rules 12-16 on the response head.
fn decide_both(policy: &Policy, claims: &Claims, user: &UserConsent, now: Millis) -> Outcome {
    decide_path(policy, "/v1/users/u1/conversations/c1", claims, user, now)
}

fn decide_path(
    policy: &Policy,
    path: &str,
    claims: &Claims,
    user: &UserConsent,
    now: Millis,
) -> Outcome {
    let method = Method::GET;
    let facts = RequestFacts::new(policy, &method, path, false);
    let admitted = match decide_pre(
        policy,
        &facts,
        AuthState::Valid(claims),
        Lookup::Known(user),
        now,
        &mut NoTrace,
    ) {
        Ok(a) => a,
        Err(reason) => return Outcome::Deny(reason),
    };
    let meta = ResponseMeta {
        status: 200,
        owner: MetaValue::One("u1"),
        created_at: MetaValue::One("2026-05-01T00:00:00Z"),
        source: MetaValue::One("consumer"),
        org: MetaValue::Absent,
        deidentified: MetaValue::One("true"),
    };
    decide_post(&admitted, &meta, None, &mut NoTrace)
}

fn bench_decide(c: &mut Criterion) {
    let policy = default_policy();
    let now = millis("2026-11-29T12:00:00Z");
    let user = UserConsent::default();
    let allowed = training_claims();
    assert_eq!(decide_both(&policy, &allowed, &user, now), Outcome::Allow);
    // A denial late in the table: the role does not permit the purpose.
    let denied = Claims {
        roles: vec!["support".into()],
        ..training_claims()
    };
    assert!(matches!(
        decide_both(&policy, &denied, &user, now),
        Outcome::Deny(_)
    ));
    let mut g = c.benchmark_group("decide");
    g.bench_function("allow_training_pre_post", |b| {
        b.iter(|| decide_both(black_box(&policy), black_box(&allowed), &user, now))
    });
    g.bench_function("deny_role_pre", |b| {
        b.iter(|| decide_both(black_box(&policy), black_box(&denied), &user, now))
    });
    g.finish();
}

/// `n` routes of realistic shape: `/v1/users/{owner}/<collection i>/**`, plus
/// a few with literal prefixes so the trie is not a single chain.
fn routes(n: usize) -> RouteTable {
    let routes = (0..n)
        .map(|i| Route {
            name: format!("r{i}"),
            template: match i % 3 {
                0 => format!("/v1/users/{{owner}}/coll{i}/**"),
                1 => format!("/v{i}/users/{{owner}}/items/{{id}}"),
                _ => format!("/api/t{i}/{{owner}}/**"),
            },
            upstream: "content".into(),
        })
        .collect();
    match RouteTable::compile(routes) {
        Ok(t) => t,
        Err(e) => panic!("routes: {e}"),
    }
}

fn bench_routes(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_lookup");
    for n in [10usize, 1_000, 10_000] {
        let table = routes(n);
        // A path matching a route declared in the middle of the table.
        let mid = (n / 2) / 3 * 3;
        let path = format!("/v1/users/u1/coll{mid}/c1/m2");
        assert!(table.lookup(&path).is_some(), "{path} must match");
        g.bench_with_input(BenchmarkId::new("hit", n), &path, |b, p| {
            b.iter(|| table.lookup(black_box(p)).map(|m| m.owner.len()))
        });
        let miss = "/v1/users/u1/nothing-here/c1";
        g.bench_with_input(BenchmarkId::new("miss", n), &miss, |b, p| {
            b.iter(|| table.lookup(black_box(p)).is_some())
        });
    }
    g.finish();
}

/// The whole decision (as `decide/allow_training_pre_post`) with the default
/// policy's routes replaced by `n` routes: the target is a flat cost.
fn bench_decide_routes(c: &mut Criterion) {
    let now = millis("2026-11-29T12:00:00Z");
    let user = UserConsent::default();
    let claims = training_claims();
    let mut g = c.benchmark_group("decide_at_routes");
    for n in [10usize, 1_000, 10_000] {
        let policy = Policy {
            routes: routes(n),
            ..default_policy()
        };
        let path = format!("/v1/users/u1/coll{}/c1", (n / 2) / 3 * 3);
        assert_eq!(
            decide_path(&policy, &path, &claims, &user, now),
            Outcome::Allow
        );
        g.bench_with_input(BenchmarkId::new("allow_training", n), &path, |b, p| {
            b.iter(|| decide_path(black_box(&policy), black_box(p), &claims, &user, now))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_decide, bench_routes, bench_decide_routes);
criterion_main!(benches);
