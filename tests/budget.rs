//! Access budgets (docs/reference.md §11) against the local Redis (127.0.0.1:6379,
//! override with PURPOSEGATE_TEST_REDIS=host:port). Two `Budgets` instances
//! stand for two replicas sharing one Redis. Each test owns a database index
//! (flushed first), so tests run in parallel without meeting; a cuttable TCP
//! forwarder (tests/common/pg.rs) simulates Redis going away and coming back.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use prometheus_client::registry::Registry;
use purposegate::budget::{
    audit_facts, rule18, BudgetVerdict, Budgets, BudgetsConfig, LimitKind, Outcome, Unavailable,
};
use purposegate::config::Config;

fn redis_addr() -> SocketAddr {
    std::env::var("PURPOSEGATE_TEST_REDIS")
        .unwrap_or_else(|_| "127.0.0.1:6379".to_string())
        .parse()
        .unwrap()
}

const BASE: &str = "listen: \"127.0.0.1:8080\"\nadmin_listen: \"127.0.0.1:9100\"\njwt:\n  issuer: \"i\"\n  audiences: [\"a\"]\n  algorithms: [\"ES256\"]\n  jwks_file: \"jwks.json\"\npolicy_dir: \"policies\"\nconsent_file: \"consent.yaml\"\nupstreams:\n  content: {url: \"http://127.0.0.1:9090\"}\naudit:\n  path: \"audit.jsonl\"\n";

/// A `budgets:` config for Redis at `addr`, database `db`, with `limits`
/// (YAML flow mappings, one a line) and extra keys.
fn config(addr: SocketAddr, db: u8, limits: &[&str], extra: &str) -> BudgetsConfig {
    let mut text =
        format!("{BASE}budgets:\n  redis_url: \"redis://{addr}/{db}\"\n{extra}  limits:\n");
    for l in limits {
        text.push_str(&format!("    - {l}\n"));
    }
    Config::parse(Path::new("/tmp/budget-test.yaml"), &text)
        .unwrap()
        .budgets
        .unwrap()
}

/// A direct connection to database `db`, flushed.
async fn flushed(db: u8) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://{}/{db}", redis_addr())).unwrap();
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("local Redis at {} not answering: {e}", redis_addr()));
    redis::cmd("FLUSHDB")
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    c
}

fn replica(cfg: &BudgetsConfig) -> Budgets {
    Budgets::new(cfg, &mut Registry::with_prefix("purposegate")).unwrap()
}

fn used(o: &Outcome) -> Vec<u64> {
    o.usage().iter().map(|u| u.used).collect()
}

fn allowed(o: &Outcome) -> bool {
    matches!(o, Outcome::Allowed { .. })
}

