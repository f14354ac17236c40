//! RabbitMQ backups: the broker's definitions (vhosts, users with their password hashes,
//! permissions, queues, exchanges, bindings, policies), exported and imported with
//! `rabbitmqctl export_definitions`/`import_definitions` on a local broker, or the
//! management API's `/api/definitions`. Messages are not part of them. An import adds and
//! updates definitions; it deletes none.

use std::io::Read;
use std::time::Duration;

use crate::backup::{DumpInfo, DumpPart, PartSink, PartSource};
use crate::rabbitmq::{self, Admin, Target};
use crate::{ProviderError, Providers, Result, Server};

const PART: &str = "definitions.json";

/// `rabbitmqctl [-n node] -q ARGS` with `input` on stdin (`rabbitmq::ctl_output`, 120 s:
/// definitions can be large); its stdout.
async fn ctl(t: &Target, args: &[&str], input: Option<Vec<u8>>, action: &str) -> Result<Vec<u8>> {
    let Admin::Ctl { ctl, node } = &t.how else {
        unreachable!("called for rabbitmqctl targets only")
    };
    rabbitmq::ctl_output(
        t,
        (ctl.as_path(), node),
        args,
        input.as_deref(),
        &[],
        Duration::from_secs(120),
        action,
    )
    .await?
    .map_err(|reason| ProviderError::Failed {
        server: t.server.clone(),
        action: action.into(),
        reason,
    })
}

pub(crate) async fn server_version(p: &Providers, server: &Server) -> Result<(String, u64)> {
    let t = rabbitmq::target(p, server)?;
    let v = match &t.how {
        Admin::Ctl { .. } => {
            String::from_utf8_lossy(&ctl(&t, &["version"], None, "rabbitmqctl version").await?)
                .trim()
                .to_string()
        }
        Admin::Http { .. } => {
            let h = rabbitmq::http(&t).expect("http");
            let o = h
                .send(
                    reqwest::Method::GET,
                    &["overview"],
                    None,
                    "GET /api/overview",
                    false,
                )
                .await?;
            o["rabbitmq_version"].as_str().unwrap_or("").to_string()
        }
    };
    let n = crate::backup::version_number(&v);
    Ok((v, n))
}

pub(crate) async fn dump(
    p: &Providers,
    server: &Server,
    sink: &mut dyn PartSink,
) -> Result<Vec<DumpPart>> {
    let t = rabbitmq::target(p, server)?;
    let data = match &t.how {
        Admin::Ctl { .. } => {
            ctl(
                &t,
                &["export_definitions", "-", "--format", "json"],
                None,
                "exporting the definitions",
            )
            .await?
        }
        Admin::Http { .. } => {
            let h = rabbitmq::http(&t).expect("http");
            let v = h
                .send(
                    reqwest::Method::GET,
                    &["definitions"],
                    None,
                    "GET /api/definitions",
                    false,
                )
                .await?;
            serde_json::to_vec(&v).unwrap_or_default()
        }
    };
    if serde_json::from_slice::<serde_json::Value>(&data).is_err() {
        return Err(ProviderError::Failed {
            server: t.server.clone(),
            action: "exporting the definitions".into(),
            reason: "the broker did not give JSON".into(),
        });
    }
    let io = |e: std::io::Error| ProviderError::Failed {
        server: t.server.clone(),
        action: "writing the backup".into(),
        reason: e.to_string(),
    };
    let mut w = sink.create(PART).map_err(io)?;
    tokio::task::spawn_blocking(move || {
        std::io::Write::write_all(&mut w, &data)?;
        w.finish()
    })
    .await
    .expect("backup worker panicked")
    .map_err(io)?;
    Ok(vec![DumpPart {
        name: PART.into(),
        database: "*".into(),
    }])
}

pub(crate) async fn restore(
    p: &Providers,
    server: &Server,
    info: &DumpInfo,
    source: &dyn PartSource,
) -> Result<()> {
    let t = rabbitmq::target(p, server)?;
    let failed = |reason: String| ProviderError::Failed {
        server: t.server.clone(),
        action: "restoring the definitions".into(),
        reason,
    };
    if !info.parts.iter().any(|p| p.name == PART) {
        return Err(failed("the backup has no definitions".into()));
    }
    let mut data = vec![];
    source
        .open(PART)
        .and_then(|mut r| r.read_to_end(&mut data))
        .map_err(|e| failed(e.to_string()))?;
    match &t.how {
        Admin::Ctl { .. } => {
            ctl(
                &t,
                &["import_definitions", "--format", "json"],
                Some(data),
                "importing the definitions",
            )
            .await?;
        }
        Admin::Http { .. } => {
            let v: serde_json::Value =
                serde_json::from_slice(&data).map_err(|e| failed(e.to_string()))?;
            let h = rabbitmq::http(&t).expect("http");
            h.send(
                reqwest::Method::POST,
                &["definitions"],
                Some(v),
                "POST /api/definitions",
                false,
            )
            .await?;
        }
    }
    Ok(())
}
