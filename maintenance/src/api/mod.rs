//! stub
pub struct AppState; pub fn router(_s: AppState) -> axum::Router { axum::Router::new() }
