//! Writes a local audit log in the writer's format (AUDIT_CHAIN.md: a
//! `chain_start` record, rotated files `<path>.<last seq>` each followed by
//! a `file_start`), filled with request records shaped like the proxy's
//! (decision + complete pairs, prefix-counter request ids), for
//! `bench/audit_ship.sh`.
//!
//!   cargo run --release --example audit_log_gen -- DIR RECORDS [ROTATE_EVERY] [CHAIN]

use std::io::Write;
use std::path::{Path, PathBuf};

use purposegate::audit::chain::{encode_raw, Body, ChainHead};
use purposegate::audit::record::{AuditEvent, DecisionKind, EventKind};
use serde_json::json;

fn rotated(path: &Path, seq: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{seq:020}"));
    PathBuf::from(name)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(args.get(1).expect("DIR"));
    let n: u64 = args.get(2).and_then(|a| a.parse().ok()).expect("RECORDS");
    let rotate: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let chain = args.get(4).cloned().unwrap_or_else(|| "bench-chain".into());
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("audit.jsonl");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
    let mut head = ChainHead::genesis();
    let mut ms: i64 = purposegate::time::now_millis();
    let mut emit = |out: &mut std::io::BufWriter<std::fs::File>,
                    head: &mut ChainHead,
                    body: &Body|
     -> std::io::Result<()> {
        ms += 1;
        let enc = encode_raw(head, &purposegate::time::format_rfc3339(ms), body)
            .map_err(std::io::Error::other)?;
        *head = enc.head;
        out.write_all(&enc.line)
    };
    let header = |event: &str| {
        Body::new(&json!({"event": event, "chain": chain, "instance": "bench", "cause": if event == "chain_start" { "new_log" } else { "rotated" }}))
            .map_err(std::io::Error::other)
    };
    emit(&mut out, &mut head, &header("chain_start")?)?;
    let mut since_rotation = 1;
    while head.seq < n {
        let i = head.seq / 2;
        let mut ev = AuditEvent {
            request_id: format!("9f2c41d07ab3e815-{i:016x}"),
            event: EventKind::Decision,
            decision: DecisionKind::Allow,
            subject: Some(format!("e{}", i % 2000)),
            roles: vec!["support".into()],
            purpose: Some("support".into()),
            justification: Some(format!("T-{}", i % 50_000)),
            method: "GET".into(),
            path: format!("/v1/users/u{}/conversations/c{i}", (i * 7919) % 100_000),
            owner: Some(format!("u{}", (i * 7919) % 100_000)),
            route: Some("conversation".into()),
            status: 200,
            client_addr: "10.0.0.1:5555".into(),
            token_id: Some(format!("jti-{i}")),
            ..AuditEvent::default()
        };
        if head.seq.is_multiple_of(2) {
            ev.event = EventKind::Complete;
            ev.bytes = Some(4096);
            ev.duration_ms = Some(1.25);
        }
        emit(
            &mut out,
            &mut head,
            &Body::new(&ev).map_err(std::io::Error::other)?,
        )?;
        since_rotation += 1;
        if since_rotation >= rotate && head.seq < n {
            out.flush()?;
            std::fs::rename(&path, rotated(&path, head.seq))?;
            out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
            emit(&mut out, &mut head, &header("file_start")?)?;
            since_rotation = 1;
        }
    }
    out.flush()?;
    println!("{} records in {}", head.seq, dir.display());
    Ok(())
}
