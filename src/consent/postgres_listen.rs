//! The LISTEN/NOTIFY task of the PostgreSQL consent backend. On a dedicated
//! connection it listens on `purposegate_consent` (payload `user:<id>`,
//! `org:<id>` or `*`, sent by the migration's triggers) and drops the named
//! cache entry at once. It probes the database every `PROBE_EVERY` (so
//! `/readyz` follows the database without traffic), reconnects with
//! exponential backoff and jitter, and after every (re)connect expires the
//! whole cache (each entry is re-read before it is trusted again, and is
//! only a fallback meanwhile) because notifications sent while it was away
//! are lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{AsyncMessage, NoTls};

use super::cache::ConsentCache;
use super::postgres::Health;
use super::{OrgConsent, UserConsent};

/// The NOTIFY channel the migration's triggers use.
pub const CHANNEL: &str = "purposegate_consent";

const PROBE_EVERY: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Notifications queued between the connection and the cache; on overflow
/// the whole cache is cleared (correct, just colder).
const QUEUE: usize = 4096;

pub(crate) struct Listener {
    pub pg: tokio_postgres::Config,
    pub users: Arc<ConsentCache<UserConsent>>,
    pub orgs: Arc<ConsentCache<OrgConsent>>,
    pub health: Arc<Health>,
    pub probe_timeout: Duration,
}

/// How one listening session ended.
enum End {
    Stopped,
    Lost(String),
}

impl Listener {
    /// Runs until `stop` fires or its sender is dropped.
    pub async fn run(self, mut stop: oneshot::Receiver<()>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let connected = Instant::now();
            let end = tokio::select! {
                end = self.session() => end,
                _ = &mut stop => End::Stopped,
            };
            let why = match end {
                End::Stopped => return,
                End::Lost(why) => why,
            };
            self.health.mark_failed(Instant::now());
            if connected.elapsed() > BACKOFF_MAX {
                backoff = BACKOFF_MIN;
            }
            let wait = jitter(backoff);
            tracing::warn!(error = %why, retry_in_ms = wait.as_millis() as u64, "consent listener disconnected");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut stop => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One connection: LISTEN, clear, then apply notifications and probe
    /// until the connection fails.
    async fn session(&self) -> End {
        let connect = tokio::time::timeout(self.probe_timeout * 4, self.pg.connect(NoTls)).await;
        let (client, mut conn) = match connect {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return End::Lost(e.to_string()),
            Err(_) => return End::Lost("connect timed out".to_string()),
        };
        let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
        let users = self.users.clone();
        let orgs = self.orgs.clone();
        // The connection must be polled for LISTEN to complete and for
        // notifications to arrive; it ends when the client is dropped.
        let driver = tokio::spawn(async move {
            while let Some(msg) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                match msg {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.try_send(n.payload().to_string()).is_err() {
                            users.expire_all(Instant::now());
                            orgs.expire_all(Instant::now());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return e.to_string(),
                }
            }
            "connection closed".to_string()
        });
        let listen = tokio::time::timeout(
            self.probe_timeout,
            client.batch_execute(&format!("LISTEN {CHANNEL}")),
        )
        .await;
        if !matches!(listen, Ok(Ok(()))) {
            driver.abort();
            return End::Lost("LISTEN failed".to_string());
        }
        // Anything cached may predate a change we were not told about: read
        // it again before trusting it (it stays a fallback meanwhile).
        self.users.expire_all(Instant::now());
        self.orgs.expire_all(Instant::now());
        self.health.mark_ok();
        tracing::info!("consent listener connected");
        let mut probe = tokio::time::interval(PROBE_EVERY);
        probe.tick().await;
        let why = loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(payload) => self.apply(&payload),
                    None => break "notification stream ended".to_string(),
                },
                _ = probe.tick() => {
                    let ok = tokio::time::timeout(self.probe_timeout, client.simple_query("SELECT 1")).await;
                    if !matches!(ok, Ok(Ok(_))) {
                        break "probe failed".to_string();
                    }
                    self.health.mark_ok();
                }
            }
        };
        driver.abort();
        End::Lost(why)
    }

    /// Applies one notification payload.
    fn apply(&self, payload: &str) {
        match payload.split_once(':') {
            Some(("user", id)) => self.users.invalidate(id),
            Some(("org", id)) => self.orgs.invalidate(id),
            _ => {
                self.users.clear();
                self.orgs.clear();
            }
        }
    }
}

/// `base` scaled by a random factor in [0.5, 1.5) so that replicas do not
/// reconnect in lockstep.
fn jitter(base: Duration) -> Duration {
    let factor = rand::rng().random_range(0.5..1.5);
    base.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_to_one_and_a_half() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(1000));
            assert!(
                j >= Duration::from_millis(500) && j < Duration::from_millis(1500),
                "{j:?}"
            );
        }
    }
}