#[tokio::test]
async fn distinct_owners_are_counted_across_replicas_and_rereads_are_free() {
    let _db = flushed(1).await;
    let cfg = config(
        redis_addr(),
        1,
        &["{purpose: support, distinct_owners: 3, window_seconds: 3600}"],
        "",
    );
    let mut registry = Registry::with_prefix("purposegate");
    let a = Budgets::new(&cfg, &mut registry).unwrap();
    let b = replica(&cfg);
    assert!(a.limits_for("support") && !a.limits_for("abuse"));

    let o = a.charge("alice", "support", "u1").await;
    assert_eq!(used(&o), [1], "{o:?}");
    assert_eq!(used(&b.charge("alice", "support", "u2").await), [2]);
    // A re-read through the other replica costs nothing.
    let again = b.charge("alice", "support", "u1").await;
    assert!(allowed(&again), "{again:?}");
    assert_eq!(used(&again), [2]);
    assert!(again.usage()[0].owner_counted);
    assert_eq!(used(&a.charge("alice", "support", "u3").await), [3]);

    let refused = b.charge("alice", "support", "u4").await;
    let Outcome::Exceeded {
        limit, retry_after, ..
    } = &refused
    else {
        panic!("{refused:?}")
    };
    assert_eq!(
        (limit.kind, limit.used, limit.max),
        (LimitKind::DistinctOwners, 3, 3)
    );
    assert!(
        (1..=3600).contains(&retry_after.as_secs()),
        "{retry_after:?}"
    );
    let (verdict, detail) = rule18("support", &refused);
    assert_eq!(verdict.code(), Some("access_budget_exceeded"));
    assert!(detail.contains("distinct_owners budget of 3"), "{detail}");
    let facts = serde_json::to_value(audit_facts(&refused).unwrap()).unwrap();
    assert_eq!(facts[0]["used"], 3);
    assert_eq!(facts[0]["refused"], true);

    // Every owner already counted stays readable at the limit, on both replicas.
    for owner in ["u1", "u2", "u3"] {
        assert!(allowed(&a.charge("alice", "support", owner).await));
        assert!(allowed(&b.charge("alice", "support", owner).await));
    }
    assert!(!allowed(&a.charge("alice", "support", "u5").await));

    let text = purposegate::metrics::encode_classic(&registry);
    for want in [
        "purposegate_budget_checks_total{purpose=\"support\",result=\"allowed\"} 5",
        "purposegate_budget_checks_total{purpose=\"support\",result=\"exceeded\"} 1",
        "purposegate_budget_checks_total{purpose=\"support\",result=\"unavailable\"} 0",
        "purposegate_budget_check_duration_seconds_count 6",
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
}

#[tokio::test]
async fn request_budget_refuses_with_retry_after_within_the_window() {
    let mut direct = flushed(2).await;
    let cfg = config(
        redis_addr(),
        2,
        &["{purpose: training, requests: 3, window_seconds: 600}"],
        "",
    );
    let (a, b) = (replica(&cfg), replica(&cfg));
    // The same owner counts every time: this budget counts requests.
    assert_eq!(used(&a.charge("job-7", "training", "u1").await), [1]);
    assert_eq!(used(&b.charge("job-7", "training", "u1").await), [2]);
    assert_eq!(used(&a.charge("job-7", "training", "u2").await), [3]);
    let refused = b.charge("job-7", "training", "u3").await;
    let Outcome::Exceeded { retry_after, .. } = refused else {
        panic!("{refused:?}")
    };
    // The window is aligned to multiples of 600 s in Redis's clock; the
    // budget frees when it ends, which is also when the key expires.
    let (secs, _micros): (u64, u64) = redis::cmd("TIME").query_async(&mut direct).await.unwrap();
    let until_end = 600 - secs % 600;
    let r = retry_after.as_secs();
    assert!((1..=600).contains(&r), "{r}");
    assert!(
        r.abs_diff(until_end) <= 1,
        "retry_after {r}, window ends in {until_end}"
    );
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut direct)
        .await
        .unwrap();
    assert!(pttl > 0 && pttl <= 600_000, "{pttl}");
    assert!(
        pttl / 1000 <= r as i64,
        "key outlives the retry: {pttl} ms vs {r} s"
    );
}

#[tokio::test]
async fn employees_and_purposes_are_isolated() {
    let _db = flushed(3).await;
    let cfg = config(
        redis_addr(),
        3,
        &[
            "{purpose: support, distinct_owners: 1, window_seconds: 3600}",
            "{purpose: abuse, distinct_owners: 1, window_seconds: 3600}",
        ],
        "",
    );
    let (a, b) = (replica(&cfg), replica(&cfg));
    assert!(allowed(&a.charge("alice", "support", "u1").await));
    assert!(!allowed(&b.charge("alice", "support", "u2").await));
    // Bob's budget and Alice's abuse budget are untouched by that.
    assert!(allowed(&b.charge("bob", "support", "u2").await));
    assert!(allowed(&a.charge("alice", "abuse", "u2").await));
    assert!(!allowed(&a.charge("bob", "support", "u3").await));
    // A purpose without limits is not budgeted.
    let o = a.charge("alice", "legal", "u9").await;
    assert!(allowed(&o) && o.usage().is_empty());
}

