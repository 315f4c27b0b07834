//! The sample case service (`purposegate::justification::sample`, the demo's
//! records) as a process, for `bench/justification.sh`. Prints its
//! `justifications.url` template, then serves until killed.
//! Usage: case_service 127.0.0.1:9091

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9091".into());
    let addr = addr
        .parse()
        .map_err(|_| std::io::Error::other(format!("`{addr}` is not an address")))?;
    let svc = purposegate::justification::sample::CaseService::demo(addr).await?;
    println!("{}", svc.url());
    std::future::pending::<()>().await;
    Ok(())
}
