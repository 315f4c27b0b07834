//! Files the proxy watches and writes: the cheap fingerprint that tells a
//! changed file set (path, size, mtime — metadata follows symlinks, so
//! Kubernetes' ConfigMap swaps are seen), the one polling loop every
//! reloadable part uses (policy/consent/keys, the listener's certificate,
//! the upstreams' TLS files), and writing a private key file. A leaf
//! module: it knows nothing of what the files mean.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};

/// A fingerprint of a set of files (see `fingerprint`).
pub type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// The size and mtime of each file (0 and none when missing), compared by
/// `watch` to notice edits, additions and removals.
pub fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    files
        .iter()
        .map(|f| {
            let meta = std::fs::metadata(f).ok();
            let len = meta.as_ref().map(|m| m.len()).unwrap_or(0);
            let mtime = meta.and_then(|m| m.modified().ok());
            (f.clone(), len, mtime)
        })
        .collect()
}

/// What `watch` polls and does.
pub struct Watched<F, R> {
    /// The files to fingerprint (evaluated each time: a directory's
    /// members can change).
    pub files: F,
    /// Runs on the blocking pool when the files changed or a kick came.
    pub reload: R,
    /// The fingerprint the current state was loaded from.
    pub loaded: Fingerprint,
}

/// Every `interval`, fingerprints the files on the blocking pool and, when
/// they changed (or `kicks` delivers, e.g. SIGHUP), runs `reload` there;
/// `on_tick` runs on every tick (cheap, on the runtime). Ends on `stop`.
pub async fn watch<F, R>(
    interval: Duration,
    watched: Watched<F, R>,
    on_tick: impl Fn(),
    mut kicks: Option<mpsc::UnboundedReceiver<()>>,
    mut stop: watch::Receiver<bool>,
) where
    F: Fn() -> Vec<PathBuf> + Send + Sync + 'static,
    R: Fn() + Send + Sync + 'static,
{
    let Watched {
        files,
        reload,
        loaded,
    } = watched;
    let (files, reload) = (std::sync::Arc::new(files), std::sync::Arc::new(reload));
    let mut last = loaded;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async {
                match kicks.as_mut() {
                    Some(k) => k.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
            _ = stop.changed() => return,
        };
        on_tick();
        let probe = files.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || fingerprint(&probe())).await else {
            continue;
        };
        if !forced && now == last {
            continue;
        }
        last = now;
        let reload = reload.clone();
        let _ = tokio::task::spawn_blocking(move || reload()).await;
    }
}

/// Writes a private key readable by its owner only.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(bytes)
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn reloads_on_change_and_on_a_kick_only() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.yaml");
        std::fs::write(&f, "1").unwrap();
        let reloads = Arc::new(AtomicUsize::new(0));
        let (stop_tx, stop) = watch::channel(false);
        let (kick, kicks) = mpsc::unbounded_channel();
        let (files, count) = (vec![f.clone()], reloads.clone());
        let task = tokio::spawn(watch(
            Duration::from_millis(20),
            Watched {
                files: move || files.clone(),
                reload: move || {
                    count.fetch_add(1, Ordering::SeqCst);
                },
                loaded: fingerprint(std::slice::from_ref(&f)),
            },
            || {},
            Some(kicks),
            stop,
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            reloads.load(Ordering::SeqCst),
            0,
            "unchanged files reload nothing"
        );
        std::fs::write(&f, "22").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(reloads.load(Ordering::SeqCst), 1);
        kick.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(reloads.load(Ordering::SeqCst), 2, "a kick forces a reload");
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }

    #[test]
    fn private_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        write_private_file(&p, b"secret").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
