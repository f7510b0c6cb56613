//! Pages served by the gateway beside the maintenance API, for the people who use the
//! system: the after-sales board (`/board`), fleet health (`/fleet`) and the homeowner's
//! view (`/home`, `/home/{home_id}`), plus a sign-in page at `/`.
//!
//! # Layout
//!
//! - `assets/` holds plain HTML, CSS and vanilla JavaScript modules. They are built into
//!   the binary with `include_str!` ([`ASSETS`]), so there is no separate server and no
//!   build step. Charts are inline SVG drawn by `charts.js`; nothing is loaded from a CDN.
//! - Every page is the same shell (`page.html`) with its own module; the modules call
//!   `/api/...` with the bearer token kept in `sessionStorage` (see `api.js`).
//! - `i18n.js` holds one string table per language (English, Chinese); the default comes
//!   from `navigator.language`, and a switch in the header changes it.
//!
//! The pages hold no authority of their own: every check (role, home scope, masking,
//! audit) is the API's, so a homeowner who opens another home's page gets the API's 404
//! and the page says "not allowed".
//!
//! ```no_run
//! let app: axum::Router = axum::Router::new().merge(web::router());
//! ```

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One static asset: its name under `/static/`, its content type and its text.
pub type Asset = (&'static str, &'static str, &'static str);

/// Every file under `/static/`, embedded at build time.
pub const ASSETS: &[Asset] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../assets/app.css"),
    ),
    ("api.js", JS, include_str!("../assets/api.js")),
    ("i18n.js", JS, include_str!("../assets/i18n.js")),
    ("charts.js", JS, include_str!("../assets/charts.js")),
    ("signin.js", JS, include_str!("../assets/signin.js")),
    ("board.js", JS, include_str!("../assets/board.js")),
    ("commands.js", JS, include_str!("../assets/commands.js")),
    ("fleet.js", JS, include_str!("../assets/fleet.js")),
    ("home.js", JS, include_str!("../assets/home.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

/// The page shell; `{{page}}` names the page's module and its title key.
const SHELL: &str = include_str!("../assets/page.html");

/// The pages, as `(path, module)`.
pub const PAGES: &[(&str, &str)] = &[
    ("/", "signin"),
    ("/board", "board"),
    ("/fleet", "fleet"),
    ("/home", "home"),
    ("/home/{home_id}", "home"),
];

/// The router of the pages and their assets (no state; merge it into the gateway's).
pub fn router() -> Router {
    let mut r = Router::new().route("/static/{file}", get(asset));
    for (path, module) in PAGES {
        let html = shell(module);
        r = r.route(path, get(move || async move { page(html) }));
    }
    r
}

/// The shell filled in for `module`.
pub fn shell(module: &str) -> String {
    SHELL.replace("{{page}}", module)
}

fn page(html: String) -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-cache"),
            // Scripts and styles only from this origin; nothing inline, no plugins, no framing.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
            ),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(html),
    )
        .into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, mime, text)) => (
            [
                (header::CONTENT_TYPE, *mime),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *text,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(path: &str) -> (StatusCode, String, String) {
        let res = router()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let ct = res
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec())
            .unwrap();
        (status, ct, body)
    }

    #[tokio::test]
    async fn every_page_is_the_shell_with_its_module() {
        for (path, module) in [
            ("/", "signin"),
            ("/board", "board"),
            ("/fleet", "fleet"),
            ("/home", "home"),
            ("/home/h2", "home"),
        ] {
            let (status, ct, body) = get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert!(ct.starts_with("text/html"), "{path}: {ct}");
            assert!(body.contains(&format!("/static/{module}.js")), "{path}");
            assert!(!body.contains("{{"), "{path}: unfilled placeholder");
        }
    }

    #[tokio::test]
    async fn assets_are_served_with_their_type_and_unknown_ones_are_404() {
        for (name, mime, text) in ASSETS {
            let (status, ct, body) = get(&format!("/static/{name}")).await;
            assert_eq!((status, ct.as_str()), (StatusCode::OK, *mime), "{name}");
            assert_eq!(body, *text);
        }
        assert_eq!(get("/static/nope.js").await.0, StatusCode::NOT_FOUND);
    }

    #[test]
    fn both_languages_have_the_same_keys() {
        let src = ASSETS.iter().find(|a| a.0 == "i18n.js").unwrap().2;
        let table = |lang: &str| -> Vec<String> {
            let start = src
                .find(&format!("  {lang}: {{"))
                .unwrap_or_else(|| panic!("no {lang} table"));
            let end = start + src[start..].find("\n  },").unwrap();
            let mut keys: Vec<String> = src[start..end]
                .lines()
                .skip(1)
                .filter_map(|l| l.trim().split_once(':').map(|(k, _)| k.trim().to_owned()))
                .filter(|k| !k.is_empty() && !k.starts_with("//"))
                .collect();
            keys.sort();
            keys
        };
        let (en, zh) = (table("en"), table("zh"));
        assert!(en.len() > 20, "{en:?}");
        assert_eq!(en, zh, "the en and zh tables differ");
    }
}
