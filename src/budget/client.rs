//! The connection to Redis: a `redis::aio::ConnectionManager` created lazily
//! (the proxy starts and is live without Redis), a bound on every check
//! (`timeout_ms`), and a fail-fast window: after a failure, checks are
//! answered "unavailable" at once for a second instead of each waiting the
//! timeout, while a background task probes Redis and closes the window as
//! soon as Redis answers again.
//!
//! The manager reconnects by itself when its connection drops. A connection
//! that stays open but stops answering (a stalled server, a black-holed
//! network) is not something it notices, so the probe replaces the manager
//! (a fresh connection) when a probe times out.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Notify;

use super::outcome::Unavailable;

/// How long checks fail fast after a failure.
pub const FAIL_FAST: Duration = Duration::from_secs(1);
/// First and longest pause between probes while Redis is unavailable; the
/// longest is under `FAIL_FAST`, so failing probes keep the window closed.
const PROBE_FIRST: Duration = Duration::from_millis(50);
const PROBE_MAX: Duration = Duration::from_millis(400);

/// A shared, self-healing connection.
pub(crate) struct Conn {
    client: redis::Client,
    config: ConnectionManagerConfig,
    manager: ArcSwap<ConnectionManager>,
    /// Bound of one check.
    timeout: Duration,
    /// Bound of one connection attempt.
    connect_timeout: Duration,
    epoch: Instant,
    /// Checks fail fast until this many ms after `epoch` (0: not failing).
    fail_until_ms: AtomicU64,
    /// Last known state, for logging transitions only.
    healthy: AtomicBool,
    /// Wakes the probe task.
    wake: Arc<Notify>,
}

impl Conn {
    /// Creates the connection and its probe task (which connects at once in
    /// the background). Must be called inside a Tokio runtime.
    pub(crate) fn start(
        info: redis::ConnectionInfo,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Arc<Conn>, redis::RedisError> {
        let client = redis::Client::open(info)?;
        // No retries inside the manager: the probe task paces reconnection.
        // Its response timeout only frees requests abandoned at our own
        // (shorter) bound, so that a stuck connection does not pile them up.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(timeout * 2))
            .set_number_of_retries(0);
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        let wake = Arc::new(Notify::new());
        let conn = Arc::new(Conn {
            client,
            config,
            manager: ArcSwap::from_pointee(manager),
            timeout,
            connect_timeout,
            epoch: Instant::now(),
            fail_until_ms: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            wake: wake.clone(),
        });
        wake.notify_one();
        tokio::spawn(probe_loop(Arc::downgrade(&conn), wake));
        Ok(conn)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a failure happened less than `FAIL_FAST` ago (and no probe
    /// or check has succeeded since).
    pub(crate) fn failing_fast(&self) -> bool {
        self.fail_until_ms.load(Ordering::Relaxed) > self.now_ms()
    }

    fn mark_failed(&self, why: &Unavailable) {
        let until = self.now_ms() + u64::try_from(FAIL_FAST.as_millis()).unwrap_or(1000);
        self.fail_until_ms.store(until.max(1), Ordering::Relaxed);
        if self.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(error = %why, "access budgets: Redis unavailable; budget checks fail closed (503 budget_unavailable) until it answers");
        }
    }

    fn mark_ok(&self) {
        if self.fail_until_ms.load(Ordering::Relaxed) != 0 {
            self.fail_until_ms.store(0, Ordering::Relaxed);
        }
        if !self.healthy.swap(true, Ordering::Relaxed) {
            tracing::info!("access budgets: Redis answers again");
        }
    }

    /// Runs one script invocation within the check timeout. A failure opens
    /// the fail-fast window and wakes the probe.
    pub(crate) async fn invoke<T: redis::FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, Unavailable> {
        if self.failing_fast() {
            return Err(Unavailable::FailingFast);
        }
        let mut manager = (**self.manager.load()).clone();
        let result = match tokio::time::timeout(self.timeout, inv.invoke_async(&mut manager)).await
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Unavailable::Redis(e)),
            Err(_) => Err(Unavailable::Timeout(self.timeout)),
        };
        match &result {
            Ok(_) => self.mark_ok(),
            Err(e) => {
                self.mark_failed(e);
                self.wake.notify_one();
            }
        }
        result
    }

    /// One probe: a PING that may wait for a connection to be made, then one
    /// that must answer within the check timeout. A probe that times out
    /// (ours or the manager's response timeout) replaces the manager: the
    /// connection may be stuck, and only a new one would tell.
    async fn probe(&self) -> bool {
        let mut manager = (**self.manager.load()).clone();
        let connect = self.connect_timeout + self.timeout;
        let mut result = bounded_ping(&mut manager, connect).await;
        if result.is_ok() {
            result = bounded_ping(&mut manager, self.timeout).await;
        }
        match result {
            Ok(()) => {
                self.mark_ok();
                true
            }
            Err(e) => {
                if is_timeout(&e) {
                    self.replace_manager();
                }
                self.mark_failed(&e);
                false
            }
        }
    }

    fn replace_manager(&self) {
        match ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone()) {
            Ok(m) => self.manager.store(Arc::new(m)),
            Err(e) => {
                tracing::warn!(error = %e, "access budgets: cannot create a Redis connection manager")
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Lets the probe task see that it has nothing left to watch.
        self.wake.notify_one();
    }
}

async fn bounded_ping(manager: &mut ConnectionManager, bound: Duration) -> Result<(), Unavailable> {
    let ping = redis::cmd("PING");
    match tokio::time::timeout(bound, ping.query_async::<()>(manager)).await {
        Ok(r) => r.map_err(Unavailable::Redis),
        Err(_) => Err(Unavailable::Timeout(bound)),
    }
}

fn is_timeout(e: &Unavailable) -> bool {
    match e {
        Unavailable::Timeout(_) => true,
        Unavailable::Redis(e) => e.is_timeout(),
        _ => false,
    }
}

/// Probes at start and after each failure until Redis answers, pausing
/// `PROBE_FIRST` doubling up to `PROBE_MAX`; ends when the `Conn` is dropped.
async fn probe_loop(conn: Weak<Conn>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        let mut pause = PROBE_FIRST;
        loop {
            let Some(c) = conn.upgrade() else { return };
            let healthy = c.probe().await;
            drop(c);
            if healthy {
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(PROBE_MAX);
        }
    }
}
