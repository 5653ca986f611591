//! GraphiQL at `/`, every byte of it from this binary: a server without internet access, or a
//! browser under the strict Content-Security-Policy sent here, gets a working page. The vendored
//! files are npm's own (`assets/vendor/README.md`); the page and its script are ours.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("../assets/index.html");

/// Only this server's scripts run (no inline script, no eval); GraphiQL sets inline styles
/// and embeds its fonts as data URLs; queries and subscriptions go back to this origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; font-src 'self' data:; connect-src 'self' ws: wss:; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// (name under `/playground/`, content type, bytes, versioned: cacheable for good).
const ASSETS: &[(&str, &str, &[u8], bool)] = &[
    (
        "graphiql-4.1.2.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/vendor/graphiql-4.1.2.min.js"),
        true,
    ),
    (
        "graphiql-4.1.2.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/vendor/graphiql-4.1.2.min.css"),
        true,
    ),
    (
        "react-18.3.1.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/vendor/react-18.3.1.production.min.js"),
        true,
    ),
    (
        "react-dom-18.3.1.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/vendor/react-dom-18.3.1.production.min.js"),
        true,
    ),
    (
        "playground.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/playground.js"),
        false,
    ),
    (
        "playground.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/playground.css"),
        false,
    ),
];

/// The page; `token_required` shows the token bar.
pub fn page(token_required: bool) -> Response {
    let auth = if token_required { "required" } else { "none" };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE.replace("{{AUTH}}", auth),
    )
        .into_response()
}

/// `GET /playground/{file}`
pub async fn asset(Path(file): Path<String>) -> Response {
    let Some((_, ty, body, versioned)) = ASSETS.iter().find(|a| a.0 == file) else {
        return (StatusCode::NOT_FOUND, "no such playground file").into_response();
    };
    let cache = if *versioned {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut resp = (*body).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ty));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_files_this_server_has() {
        let page = PAGE.to_owned();
        let mut refs = 0;
        for attr in ["src=\"", "href=\""] {
            for (i, _) in page.match_indices(attr) {
                let url = &page[i + attr.len()..];
                let url = &url[..url.find('"').unwrap_or(url.len())];
                let file = url.strip_prefix("/playground/").unwrap_or(url);
                assert!(ASSETS.iter().any(|a| a.0 == file), "{url} is not served");
                refs += 1;
            }
        }
        assert_eq!(refs, ASSETS.len(), "every asset is used by the page");
    }
}