#[tokio::test]
async fn a_short_window_frees_its_budget_when_it_ends() {
    let _db = flushed(4).await;
    let cfg = config(
        redis_addr(),
        4,
        &["{purpose: support, distinct_owners: 1, window_seconds: 1}"],
        "",
    );
    let (a, b) = (replica(&cfg), replica(&cfg));
    // Bounded: each try that does not end in a refusal crossed into a new
    // one-second window between the two charges.
    let mut refused = None;
    for i in 0..20 {
        if !allowed(&a.charge("alice", "support", &format!("w{i}")).await) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let o = b.charge("alice", "support", &format!("x{i}")).await;
        if let Outcome::Exceeded { retry_after, .. } = o {
            refused = Some((i, retry_after));
            break;
        }
    }
    let (i, retry_after) = refused.expect("no refusal in 20 one-second windows");
    assert_eq!(retry_after, Duration::from_secs(1));
    tokio::time::sleep(retry_after).await;
    // The next window: a new owner is allowed again, and counts from 1.
    let o = b.charge("alice", "support", &format!("x{i}")).await;
    assert_eq!(used(&o), [1], "{o:?}");
}

/// A loopback port with nothing listening.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn unreachable_redis_is_unavailable_then_fails_fast() {
    let cfg = config(
        closed_port(),
        0,
        &["{purpose: support, distinct_owners: 5, window_seconds: 60}"],
        "",
    );
    let mut registry = Registry::with_prefix("purposegate");
    // Starts without Redis.
    let b = Budgets::new(&cfg, &mut registry).unwrap();
    let first = b.charge("alice", "support", "u1").await;
    assert!(matches!(first, Outcome::Unavailable(_)), "{first:?}");
    let (verdict, detail) = rule18("support", &first);
    assert_eq!(verdict, BudgetVerdict::Unavailable);
    assert_eq!(verdict.code(), Some("budget_unavailable"));
    assert!(detail.contains("failing closed"), "{detail}");
    // The next checks do not wait for Redis again.
    for _ in 0..5 {
        let o = b.charge("alice", "support", "u1").await;
        assert!(
            matches!(o, Outcome::Unavailable(Unavailable::FailingFast)),
            "{o:?}"
        );
    }
    assert!(b.failing_fast());
    assert!(matches!(
        b.peek("alice", "support", "u1").await,
        Err(Unavailable::FailingFast)
    ));
    let text = purposegate::metrics::encode_classic(&registry);
    assert!(
        text.contains(
            "purposegate_budget_checks_total{purpose=\"support\",result=\"unavailable\"} 6"
        ),
        "{text}"
    );
}

