//! What a lookup answers without (or instead of) asking the service: per
//! (kind, id) answers, found and 404 alike, are used for `cache_ttl_seconds`;
//! the cache is bounded (`consent::cache::ConsentCache`: expired entries go
//! first, then arbitrary ones); concurrent misses of one key share one call
//! (`consent::coalesce::Inflight`); when the call fails, an answer younger
//! than `max_staleness_seconds` is used and marked stale, else the lookup is
//! unavailable. After a failure that says the service is down, lookups with
//! no usable answer fail at once for `fail_fast_ms` instead of each waiting
//! for the timeout (as the PostgreSQL consent backend does).
//!
//! Ages are read from a `Clock` so that tests can move time.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::LookupError;
use super::metrics::LookupResult;
use super::{Answer, JustificationsConfig, Kind, Source, Unavailable};
use crate::consent::cache::{Cached, ConsentCache};
use crate::consent::coalesce::Inflight;

/// The time cached answers age by.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// `Instant::now()`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told (tests).
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    offset_ms: AtomicU64,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock {
            base: Instant::now(),
            offset_ms: AtomicU64::new(0),
        }
    }
}

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.offset_ms.load(Ordering::SeqCst))
    }
}

/// The cache key of a (kind, id): kinds contain no `:`, so the first `:`
/// separates them unambiguously.
pub fn key(kind: Kind, id: &str) -> String {
    let mut k = String::with_capacity(kind.as_str().len() + 1 + id.len());
    k.push_str(kind.as_str());
    k.push(':');
    k.push_str(id);
    k
}

/// The outcome of one lookup and how to count it.
#[derive(Debug)]
pub struct Resolved {
    pub answer: Answer,
    pub source: Option<Source>,
    pub result: LookupResult,
}

/// Whether the service failed lately (shared by all keys).
struct FailFast {
    base: Instant,
    window: Duration,
    /// Milliseconds after `base` until which lookups fail fast.
    until_ms: AtomicU64,
    down: AtomicBool,
}

impl FailFast {
    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }

    fn active(&self, now: Instant) -> bool {
        self.millis(now) < self.until_ms.load(Ordering::Relaxed)
    }

    fn trip(&self, now: Instant, why: &LookupError) {
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %why, "justification service unavailable; requests needing it fail closed");
        }
        self.until_ms
            .store(self.millis(now + self.window), Ordering::Relaxed);
    }

    fn clear(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("justification service answers again");
        }
        self.until_ms.store(0, Ordering::Relaxed);
    }
}

/// A call's outcome, shared by every lookup that waited for it.
type Fetched = Result<Answer, LookupError>;

/// Answers by key, the calls in flight and the fail-fast state.
pub struct LookupCache {
    entries: ConsentCache<Answer>,
    inflight: Inflight<Fetched>,
    fail_fast: FailFast,
    clock: Arc<dyn Clock>,
}

impl LookupCache {
    pub fn new(cfg: &JustificationsConfig, clock: Arc<dyn Clock>) -> LookupCache {
        LookupCache {
            entries: ConsentCache::new(cfg.cache_ttl, cfg.max_staleness, cfg.cache_max_entries),
            inflight: Inflight::default(),
            fail_fast: FailFast {
                base: clock.now(),
                window: cfg.fail_fast,
                until_ms: AtomicU64::new(0),
                down: AtomicBool::new(false),
            },
            clock,
        }
    }

    /// Answers `key` from the cache or by running `fetch` (shared with every
    /// concurrent miss of `key`). `fetch` must return `Found` or `NotFound`
    /// on success.
    pub async fn get<F, Fut>(&self, key: &str, fetch: F) -> Resolved
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Fetched>,
    {
        let now = self.clock.now();
        let fallback = match self.entries.get(key, now) {
            Cached::Fresh(a) => return resolved(&a, Source::Cached, LookupResult::Hit),
            Cached::Stale(a) => Some(a),
            Cached::Missing => None,
        };
        if self.fail_fast.active(now) {
            return failed(fallback, Unavailable::FailingFast);
        }
        let epoch = self.entries.epoch();
        let call = async {
            let outcome = fetch().await;
            match &outcome {
                Ok(answer) => {
                    // Aged from when it was asked: never fresher than it is.
                    self.entries
                        .insert(key, Arc::new(answer.clone()), now, epoch);
                    self.fail_fast.clear();
                }
                Err(e) if e.service_down() => self.fail_fast.trip(self.clock.now(), e),
                Err(_) => {}
            }
            Ok(Arc::new(outcome))
        };
        match self.inflight.run(key, call).await {
            Ok(shared) => match shared.as_ref() {
                Ok(Answer::NotFound) => {
                    resolved(&Answer::NotFound, Source::Fresh, LookupResult::NotFound)
                }
                Ok(answer) => resolved(answer, Source::Fresh, LookupResult::Miss),
                Err(e) => failed(fallback, Unavailable::Failed(e.clone())),
            },
            Err(_) => failed(
                fallback,
                Unavailable::Failed(LookupError::Internal("shared lookup")),
            ),
        }
    }

    /// Cached answers (stale ones included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn resolved(answer: &Answer, source: Source, result: LookupResult) -> Resolved {
    Resolved {
        answer: answer.clone(),
        source: Some(source),
        result,
    }
}

