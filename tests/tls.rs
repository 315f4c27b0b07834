//! TLS end to end, with certificates generated per run (`tls::dev`): TLS 1.3
//! and 1.2 handshakes (and nothing older), HTTP/2 and HTTP/1.1 over ALPN,
//! mTLS accepted and refused, the client certificate's subject in the audit
//! record, certificate hot reload while a client keeps connecting, the expiry
//! metric, and upstreams over TLS with a custom CA and a client certificate.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Harness, Opts, Tok};
use http::{Method, Request, Response, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use purposegate::config::TlsConfig;
use purposegate::tls::dev::{DevCa, Issued};
use rustls::client::Resumption;
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const PATH: &str = "/v1/users/u1/conversations/c1";
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A test PKI on disk: a CA, a server certificate for localhost/127.0.0.1,
/// a client certificate for `alice`, and a second CA nobody trusts.
struct Pki {
    dir: tempfile::TempDir,
    ca: DevCa,
    other_ca: DevCa,
    server: Issued,
    alice: Issued,
}

impl Pki {
    fn new() -> Pki {
        let ca = DevCa::new("Test CA").unwrap();
        let server = ca
            .server("server-one", &["localhost", "127.0.0.1"], 30)
            .unwrap();
        let alice = ca.client("alice", 30).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
        write_pair(dir.path(), "server", &server);
        Pki {
            dir,
            ca,
            other_ca: DevCa::new("Other CA").unwrap(),
            server,
            alice,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The `tls:` config section; `client_auth` is `None` for no mTLS.
    fn yaml(&self, client_auth: Option<&str>) -> String {
        let mut yaml = format!(
            "tls:\n  cert_file: \"{}\"\n  key_file: \"{}\"\n",
            self.path("server.pem").display(),
            self.path("server.key").display()
        );
        if let Some(mode) = client_auth {
            yaml.push_str(&format!(
                "  client_ca_file: \"{}\"\n  client_auth: {mode}\n",
                self.path("ca.pem").display()
            ));
        }
        yaml
    }

    /// A client configuration trusting the test CA.
    fn client(
        &self,
        versions: &[&'static SupportedProtocolVersion],
        alpn: &[&str],
        identity: Option<&Issued>,
    ) -> Arc<ClientConfig> {
        client_config(self.ca.cert_pem(), versions, alpn, identity)
    }
}

fn write_pair(dir: &Path, name: &str, issued: &Issued) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    (cert, key)
}

fn client_config(
    ca_pem: &str,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&str],
    identity: Option<&Issued>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = ClientConfig::builder_with_provider(purposegate::tls::provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(id.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    // Every connection is a full handshake, so each one sees the current certificate.
    config.resumption = Resumption::disabled();
    Arc::new(config)
}

const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
const ALPN_BOTH: &[&str] = &["h2", "http/1.1"];

async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(IO_TIMEOUT, TlsConnector::from(config).connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// The subject of the certificate the server presented.
fn server_subject(stream: &TlsStream<TcpStream>) -> String {
    let certs = stream.get_ref().1.peer_certificates().unwrap();
    purposegate::tls::x509::subject(&certs[0]).unwrap()
}

/// A response read to the end.
#[derive(Debug)]
struct Answer {
    version: Version,
    status: u16,
    request_id: String,
    body: Bytes,
}

/// One GET over an established TLS stream, speaking HTTP/2 when ALPN chose
/// it and HTTP/1.1 otherwise.
async fn get(
    stream: TlsStream<TcpStream>,
    path: &str,
    token: Option<&str>,
) -> Result<Answer, String> {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(stream);
    let uri = if h2 {
        format!("https://localhost{path}")
    } else {
        path.to_string()
    };
    let mut req = Request::get(uri).header("host", "localhost");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Empty::<Bytes>::new()).unwrap();
    let exchange = async {
        let resp = if h2 {
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            send.send_request(req).await?
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            send.send_request(req).await?
        };
        let version = resp.version();
        let status = resp.status().as_u16();
        let request_id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>(Answer {
            version,
            status,
            request_id,
            body,
        })
    };
    match tokio::time::timeout(IO_TIMEOUT, exchange).await {
        Err(_) => Err("request timed out".into()),
        Ok(r) => r.map_err(|e| e.to_string()),
    }
}

/// Connects and GETs; any failure (handshake or HTTP) is an `Err`.
async fn fetch(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    path: &str,
    token: Option<&str>,
) -> Result<Answer, String> {
    let stream = connect(addr, config).await.map_err(|e| e.to_string())?;
    get(stream, path, token).await
}

async fn metrics(h: &Harness) -> String {
    String::from_utf8_lossy(&h.admin_get("/metrics").await.body).into_owned()
}

/// The value of a sample line starting with `prefix` in the metrics text.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn tls13_and_tls12_handshakes_serve_requests() {
    let pki = Pki::new();
    let h = Harness::start_with(Opts {
        extra_yaml: pki.yaml(None),
        ..Opts::default()
    })
    .await;
    let token = h.token(&Tok::abuse("u1"));
    for (version, want) in [
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
    ] {
        let stream = connect(h.addr, pki.client(&[version], ALPN_BOTH, None))
            .await
            .unwrap();
        assert_eq!(stream.get_ref().1.protocol_version(), Some(want));
        assert!(server_subject(&stream).contains("CN=server-one"));
        let answer = get(stream, PATH, Some(&token)).await.unwrap();
        assert_eq!(answer.status, 200, "{want:?}: {answer:?}");
        assert_eq!(&answer.body[..], b"user content");
    }
    assert_eq!(h.upstream.count(), 2);
}

/// A ClientHello that offers only `version` (TLS 1.0 = 0x0301, 1.1 = 0x0302)
/// and CBC suites from that era, without the supported_versions extension.
fn legacy_client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut body = version.to_vec();
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // cipher suites
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    let mut handshake = vec![0x01, 0x00];
    handshake.extend_from_slice(&(body.len() as u16).to_be_bytes());
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn tls11_and_tls10_are_not_offered() {
    let pki = Pki::new();
    let h = Harness::start_with(Opts {
        extra_yaml: pki.yaml(None),
        ..Opts::default()
    })
    .await;
    for version in [[0x03, 0x02], [0x03, 0x01]] {
        let mut tcp = TcpStream::connect(h.addr).await.unwrap();
        tcp.write_all(&legacy_client_hello(version)).await.unwrap();
        let mut reply = Vec::new();
        let read = tokio::time::timeout(IO_TIMEOUT, tcp.read_to_end(&mut reply)).await;
        assert!(read.is_ok(), "server kept the connection open");
        // Never a ServerHello (handshake record 0x16): a fatal alert.
        assert_eq!(reply.first(), Some(&0x15), "{version:?}: {reply:02x?}");
        assert_eq!(reply.get(5), Some(&2), "not fatal: {reply:02x?}");
    }
}

#[tokio::test]
async fn alpn_selects_http2_or_http11() {
    let pki = Pki::new();
    let h = Harness::start_with(Opts {
        extra_yaml: pki.yaml(None),
        ..Opts::default()
    })
    .await;
    let token = h.token(&Tok::support("u1"));
    for (alpn, want) in [
        (&["h2", "http/1.1"][..], Version::HTTP_2),
        (&["h2"][..], Version::HTTP_2),
        (&["http/1.1"][..], Version::HTTP_11),
    ] {
        let stream = connect(h.addr, pki.client(BOTH, alpn, None)).await.unwrap();
        let negotiated = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let answer = get(stream, PATH, Some(&token)).await.unwrap();
        assert_eq!(
            answer.version, want,
            "ALPN {alpn:?} negotiated {negotiated:?}"
        );
        assert_eq!(answer.status, 200);
    }
}

#[tokio::test]
async fn mtls_required_accepts_the_ca_and_records_the_subject() {
    let pki = Pki::new();
    let h = Harness::start_with(Opts {
        extra_yaml: pki.yaml(Some("required")),
        ..Opts::default()
    })
    .await;
    let token = h.token(&Tok::abuse("u1"));
    let answer = fetch(
        h.addr,
        pki.client(BOTH, ALPN_BOTH, Some(&pki.alice)),
        PATH,
        Some(&token),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200);
    // A denial on the same kind of connection is attributed too.
    let denied = fetch(
        h.addr,
        pki.client(BOTH, &["http/1.1"], Some(&pki.alice)),
        PATH,
        None,
    )
    .await
    .unwrap();
    assert_eq!(denied.status, 401);
    let mut h = h;
    h.stop().await;
    let records = h.audit_records();
    for id in [&answer.request_id, &denied.request_id] {
        let mine: Vec<_> = records.iter().filter(|r| r["request_id"] == **id).collect();
        assert!(!mine.is_empty(), "no record for {id}");
        for r in mine {
            let subject = r["client_cert_subject"].as_str().unwrap_or_default();
            assert!(subject.contains("CN=alice"), "{r}");
        }
    }
    assert_eq!(
        records.iter().filter(|r| r["event"] == "complete").count(),
        1
    );
}

#[tokio::test]
async fn mtls_required_refuses_no_certificate_and_a_foreign_ca() {
    let pki = Pki::new();
    let h = Harness::start_with(Opts {
        extra_yaml: pki.yaml(Some("required")),
        ..Opts::default()
    })
    .await;
    let token = h.token(&Tok::abuse("u1"));
    let mallory = pki.other_ca.client("mallory", 30).unwrap();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        for identity in [None, Some(&mallory)] {
            let result = fetch(
                h.addr,
                pki.client(&[version], ALPN_BOTH, identity),
                PATH,
                Some(&token),
            )
            .await;
            assert!(
                result.is_err(),
                "{version:?} with {:?} was served: {result:?}",
                identity.map(|_| "mallory")
            );
        }
    }
    assert_eq!(h.upstream.count(), 0, "a refused client reached the store");
    assert!(h.audit_records().is_empty());
}

#[tokio::test]
async fn mtls_optional_serves_anonymous_clients_without_a_subject() {
    let pki = Pki::new();
    let h = Harness::start_with(Opts {
        extra_yaml: pki.yaml(Some("optional")),
        ..Opts::default()
    })
    .await;
    let token = h.token(&Tok::abuse("u1"));
    let anonymous = fetch(
        h.addr,
        pki.client(BOTH, ALPN_BOTH, None),
        PATH,
        Some(&token),
    )
    .await
    .unwrap();
    let alice = fetch(
        h.addr,
        pki.client(BOTH, ALPN_BOTH, Some(&pki.alice)),
        PATH,
        Some(&token),
    )
    .await
    .unwrap();
    assert_eq!((anonymous.status, alice.status), (200, 200));
    // A presented certificate is still verified: a foreign one is refused.
    let mallory = pki.other_ca.client("mallory", 30).unwrap();
    let refused = fetch(
        h.addr,
        pki.client(BOTH, ALPN_BOTH, Some(&mallory)),
        PATH,
        Some(&token),
    )
    .await;
    assert!(refused.is_err(), "{refused:?}");
    let records = h.audit_records();
    let by_id = |id: &str| {
        records
            .iter()
            .find(|r| r["request_id"] == id && r["event"] == "decision")
            .cloned()
            .unwrap()
    };
    let anon = by_id(&anonymous.request_id);
    assert!(anon.get("client_cert_subject").is_none(), "{anon}");
    let named = by_id(&alice.request_id);
    assert!(named["client_cert_subject"]
        .as_str()
        .unwrap()
        .contains("CN=alice"));
}

#[tokio::test]
async fn expiry_metric_and_reload_counters_are_exported() {
    let pki = Pki::new();
    let h = Harness::start_with(Opts {
        extra_yaml: pki.yaml(None),
        ..Opts::default()
    })
    .await;
    let text = metrics(&h).await;
    let left = sample(
        &text,
        "purposegate_tls_cert_expiry_seconds{cert=\"server\"}",
    )
    .unwrap();
    assert!(
        (29.0 * 86_400.0..=30.0 * 86_400.0 + 60.0).contains(&left),
        "{left}"
    );
    assert_eq!(
        sample(&text, "purposegate_tls_reloads_total{result=\"error\"}"),
        Some(0.0)
    );
    common::promtool_check_metrics(&text);
}

#[tokio::test]
async fn plaintext_listener_has_no_expiry_series() {
    let h = Harness::start().await;
    let text = metrics(&h).await;
    assert!(
        sample(&text, "purposegate_tls_cert_expiry_seconds{").is_none(),
        "{text}"
    );
}

/// A Kubernetes-style Secret volume: `tls.crt`/`tls.key` are symlinks into
/// `..data`, itself a symlink to a timestamped directory swapped atomically.
#[cfg(unix)]
struct SecretVolume {
    dir: tempfile::TempDir,
    generation: u32,
}

#[cfg(unix)]
impl SecretVolume {
    fn new(first: &Issued) -> SecretVolume {
        let dir = tempfile::tempdir().unwrap();
        let mut v = SecretVolume { dir, generation: 0 };
        v.publish(first);
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), v.dir.path().join(name)).unwrap();
        }
        v
    }

    /// Writes a new generation and swaps `..data` to it in one rename.
    fn publish(&mut self, pair: &Issued) {
        self.generation += 1;
        let gen = format!("..gen{}", self.generation);
        let target = self.dir.path().join(&gen);
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("tls.crt"), &pair.cert_pem).unwrap();
        std::fs::write(target.join("tls.key"), &pair.key_pem).unwrap();
        let tmp = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&gen, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("..data")).unwrap();
    }

    fn yaml(&self) -> String {
        format!(
            "tls:\n  cert_file: \"{}\"\n  key_file: \"{}\"\n",
            self.dir.path().join("tls.crt").display(),
            self.dir.path().join("tls.key").display()
        )
    }
}

