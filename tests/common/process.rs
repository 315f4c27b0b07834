//! `purposegate serve` as a separate process: started with an optional
//! file-size limit (a full disk), its addresses read from its JSON log line.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_purposegate"))
}

/// A `serve` process and the addresses it printed.
pub struct Served {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

impl Served {
    /// SIGTERM and wait: the graceful path (drain, flush, final checkpoint).
    pub fn stop(mut self) {
        // SAFETY: kill(2) on the pid of our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `serve`; `fsize_limit` caps file sizes (a full disk), `stdout`
/// pipes the process's stdout for the mirror test.
pub fn serve(config: &Path, fsize_limit: Option<u64>, stdout: bool) -> Served {
    let mut cmd = bin();
    cmd.args(["serve", "--config"])
        .arg(config)
        .stdout(if stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped());
    if let Some(limit) = fsize_limit {
        use std::os::unix::process::CommandExt;
        // SAFETY: only async-signal-safe libc calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let rl = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                libc::setrlimit(libc::RLIMIT_FSIZE, &rl);
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // PURPOSEGATE_TEST_LOGS=1 shows the proxy's log while debugging.
            if std::env::var_os("PURPOSEGATE_TEST_LOGS").is_some() {
                eprintln!("serve: {line}");
            }
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            let f = &v["fields"];
            if let (Some(a), Some(b)) = (f["addr"].as_str(), f["admin_addr"].as_str()) {
                let _ = tx.send((a.parse().unwrap(), b.parse().unwrap()));
            }
        }
    });
    let (addr, admin) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("serve printed its addresses");
    Served { child, addr, admin }
}
