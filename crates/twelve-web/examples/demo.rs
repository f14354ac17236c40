//! The web server on the tests' fake data, to look at the dashboard or point a real
//! Prometheus at `/sd`: `cargo run -p twelve-web --example demo [ADDR]`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| twelve_web::DEFAULT_ADDR.to_string());
    let source = common::FakeSource::new();
    *source.snapshot.lock().unwrap() = common::showcase();
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("twelve-web demo on http://{}/", listener.local_addr()?);
    let source: Arc<dyn twelve_web::Source> = source;
    twelve_web::serve(listener, source, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