/// What the connecting client saw.
#[derive(Default)]
struct Seen {
    subjects: Vec<String>,
    failures: Vec<String>,
}

#[cfg(unix)]
#[tokio::test]
async fn certificate_rotation_is_picked_up_while_clients_keep_connecting() {
    let pki = Pki::new();
    let mut volume = SecretVolume::new(&pki.server);
    let h = Harness::start_with(Opts {
        extra_yaml: volume.yaml(),
        ..Opts::default()
    })
    .await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let client = tokio::spawn({
        let (seen, stop, addr) = (seen.clone(), stop.clone(), h.addr);
        let config = pki.client(BOTH, &["http/1.1"], None);
        async move {
            let started = Instant::now();
            // Bounded: at most 5000 connections or 40 s.
            for _ in 0..5000 {
                if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(40) {
                    break;
                }
                let outcome = match connect(addr, config.clone()).await {
                    Ok(stream) => {
                        let subject = server_subject(&stream);
                        get(stream, PATH, None).await.map(|a| (subject, a.status))
                    }
                    Err(e) => Err(e.to_string()),
                };
                let mut seen = seen.lock().unwrap();
                match outcome {
                    Ok((subject, 401)) => seen.subjects.push(subject),
                    Ok((_, status)) => seen.failures.push(format!("status {status}")),
                    Err(e) => seen.failures.push(e),
                }
            }
        }
    });
    let count = |seen: &Arc<Mutex<Seen>>, cn: &str| {
        seen.lock()
            .unwrap()
            .subjects
            .iter()
            .filter(|s| s.contains(cn))
            .count()
    };
    common::eventually(
        "handshakes with the first certificate",
        Duration::from_secs(20),
        || {
            let n = count(&seen, "CN=server-one");
            async move { n >= 5 }
        },
    )
    .await;
    let rotated = pki
        .ca
        .server("server-two", &["localhost", "127.0.0.1"], 60)
        .unwrap();
    volume.publish(&rotated);
    common::eventually(
        "handshakes with the rotated certificate",
        Duration::from_secs(20),
        || {
            let n = count(&seen, "CN=server-two");
            async move { n >= 5 }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    client.await.unwrap();
    let Seen { subjects, failures } = std::mem::take(&mut *seen.lock().unwrap());
    assert!(failures.is_empty(), "failed: {failures:?}");
    // Once the new certificate was served, the old one never came back.
    let first_new = subjects
        .iter()
        .position(|s| s.contains("CN=server-two"))
        .unwrap();
    assert!(subjects[first_new..]
        .iter()
        .all(|s| s.contains("CN=server-two")));
    eprintln!(
        "rotation: {} handshakes, {} with the old certificate, none failed",
        subjects.len(),
        first_new
    );
    let text = metrics(&h).await;
    assert!(sample(&text, "purposegate_tls_reloads_total{result=\"ok\"}").unwrap() >= 1.0);
    let left = sample(
        &text,
        "purposegate_tls_cert_expiry_seconds{cert=\"server\"}",
    )
    .unwrap();
    assert!(left > 59.0 * 86_400.0, "expiry gauge not updated: {left}");
}

#[tokio::test]
async fn a_bad_new_pair_keeps_the_old_certificate() {
    let pki = Pki::new();
    let h = Harness::start_with(Opts {
        extra_yaml: pki.yaml(None),
        ..Opts::default()
    })
    .await;
    let config = pki.client(BOTH, ALPN_BOTH, None);
    // A new certificate whose key is not there yet (the old key stays).
    let next = pki
        .ca
        .server("server-two", &["localhost", "127.0.0.1"], 30)
        .unwrap();
    std::fs::write(pki.path("server.pem"), &next.cert_pem).unwrap();
    common::eventually(
        "a counted reload error",
        Duration::from_secs(20),
        || async {
            sample(
                &metrics(&h).await,
                "purposegate_tls_reloads_total{result=\"error\"}",
            )
            .unwrap_or(0.0)
                >= 1.0
        },
    )
    .await;
    let stream = connect(h.addr, config.clone()).await.unwrap();
    assert!(server_subject(&stream).contains("CN=server-one"));
    // Garbage is refused the same way.
    std::fs::write(pki.path("server.key"), "not a key").unwrap();
    common::eventually("a second reload error", Duration::from_secs(20), || async {
        sample(
            &metrics(&h).await,
            "purposegate_tls_reloads_total{result=\"error\"}",
        )
        .unwrap_or(0.0)
            >= 2.0
    })
    .await;
    let stream = connect(h.addr, config.clone()).await.unwrap();
    assert!(server_subject(&stream).contains("CN=server-one"));
    // The matching key completes the pair.
    std::fs::write(pki.path("server.key"), &next.key_pem).unwrap();
    common::eventually("the new certificate", Duration::from_secs(20), || {
        let config = config.clone();
        async move {
            match connect(h.addr, config).await {
                Ok(s) => server_subject(&s).contains("CN=server-two"),
                Err(_) => false,
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_bad_pair_at_start_is_a_config_error_naming_the_file() {
    let pki = Pki::new();
    let stranger = pki.ca.client("stranger", 30).unwrap();
    std::fs::write(pki.path("server.key"), &stranger.key_pem).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key =
        purposegate::auth::mint::generate_dev_key(jsonwebtoken::Algorithm::ES256, "k").unwrap();
    let opts = Opts {
        extra_yaml: pki.yaml(None),
        ..Opts::default()
    };
    let path = common::write_config(dir.path(), &key, "127.0.0.1:9".parse().unwrap(), &opts);
    let config = purposegate::config::Config::load(&path).unwrap();
    let err = purposegate::server::start(config)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("server.key"), "{err}");
    assert!(err.contains("does not fit"), "{err}");
}

/// What the TLS upstream saw of one request.
#[derive(Debug, Clone)]
struct UpstreamSeen {
    path: String,
    version: Version,
    peer: Option<String>,
    subject_header: Option<String>,
}

/// An HTTPS content store on 127.0.0.1:0 using purposegate's own server
/// TLS builder (so it speaks h2 and http/1.1, and verifies client
/// certificates against `client_ca` when given).
async fn tls_upstream(
    pki: &Pki,
    client_ca: Option<PathBuf>,
) -> (SocketAddr, Arc<Mutex<Vec<UpstreamSeen>>>) {
    let settings = TlsConfig {
        cert_file: pki.path("server.pem"),
        key_file: pki.path("server.key"),
        client_auth: client_ca
            .as_ref()
            .map(|_| purposegate::config::ClientAuth::Required),
        client_ca_file: client_ca,
    };
    let built = purposegate::tls::server::build(&settings).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(built.config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<UpstreamSeen>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, log) = (acceptor.clone(), log.clone());
            tokio::spawn(async move {
                let Ok((tls, peer)) = purposegate::tls::server::handshake(acceptor, tcp).await
                else {
                    return;
                };
                let peer = peer.map(|p| p.0.to_string());
                let service = service_fn(move |req: Request<Incoming>| {
                    let owner = req.uri().path().split('/').nth(3).unwrap_or("").to_string();
                    log.lock().unwrap().push(UpstreamSeen {
                        path: req.uri().path().to_string(),
                        version: req.version(),
                        peer: peer.clone(),
                        subject_header: req
                            .headers()
                            .get("x-purposegate-subject")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string),
                    });
                    let resp = Response::builder()
                        .header("x-content-owner", owner)
                        .body(Full::new(Bytes::from_static(b"tls content")))
                        .unwrap();
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A proxy (plaintext listener) whose `content` upstream is `https://addr`
/// with `upstream_keys` added to its entry.
async fn proxy_to_https(addr: SocketAddr, upstream_keys: &str) -> Harness {
    let upstream = common::Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key =
        purposegate::auth::mint::generate_dev_key(jsonwebtoken::Algorithm::ES256, "t").unwrap();
    let path = common::write_config(dir.path(), &key, addr, &Opts::default());
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text
        .replace(
            &format!("\"http://{addr}\""),
            &format!("\"https://{addr}\""),
        )
        .replace(
            "connect_timeout_ms: 500}",
            &format!("connect_timeout_ms: 500{upstream_keys}}}"),
        );
    std::fs::write(&path, text).unwrap();
    let config = purposegate::config::Config::load(&path).unwrap();
    let running = purposegate::server::start(config).await.unwrap();
    Harness {
        addr: running.addr,
        admin: running.admin_addr,
        running: Some(running),
        dir,
        upstream,
        key,
        config_path: path,
    }
}

#[tokio::test]
async fn upstream_over_tls_with_a_custom_ca() {
    let pki = Pki::new();
    let (addr, seen) = tls_upstream(&pki, None).await;
    let ca = pki.path("ca.pem");
    let h = proxy_to_https(addr, &format!(", ca_file: \"{}\"", ca.display())).await;
    let token = h.token(&Tok::abuse("u1"));
    for _ in 0..2 {
        let resp = h.get(PATH, Some(&token)).await;
        assert_eq!(resp.status, 200, "{:?}", resp.body);
        assert_eq!(&resp.body[..], b"tls content");
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].path, PATH);
    assert_eq!(seen[0].subject_header.as_deref(), Some("e-1"));
    assert_eq!(seen[0].peer, None);
    // ALPN offered h2 to the store, and it took it.
    assert_eq!(seen[0].version, Version::HTTP_2);
}

/// The upstream TLS settings (flow-map members) trusting the test CA and
/// presenting `cert`/`key`.
fn upstream_tls_keys(pki: &Pki, cert: &std::path::Path, key: &std::path::Path) -> String {
    format!(
        ", ca_file: \"{}\", client_cert_file: \"{}\", client_key_file: \"{}\"",
        pki.path("ca.pem").display(),
        cert.display(),
        key.display()
    )
}

#[tokio::test]
async fn upstream_over_tls_presents_the_client_certificate() {
    let pki = Pki::new();
    let proxy_id = pki.ca.client("purposegate-proxy", 30).unwrap();
    let (cert, key) = write_pair(pki.dir.path(), "proxy", &proxy_id);
    let (addr, seen) = tls_upstream(&pki, Some(pki.path("ca.pem"))).await;
    let keys = upstream_tls_keys(&pki, &cert, &key);
    let h = proxy_to_https(addr, &keys).await;
    let resp = h.get(PATH, Some(&h.token(&Tok::abuse("u1")))).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let peer = seen[0].peer.clone().unwrap_or_default();
    assert!(peer.contains("CN=purposegate-proxy"), "{peer}");
}

#[tokio::test]
async fn upstream_over_tls_refuses_an_untrusted_store() {
    let pki = Pki::new();
    let (addr, seen) = tls_upstream(&pki, None).await;
    // No ca_file: only the public web PKI roots are trusted.
    let h = proxy_to_https(addr, "").await;
    let resp = h
        .send(Method::GET, PATH, Some(&h.token(&Tok::abuse("u1"))), &[])
        .await;
    assert_eq!(resp.status, 502);
    assert_eq!(resp.reason().as_deref(), Some("upstream_unavailable"));
    assert!(seen.lock().unwrap().is_empty());
}

/// Runs the binary; returns exit code, stdout and stderr.
fn run_cli(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_purposegate"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn certs_dev_output_serves_mtls_and_policy_check_loads_it() {
    let certs = tempfile::tempdir().unwrap();
    let (code, out, err) = run_cli(&["certs".as_ref(), "dev".as_ref(), certs.path().as_os_str()]);
    assert_eq!(code, 0, "{err}");
    for name in [
        "ca.pem",
        "ca.key",
        "server.pem",
        "server.key",
        "client.pem",
        "client.key",
    ] {
        assert!(out.contains(name), "{name} not reported in\n{out}");
        assert!(certs.path().join(name).is_file());
    }
    let file = |n: &str| certs.path().join(n).display().to_string();
    let yaml = format!(
        "tls: {{cert_file: \"{}\", key_file: \"{}\", client_ca_file: \"{}\"}}\n",
        file("server.pem"),
        file("server.key"),
        file("ca.pem")
    );
    let mut h = Harness::start_with(Opts {
        extra_yaml: yaml,
        ..Opts::default()
    })
    .await;
    let (code, out, err) = run_cli(&[
        "policy".as_ref(),
        "check".as_ref(),
        "--config".as_ref(),
        h.config_path.as_os_str(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let read = |n: &str| std::fs::read_to_string(certs.path().join(n)).unwrap();
    let client = client_config(&read("ca.pem"), BOTH, ALPN_BOTH, None);
    assert!(
        fetch(h.addr, client, PATH, None).await.is_err(),
        "served without a client certificate"
    );
    let identity = purposegate::tls::dev::Issued::from_pem(read("client.pem"), read("client.key"));
    let client = client_config(&read("ca.pem"), BOTH, ALPN_BOTH, Some(&identity));
    let answer = fetch(h.addr, client, PATH, None).await.unwrap();
    assert_eq!(answer.status, 401);
    h.stop().await;
    let subject = h.audit_records()[0]["client_cert_subject"].clone();
    assert!(
        subject
            .as_str()
            .unwrap()
            .contains("CN=purposegate-dev-client"),
        "{subject}"
    );
    // A key that does not fit is reported by `policy check` with the file.
    std::fs::copy(
        certs.path().join("client.key"),
        certs.path().join("server.key"),
    )
    .unwrap();
    let (code, out, err) = run_cli(&[
        "policy".as_ref(),
        "check".as_ref(),
        "--config".as_ref(),
        h.config_path.as_os_str(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("server.key") && err.contains("does not fit"),
        "{err}"
    );
}

#[tokio::test]
async fn upstream_client_certificate_rotation_is_picked_up() {
    let pki = Pki::new();
    let first = pki.ca.client("purposegate-proxy-1", 30).unwrap();
    let (cert, key) = write_pair(pki.dir.path(), "proxy", &first);
    let (addr, seen) = tls_upstream(&pki, Some(pki.path("ca.pem"))).await;
    let keys = upstream_tls_keys(&pki, &cert, &key);
    let h = proxy_to_https(addr, &keys).await;
    let token = h.token(&Tok::abuse("u1"));
    assert_eq!(h.get(PATH, Some(&token)).await.status, 200);
    let last_peer = || {
        seen.lock()
            .unwrap()
            .last()
            .and_then(|s| s.peer.clone())
            .unwrap_or_default()
    };
    assert!(last_peer().contains("CN=purposegate-proxy-1"));
    let second = pki.ca.client("purposegate-proxy-2", 30).unwrap();
    write_pair(pki.dir.path(), "proxy", &second);
    common::eventually(
        "requests with the rotated client certificate",
        Duration::from_secs(20),
        || {
            let h = &h;
            let token = token.clone();
            let last_peer = &last_peer;
            async move {
                h.get(PATH, Some(&token)).await.status == 200
                    && last_peer().contains("CN=purposegate-proxy-2")
            }
        },
    )
    .await;
    let text = metrics(&h).await;
    assert!(sample(&text, "purposegate_tls_reloads_total{result=\"ok\"}").unwrap() >= 1.0);
}
