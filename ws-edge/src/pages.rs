//! The chat page and its two files (compiled in: no build step, nothing to deploy), and the
//! security headers of every response: a `Content-Security-Policy` that allows no inline script
//! or style and no framing, `X-Content-Type-Options: nosniff`, `Referrer-Policy`.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

const CHAT_PAGE: &str = include_str!("web/chat.html");
const CHAT_SCRIPT: &str = include_str!("web/chat.js");
const CHAT_STYLE: &str = include_str!("web/chat.css");

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

pub async fn chat_page() -> Response {
    page("text/html; charset=utf-8", CHAT_PAGE)
}

pub async fn chat_script() -> Response {
    page("text/javascript; charset=utf-8", CHAT_SCRIPT)
}

pub async fn chat_style() -> Response {
    page("text/css; charset=utf-8", CHAT_STYLE)
}

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
    fn the_page_has_no_inline_script_or_style_and_names_its_files() {
        assert!(!CHAT_PAGE.contains("<script>"), "inline script");
        assert!(!CHAT_PAGE.contains("<style"), "inline style");
        assert!(!CHAT_PAGE.contains(" style="), "style attribute");
        let handler = CHAT_PAGE.match_indices(" on").any(|(at, _)| {
            let rest = &CHAT_PAGE[at + 3..];
            let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            name_len > 0 && rest[name_len..].starts_with('=')
        });
        assert!(!handler, "inline event handler");
        assert!(CHAT_PAGE.contains(r#"<script src="/chat.js"></script>"#));
        assert!(CHAT_PAGE.contains(r#"<link rel="stylesheet" href="/chat.css">"#));
    }
}