/// The service gave no answer: a stale one if there is one, else unavailable.
fn failed(fallback: Option<Arc<Answer>>, why: Unavailable) -> Resolved {
    match fallback {
        Some(a) => resolved(&a, Source::Stale, LookupResult::Stale),
        None => Resolved {
            answer: Answer::Unavailable(why),
            source: None,
            result: LookupResult::Error,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::justification::{Justification, Status};
    use std::path::Path;
    use std::sync::atomic::AtomicUsize;

    fn cfg() -> JustificationsConfig {
        let text = "listen: \"127.0.0.1:8080\"\nadmin_listen: \"127.0.0.1:9100\"\njwt:\n  issuer: \"i\"\n  audiences: [\"a\"]\n  algorithms: [\"ES256\"]\n  jwks_file: \"jwks.json\"\npolicy_dir: \"policies\"\nconsent_file: \"consent.yaml\"\nupstreams:\n  content: {url: \"http://127.0.0.1:9090\"}\naudit:\n  path: \"audit.jsonl\"\njustifications:\n  url: \"http://127.0.0.1:1/{kind}/{id}\"\n  cache_ttl_seconds: 10\n  max_staleness_seconds: 60\n  fail_fast_ms: 1000\n  cache_max_entries: 50\n";
        crate::config::Config::parse(Path::new("c.yaml"), text)
            .unwrap()
            .justifications
            .unwrap()
    }

    fn open() -> Answer {
        Answer::Found(Arc::new(Justification {
            status: Status::Open,
            assignees: vec!["e1".into()],
            subjects: vec!["u1".into()],
            requested_by: None,
        }))
    }

    fn setup() -> (LookupCache, Arc<ManualClock>, AtomicUsize) {
        let clock = Arc::new(ManualClock::default());
        (
            LookupCache::new(&cfg(), clock.clone()),
            clock,
            AtomicUsize::new(0),
        )
    }

    async fn ask(c: &LookupCache, calls: &AtomicUsize, outcome: Fetched) -> Resolved {
        c.get("ticket:T-1", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            outcome
        })
        .await
    }

    #[tokio::test]
    async fn fresh_then_cached_then_asked_again() {
        let (c, clock, calls) = setup();
        let r = ask(&c, &calls, Ok(open())).await;
        assert_eq!(
            (r.source, r.result),
            (Some(Source::Fresh), LookupResult::Miss)
        );
        let r = ask(&c, &calls, Ok(Answer::NotFound)).await;
        assert_eq!(
            (r.source, r.result),
            (Some(Source::Cached), LookupResult::Hit)
        );
        assert_eq!(r.answer, open());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        clock.advance(Duration::from_secs(10));
        let r = ask(&c, &calls, Ok(Answer::NotFound)).await;
        assert_eq!(r.answer, Answer::NotFound);
        assert_eq!(r.result, LookupResult::NotFound);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // 404s are cached too.
        let r = ask(&c, &calls, Ok(open())).await;
        assert_eq!((r.answer, r.result), (Answer::NotFound, LookupResult::Hit));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn stale_within_the_limit_then_unavailable() {
        let (c, clock, calls) = setup();
        ask(&c, &calls, Ok(open())).await;
        clock.advance(Duration::from_secs(30));
        let r = ask(&c, &calls, Err(LookupError::Status(503))).await;
        assert_eq!(r.answer, open());
        assert_eq!(
            (r.source, r.result),
            (Some(Source::Stale), LookupResult::Stale)
        );
        // Within the fail-fast window the stale answer is used without a call.
        let r = ask(&c, &calls, Ok(Answer::NotFound)).await;
        assert_eq!(r.source, Some(Source::Stale));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        clock.advance(Duration::from_secs(30));
        let r = ask(&c, &calls, Err(LookupError::Timeout)).await;
        assert_eq!(
            r.answer,
            Answer::Unavailable(Unavailable::Failed(LookupError::Timeout))
        );
        assert_eq!((r.source, r.result), (None, LookupResult::Error));
    }

    #[tokio::test]
    async fn fails_fast_after_the_service_went_down() {
        let (c, clock, calls) = setup();
        let r = ask(&c, &calls, Err(LookupError::Timeout)).await;
        assert!(matches!(
            r.answer,
            Answer::Unavailable(Unavailable::Failed(_))
        ));
        let r = ask(&c, &calls, Ok(open())).await;
        assert_eq!(r.answer, Answer::Unavailable(Unavailable::FailingFast));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        clock.advance(Duration::from_millis(1000));
        let r = ask(&c, &calls, Ok(open())).await;
        assert_eq!(r.answer, open());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // A bad answer for one id is not an outage: no fail-fast after it.
        let r = ask(&c, &calls, Err(LookupError::BadAnswer("x".into()))).await;
        assert_eq!(r.source, Some(Source::Cached));
        clock.advance(Duration::from_secs(10));
        let r = ask(&c, &calls, Err(LookupError::BadAnswer("x".into()))).await;
        assert_eq!(r.source, Some(Source::Stale));
        let r = c.get("case:other", || async { Ok(Answer::NotFound) }).await;
        assert_eq!(r.answer, Answer::NotFound);
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_call() {
        let (c, _clock, calls) = setup();
        let lookups = (0..16).map(|_| {
            c.get("ticket:new", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(open())
            })
        });
        let all = futures_util::future::join_all(lookups).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(all
            .iter()
            .all(|r| r.answer == open() && r.source == Some(Source::Fresh)));
    }

    #[tokio::test]
    async fn size_is_bounded() {
        let (c, _clock, _calls) = setup();
        for i in 0..500 {
            c.get(&key(Kind::Case, &format!("C-{i}")), || async {
                Ok(Answer::NotFound)
            })
            .await;
            assert!(c.len() <= 50, "{} entries after {i}", c.len());
        }
        assert_eq!(key(Kind::Matter, "a:b"), "matter:a:b");
    }
}
