//! PostgreSQL helpers for the consent backend tests: a throwaway database per
//! test (created on the machine's local server, dropped on drop) and a TCP
//! forwarder on 127.0.0.1:0 in front of it that a test can cut (existing
//! connections severed, new ones refused) and restore, so that "the database
//! went away" is simulated without stopping the shared server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_postgres::{Client, NoTls};

/// Where the admin connection goes (override with PURPOSEGATE_TEST_PG).
pub fn admin_url() -> String {
    std::env::var("PURPOSEGATE_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".to_string())
}

/// The server's address, from the admin URL.
pub fn server_addr() -> SocketAddr {
    let cfg: tokio_postgres::Config = admin_url().parse().unwrap();
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn user() -> String {
    let cfg: tokio_postgres::Config = admin_url().parse().unwrap();
    cfg.get_user().unwrap_or("postgres").to_string()
}

pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL ({url}): {e}"));
    tokio::spawn(conn);
    client
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A database that exists for one test.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("pg_test_{}_{n}", std::process::id());
        let admin = connect(&admin_url()).await;
        // Separate statements: DROP/CREATE DATABASE refuse a transaction block.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        TestDb { name }
    }

    /// A URL for this database through `addr` (the server or a forwarder).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        format!(
            "postgres://{}@{}:{}/{}",
            user(),
            addr.ip(),
            addr.port(),
            self.name
        )
    }

    pub fn url(&self) -> String {
        self.url_via(server_addr())
    }

    pub async fn client(&self) -> Client {
        connect(&self.url()).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside a runtime: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok((client, conn)) = tokio_postgres::connect(&admin_url(), NoTls).await {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// What the forwarder does with connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Up,
    /// Severed and refused.
    Cut,
    /// Held open but nothing forwarded (a database that does not answer).
    Stall,
}

/// A cuttable TCP forwarder to the PostgreSQL server (or, with `start_to`,
/// to any loopback server, e.g. the local Redis).
pub struct Forwarder {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Bumped by `freeze_existing`; connections older than it are frozen.
    freeze: watch::Sender<u64>,
}

impl Forwarder {
    pub async fn start() -> Forwarder {
        Self::start_to(server_addr()).await
    }

    pub async fn start_to(target: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, rx) = watch::channel(Mode::Up);
        let (freeze, frozen) = watch::channel(0u64);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut rx = rx.clone();
                let now = *rx.borrow();
                match now {
                    Mode::Cut => drop(client), // refused: closed at once
                    Mode::Stall => {
                        tokio::spawn(async move {
                            let _ = rx.wait_for(|m| *m != Mode::Stall).await;
                            drop(client);
                        });
                    }
                    Mode::Up => {
                        let frozen = frozen.clone();
                        tokio::spawn(forward(client, target, rx, frozen));
                    }
                }
            }
        });
        Forwarder { addr, mode, freeze }
    }

    /// Freezes the connections open now: they stay open and forward nothing
    /// until the forwarder is dropped (a peer that vanished without a reset),
    /// while new connections are forwarded as usual.
    pub fn freeze_existing(&self) {
        self.freeze.send_modify(|epoch| *epoch += 1);
    }

    /// Severs every connection and refuses new ones.
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Stops forwarding but keeps connections open: the database seems to hang.
    /// Held connections are closed when the mode changes again.
    pub fn stall(&self) {
        self.mode.send_replace(Mode::Stall);
    }

    /// Accepts and forwards connections again.
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Up);
    }
}

async fn forward(
    mut client: TcpStream,
    target: SocketAddr,
    mut rx: watch::Receiver<Mode>,
    mut frozen: watch::Receiver<u64>,
) {
    let epoch = *frozen.borrow_and_update();
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    let freeze = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
        _ = rx.wait_for(|m| *m != Mode::Up) => false,
        _ = frozen.wait_for(|e| *e > epoch) => true,
    };
    if freeze {
        // Held silently until the forwarder (the mode's sender) is dropped.
        let _ = rx.wait_for(|_| false).await;
        return;
    }
    if *rx.borrow() == Mode::Stall {
        let _ = rx.wait_for(|m| *m != Mode::Stall).await;
    }
    // Dropping both sockets severs the connection.
}

/// A PostgreSQL server of the test's own (initdb + pg_ctl as the `postgres`
/// user, on a free port), for tests that must stop the database itself.
/// Stopped and removed on drop.
pub struct OwnPg {
    pub port: u16,
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
}

impl OwnPg {
    /// The server's binaries (Debian's layout), if installed.
    fn bin_dir() -> Option<std::path::PathBuf> {
        let mut found: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .collect();
        found.sort();
        found.pop()
    }

    fn as_postgres(&self, tool: &str, args: &[&str]) -> std::process::Output {
        std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"))
    }

    /// Creates and starts a cluster with trust auth on 127.0.0.1.
    pub fn start() -> OwnPg {
        let bin = Self::bin_dir().expect("PostgreSQL server binaries (initdb, pg_ctl)");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("purposegate-pg-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let chown = std::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(chown.success());
        let pg = OwnPg { port, dir, bin };
        let data = pg.data();
        let out = pg.as_postgres(
            "initdb",
            &["-D", &data, "--auth=trust", "-U", "postgres", "-E", "UTF8"],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.resume();
        pg
    }

    fn data(&self) -> String {
        self.dir.join("data").to_string_lossy().into_owned()
    }

    /// (Re)starts the server and waits until it accepts connections.
    pub fn resume(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").to_string_lossy().into_owned();
        let out = self.as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server (fast: sessions are cut).
    pub fn halt(&self) {
        let out = self.as_postgres("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for OwnPg {
    fn drop(&mut self) {
        let _ = self.as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