/// Charges until allowed (Redis back and the fail-fast window closed); bounded.
async fn until_allowed(b: &Budgets, sub: &str, owner: &str) -> Outcome {
    let mut last = None;
    for _ in 0..200 {
        let o = b.charge(sub, "support", owner).await;
        if allowed(&o) {
            return o;
        }
        last = Some(o);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not allowed within 200 tries: {last:?}");
}

#[tokio::test]
async fn recovers_after_redis_is_cut_and_restored() {
    let _db = flushed(5).await;
    let fwd = common::pg::Forwarder::start_to(redis_addr()).await;
    let limits = ["{purpose: support, distinct_owners: 10, window_seconds: 3600}"];
    let via_fwd = replica(&config(fwd.addr, 5, &limits, ""));
    let direct = replica(&config(redis_addr(), 5, &limits, ""));
    assert_eq!(used(&until_allowed(&via_fwd, "alice", "u1").await), [1]);

    fwd.cut();
    let o = via_fwd.charge("alice", "support", "u2").await;
    assert!(matches!(o, Outcome::Unavailable(_)), "{o:?}");
    let o = via_fwd.charge("alice", "support", "u2").await;
    assert!(
        matches!(o, Outcome::Unavailable(Unavailable::FailingFast)),
        "{o:?}"
    );
    // The other replica still reaches Redis and counts.
    assert_eq!(used(&direct.charge("alice", "support", "u2").await), [2]);

    fwd.restore();
    let o = until_allowed(&via_fwd, "alice", "u3").await;
    assert_eq!(used(&o), [3], "the count survived the outage");
}

#[tokio::test]
async fn a_stalled_redis_times_out_and_a_fresh_connection_recovers() {
    let _db = flushed(6).await;
    let fwd = common::pg::Forwarder::start_to(redis_addr()).await;
    let b = replica(&config(
        fwd.addr,
        6,
        &["{purpose: support, requests: 100, window_seconds: 3600}"],
        "  timeout_ms: 30\n  connect_timeout_ms: 200\n",
    ));
    assert_eq!(used(&until_allowed(&b, "alice", "u1").await), [1]);

    // Connections stay open but nothing is forwarded.
    fwd.stall();
    let o = b.charge("alice", "support", "u2").await;
    assert!(
        matches!(o, Outcome::Unavailable(Unavailable::Timeout(t)) if t == Duration::from_millis(30)),
        "{o:?}"
    );
    assert!(matches!(
        b.charge("alice", "support", "u2").await,
        Outcome::Unavailable(Unavailable::FailingFast)
    ));
    fwd.restore();
    // The stalled request may or may not have reached Redis; later ones count.
    let o = until_allowed(&b, "alice", "u3").await;
    assert!((2..=3).contains(&used(&o)[0]), "{o:?}");
}

#[tokio::test]
async fn a_connection_that_went_silent_is_replaced() {
    let _db = flushed(12).await;
    let fwd = common::pg::Forwarder::start_to(redis_addr()).await;
    let b = replica(&config(
        fwd.addr,
        12,
        &["{purpose: support, requests: 100, window_seconds: 3600}"],
        "  timeout_ms: 30\n  connect_timeout_ms: 200\n",
    ));
    assert_eq!(used(&until_allowed(&b, "alice", "u1").await), [1]);
    // The open connection never answers again, and never closes; only a new
    // connection gets through. The connection manager alone would wait on
    // the old one forever.
    fwd.freeze_existing();
    let o = b.charge("alice", "support", "u2").await;
    assert!(matches!(o, Outcome::Unavailable(_)), "{o:?}");
    let o = until_allowed(&b, "alice", "u3").await;
    assert!((2..=3).contains(&used(&o)[0]), "{o:?}");
}

#[tokio::test]
async fn fifty_concurrent_new_owners_on_a_budget_of_ten_allow_exactly_ten() {
    let _db = flushed(7).await;
    let cfg = config(
        redis_addr(),
        7,
        &["{purpose: support, distinct_owners: 10, window_seconds: 3600}"],
        "  timeout_ms: 2000\n",
    );
    let replicas = [replica(&cfg), replica(&cfg)];
    // Warm both connections so no check waits for a connection to be made.
    for r in &replicas {
        let p = r.peek("alice", "support", "warm").await.unwrap();
        assert_eq!(p.current[0].used, 0);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let b = replicas[i % 2].clone();
        tasks.spawn(async move { b.charge("alice", "support", &format!("owner-{i}")).await });
    }
    let (mut ok, mut exceeded) = (0, 0);
    while let Some(o) = tasks.join_next().await {
        match o.unwrap() {
            Outcome::Allowed { .. } => ok += 1,
            Outcome::Exceeded { .. } => exceeded += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((ok, exceeded), (10, 40));
    let p = replicas[0]
        .peek("alice", "support", "owner-x")
        .await
        .unwrap();
    assert_eq!(p.current[0].used, 10);
    assert!(matches!(p.if_charged, Outcome::Exceeded { .. }));
}

#[tokio::test]
async fn a_refusal_by_one_limit_consumes_nothing_on_the_others() {
    let _db = flushed(8).await;
    let cfg = config(
        redis_addr(),
        8,
        &[
            "{purpose: support, distinct_owners: 5, window_seconds: 3600}",
            "{purpose: support, requests: 2, window_seconds: 3600}",
            "{purpose: abuse, distinct_owners: 1, window_seconds: 3600}",
            "{purpose: abuse, requests: 10, window_seconds: 60}",
        ],
        "",
    );
    let b = replica(&cfg);
    assert_eq!(used(&b.charge("alice", "support", "u1").await), [1, 1]);
    assert_eq!(used(&b.charge("alice", "support", "u2").await), [2, 2]);
    // The request budget is spent: the new owner is not counted either.
    let o = b.charge("alice", "support", "u3").await;
    let Outcome::Exceeded { limit, usage, .. } = &o else {
        panic!("{o:?}")
    };
    assert_eq!(limit.kind, LimitKind::Requests);
    assert!(!usage[0].refused && usage[1].refused);
    let p = b.peek("alice", "support", "u3").await.unwrap();
    assert_eq!(p.current.iter().map(|u| u.used).collect::<Vec<_>>(), [2, 2]);
    assert!(!p.current[0].owner_counted);

    // The other way round: the owner budget refuses, requests stay uncounted.
    assert_eq!(used(&b.charge("alice", "abuse", "u1").await), [1, 1]);
    let o = b.charge("alice", "abuse", "u2").await;
    let Outcome::Exceeded { limit, .. } = &o else {
        panic!("{o:?}")
    };
    assert_eq!(limit.kind, LimitKind::DistinctOwners);
    let p = b.peek("alice", "abuse", "u2").await.unwrap();
    assert_eq!(p.current.iter().map(|u| u.used).collect::<Vec<_>>(), [1, 1]);
    // A re-read of the counted owner passes and counts one more request.
    assert_eq!(used(&b.charge("alice", "abuse", "u1").await), [1, 2]);
}

#[tokio::test]
async fn peek_reads_without_consuming() {
    let _db = flushed(9).await;
    let cfg = config(
        redis_addr(),
        9,
        &["{purpose: support, distinct_owners: 2, window_seconds: 3600}"],
        "",
    );
    let b = replica(&cfg);
    for _ in 0..3 {
        let p = b.peek("alice", "support", "u1").await.unwrap();
        assert_eq!(p.current[0].used, 0);
        assert_eq!(used(&p.if_charged), [1]);
    }
    b.charge("alice", "support", "u1").await;
    let p = b.peek("alice", "support", "u1").await.unwrap();
    assert_eq!(p.current[0].used, 1);
    assert!(p.current[0].owner_counted);
    assert_eq!(used(&p.if_charged), [1]);
    let p = b.peek("alice", "support", "u2").await.unwrap();
    assert!(!p.current[0].owner_counted);
    assert_eq!(used(&p.if_charged), [2]);
}

#[tokio::test]
async fn redis_holds_only_hashed_prefixed_expiring_names() {
    let mut direct = flushed(10).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hk"), "replica-shared-key\n").unwrap();
    let extra = format!(
        "  key_prefix: \"pgtest:\"\n  hash_key_file: \"{}\"\n",
        dir.path().join("hk").display()
    );
    let cfg = config(
        redis_addr(),
        10,
        &[
            "{purpose: support, distinct_owners: 5, window_seconds: 3600}",
            "{purpose: support, requests: 50, window_seconds: 60}",
        ],
        &extra,
    );
    let b = replica(&cfg);
    b.charge("alice@corp.example", "support", "user-1234").await;
    b.charge("alice@corp.example", "support", "user-5678").await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut direct)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(keys.len(), 2, "{keys:?}");
    let tag = |k: &str| k[k.find('{').unwrap() + 1..k.find('}').unwrap()].to_string();
    assert_eq!(tag(&keys[0]), tag(&keys[1]), "one employee, one hash slot");
    for k in &keys {
        assert!(k.starts_with("pgtest:{"), "{k}");
        assert!(!k.contains("alice") && !k.contains("corp"), "{k}");
        let pttl: i64 = redis::cmd("PTTL")
            .arg(k)
            .query_async(&mut direct)
            .await
            .unwrap();
        assert!(pttl > 0, "{k} does not expire");
    }
    let owners_key = keys.iter().find(|k| k.ends_with(":o:3600")).unwrap();
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(owners_key)
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(members.len(), 2);
    for m in &members {
        assert!(m.parse::<u64>().is_ok(), "{m}");
    }
    // Another replica without the same hash key does not meet these counts.
    let other = replica(&config(
        redis_addr(),
        10,
        &["{purpose: support, distinct_owners: 5, window_seconds: 3600}"],
        "  key_prefix: \"pgtest:\"\n",
    ));
    let p = other
        .peek("alice@corp.example", "support", "user-1234")
        .await
        .unwrap();
    assert_eq!(p.current[0].used, 0);
}

#[tokio::test]
async fn a_key_without_expiry_is_not_trusted() {
    let mut direct = flushed(11).await;
    let cfg = config(
        redis_addr(),
        11,
        &["{purpose: support, requests: 2, window_seconds: 3600}"],
        "",
    );
    let b = replica(&cfg);
    b.charge("alice", "support", "u1").await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut direct)
        .await
        .unwrap();
    // Left behind without an expiry (by hand, or an older layout): it would
    // block the employee forever if it were counted.
    redis::cmd("SET")
        .arg(&keys[0])
        .arg(99)
        .query_async::<()>(&mut direct)
        .await
        .unwrap();
    let o = b.charge("alice", "support", "u1").await;
    assert_eq!(used(&o), [1], "{o:?}");
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut direct)
        .await
        .unwrap();
    assert!(pttl > 0 && pttl <= 3_600_000, "{pttl}");
}

