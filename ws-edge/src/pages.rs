//! The pages people use and their files, compiled in (no build step, nothing to deploy): the
//! chat page (`/`), the user's sessions (`/sessions.html`) and the admin page
//! (`/admin.html`), each with its own script, sharing `base.css`; the client module other apps
//! embed (`/chat-client.js`, docs/client.md); and the security headers of
//! every response: a `Content-Security-Policy` that allows no inline script or style and no
//! framing, `X-Content-Type-Options: nosniff`, `Referrer-Policy`.

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::config::PagesSettings;

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file of the pages: (path, type, body).
const FILES: &[(&str, &str, &str)] = &[
    ("/", HTML, include_str!("web/chat.html")),
    ("/chat.html", HTML, include_str!("web/chat.html")),
    ("/chat.js", JS, include_str!("web/chat.js")),
    ("/chat.css", CSS, include_str!("web/chat.css")),
    ("/base.css", CSS, include_str!("web/base.css")),
    ("/sessions.html", HTML, include_str!("web/sessions.html")),
    ("/sessions.js", JS, include_str!("web/sessions.js")),
    ("/admin.html", HTML, include_str!("web/admin.html")),
    ("/admin.js", JS, include_str!("web/admin.js")),
    ("/pages.css", CSS, include_str!("web/pages.css")),
    ("/chat-client.js", JS, include_str!("web/chat-client.js")),
    // The socket protocol, machine-readable (docs/asyncapi.json).
    (
        "/api/asyncapi.json",
        "application/json",
        include_str!("../../docs/asyncapi.json"),
    ),
];

/// The routes of [`FILES`], and `GET /pages.json`: what the pages are configured with
/// (`{"tokenUrl": ...}`, see [`PagesSettings`]).
pub fn routes<S: Clone + Send + Sync + 'static>(settings: &PagesSettings) -> Router<S> {
    let config: std::sync::Arc<str> = serde_json::json!({ "tokenUrl": settings.token_url })
        .to_string()
        .into();
    FILES
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(path, get(move || async move { page(content_type, body) }))
        })
        .route(
            "/pages.json",
            get(move || {
                let config = config.clone();
                async move {
                    (
                        [
                            (header::CONTENT_TYPE, "application/json"),
                            (header::CACHE_CONTROL, "no-cache"),
                        ],
                        config.to_string(),
                    )
                        .into_response()
                }
            }),
        )
}

/// Whether `path` is one of the pages' files.
pub fn serves(path: &str) -> bool {
    path == "/pages.json" || FILES.iter().any(|f| f.0 == path)
}

/// The pages' policy: their own script and style files only, the socket to this host (`ws:`
/// and `wss:` are listed because older browsers do not let `'self'` match them), images and
/// audio from this host (attachments) and the inline icon (`data:`), no plugins, no `<base>`,
/// and no framing by anyone.
pub const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; media-src 'self'; connect-src 'self' ws: wss:; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'";
/// Every other response (JSON, metrics) may load nothing and be framed by no one.
pub const API_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";
/// The page's URL (it may carry `?token=`) never leaves in a `Referer`.
pub const REFERRER_POLICY: &str = "no-referrer";

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, PAGE_POLICY),
            // The files change with the binary: revalidate instead of caching stale script.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Middleware adding the security headers to every response (a handler's own policy wins).
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name: HeaderName, value: &'static str| {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_SECURITY_POLICY, API_POLICY);
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, REFERRER_POLICY);
    // For browsers that predate `frame-ancestors`.
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_page_has_inline_script_or_style_and_each_names_its_files() {
        for &(path, content_type, page) in FILES.iter().filter(|f| f.1 == HTML) {
            assert_eq!(content_type, HTML);
            assert!(!page.contains("<script>"), "inline script in {path}");
            assert!(!page.contains("<style"), "inline style in {path}");
            assert!(!page.contains(" style="), "style attribute in {path}");
            let handler = page.match_indices(" on").any(|(at, _)| {
                let rest = &page[at + 3..];
                let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
                name_len > 0 && rest[name_len..].starts_with('=')
            });
            assert!(!handler, "inline event handler in {path}");
            assert!(
                page.contains(r#"<link rel="stylesheet" href="/base.css">"#),
                "{path}"
            );
            // Every file a page names is served.
            for (at, _) in page
                .match_indices("src=\"/")
                .chain(page.match_indices("href=\"/"))
            {
                let rest = &page[at..];
                let start = rest.find('/').unwrap_or(0);
                let end = rest[start..].find('"').map_or(rest.len(), |e| start + e);
                let file = &rest[start..end];
                let file = file.split('?').next().unwrap_or(file);
                assert!(
                    FILES.iter().any(|f| f.0 == file),
                    "{path} names {file}, which is not served"
                );
            }
        }
    }
}
