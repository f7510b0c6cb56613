//! The OpenAPI 3.1 document, hand-maintained in `openapi.json` beside this file and served
//! at `/openapi.json`. A test checks that it lists exactly the routes in [`super::ROUTES`].

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::AppState;

/// The document, embedded at build time.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(document))
}

async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}