/// A private redis-server on a free loopback port, killed on drop.
struct OwnRedis {
    child: std::process::Child,
    addr: SocketAddr,
}

impl OwnRedis {
    fn start(extra: &[&str]) -> OwnRedis {
        let addr = closed_port();
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &addr.port().to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server");
        let own = OwnRedis { child, addr };
        for _ in 0..100 {
            if std::net::TcpStream::connect(addr).is_ok() {
                return own;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not listen on {addr}");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The least-privilege ACL user of docs/budgets.md, with its password from
/// `password_file`, is all the budgets need; without the password, checks
/// are unavailable (fail closed).
#[tokio::test]
async fn a_least_privilege_acl_user_with_a_password_file_suffices() {
    let docs = std::fs::read_to_string(common::repo().join("docs/budgets.md")).unwrap();
    let rule = docs
        .lines()
        .find_map(|l| l.trim().strip_prefix("user purposegate "))
        .expect("docs/budgets.md lists the ACL rule `user purposegate ...`");
    let rule = rule.replace("<password>", "s3cret");
    let mut args = vec!["--user", "default", "off", "--user", "purposegate"];
    args.extend(rule.split_whitespace());
    let own = OwnRedis::start(&args);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
    let limits = ["{purpose: support, distinct_owners: 1, window_seconds: 3600}"];
    let url = format!("purposegate@{}", own.addr);
    let with_pw = |extra: &str| {
        let text = format!(
            "{BASE}budgets:\n  redis_url: \"redis://{url}/0\"\n{extra}  limits:\n    - {}\n",
            limits[0]
        );
        Config::parse(&dir.path().join("c.yaml"), &text)
            .unwrap()
            .budgets
            .unwrap()
    };
    let b = replica(&with_pw("  password_file: pw\n"));
    let o = until_allowed(&b, "alice", "u1").await;
    assert_eq!(used(&o), [1]);
    assert!(matches!(
        b.charge("alice", "support", "u2").await,
        Outcome::Exceeded { .. }
    ));
    assert_eq!(
        b.peek("alice", "support", "u1").await.unwrap().current[0].used,
        1
    );

    let no_pw = replica(&with_pw(""));
    let o = no_pw.charge("alice", "support", "u1").await;
    assert!(matches!(o, Outcome::Unavailable(_)), "{o:?}");
}

/// The example of docs/budgets.md is a valid config.
#[test]
fn the_documented_example_parses() {
    let docs = std::fs::read_to_string(common::repo().join("docs/budgets.md")).unwrap();
    let example = docs
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.starts_with("budgets:\n  redis_url"))
        .expect("a ```yaml budgets: example");
    let cfg = Config::parse(Path::new("/etc/pg/c.yaml"), &format!("{BASE}{example}"))
        .unwrap()
        .budgets
        .unwrap();
    assert_eq!(cfg.limits.len(), 3);
    assert_eq!(
        cfg.password_file.as_deref(),
        Some(Path::new("/etc/pg/secrets/redis-password"))
    );
}

#[test]
fn config_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let text = format!("{BASE}budgets:\n  redis_url: \"redis://127.0.0.1:6379/0\"\n  limits:\n    - {{purpose: support, distinct_owners: 20, window_seconds: 86400}}\n    - {{purpose: training, requests: 10, distinct_owners: 3, window_seconds: 3600}}\n");
    std::fs::write(&path, text).unwrap();
    let e = Config::load(&path).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:18: budgets.limits: training: set exactly one of distinct_owners and requests",
            path.display()
        )
    );
}
