//! `POST /import`: the bulk registry import over HTTP (admin only), the same checks and
//! report as `gateway devices import` (see [`crate::import`]).
//!
//! The body is the file itself, `Content-Type: text/csv` or `application/json`, up to
//! [`MAX_IMPORT_BYTES`]. Bad rows are listed in the answer (200) and the good ones are
//! imported; a file that cannot be read at all is a 422 with the line. The API issues no
//! broker credentials (a password must not travel in an HTTP answer that proxies may log):
//! the answer lists the devices still waiting for them, which `gateway devices import` of
//! the same file (idempotent) provisions.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;

use super::extract::Auth;
use super::{ApiError, AppState};
use crate::access::Role;
use crate::import::{self, Format, ImportError, Report};
use crate::provisioning::CredentialState;

/// Largest import body (8 MiB, about 50 000 CSV rows); larger files go through the CLI.
pub const MAX_IMPORT_BYTES: usize = 8 * 1024 * 1024;

pub(super) fn router() -> Router<AppState> {
    Router::new().route(
        "/import",
        post(import_file).layer(axum::extract::DefaultBodyLimit::max(MAX_IMPORT_BYTES)),
    )
}

#[derive(Serialize)]
struct ImportAnswer {
    #[serde(flatten)]
    report: Report,
    /// Devices of the file without broker credentials yet.
    awaiting_credentials: Vec<String>,
}

async fn import_file(
    State(s): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ImportAnswer>, ApiError> {
    auth.require(&[Role::Admin])?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let format = if content_type.starts_with("text/csv") {
        Format::Csv
    } else if content_type.starts_with("application/json") {
        Format::Json
    } else {
        return Err(ApiError::invalid(
            "content-type",
            "send the file as text/csv or application/json",
        ));
    };
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::invalid("body", format!("not UTF-8 ({e}); save the file as UTF-8")))?
        .to_owned();
    let now = s.now();
    let engine = std::sync::Arc::clone(&s.engine);
    let outcome = tokio::task::spawn_blocking(move || {
        let parsed = import::parse(format, &text, now)?;
        let report = import::apply(&engine, parsed, now, &mut |_, _| {})?;
        let states = engine.credential_states(&report.device_ids)?;
        Ok::<_, ImportError>((report, states))
    })
    .await
    .map_err(|e| {
        ApiError::Internal(crate::Error::Config(format!("the import task failed: {e}")))
    })?;
    let (report, states) = match outcome {
        Ok(r) => r,
        Err(ImportError::File { line, problem }) => {
            return Err(ApiError::invalid("body", format!("line {line}: {problem}")))
        }
        Err(ImportError::Engine(e)) => return Err(e.into()),
    };
    let awaiting_credentials = report
        .device_ids
        .iter()
        .zip(states)
        .filter(|(_, st)| *st == CredentialState::None)
        .map(|(id, _)| id.clone())
        .collect();
    s.engine.audit(
        &auth.0,
        "import_registry",
        &format!(
            "import/rows:{},devices:{},rejected:{}",
            report.rows,
            report.device_ids.len(),
            report.rejected
        ),
        now,
    )?;
    tracing::info!(by = %auth.0.label, rows = report.rows, rejected = report.rejected, "Registry imported.");
    Ok(Json(ImportAnswer {
        report,
        awaiting_credentials,
    }))
}
