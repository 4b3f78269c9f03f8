//! The operator console's files at `/admin` (embedded from `static/admin/`): plain
//! JavaScript modules and a stylesheet, served with a strict Content-Security-Policy (no
//! inline script or style, same-origin connections only), an ETag and gzip. The console
//! is a client of the public REST API; nothing here reads the store.

use std::sync::OnceLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use sha2::{Digest, Sha256};

use super::api::resource;

/// The policy of every console response: scripts, styles and connections from this origin
/// only; not framed; forms post here only.
pub const CONSOLE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; frame-ancestors 'none'; \
    base-uri 'none'; form-action 'self'; object-src 'none'";

/// (path under /admin/, content type, file).
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../static/admin/index.html"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../../static/admin/console.css"),
    ),
    (
        "js/app.js",
        JS,
        include_str!("../../static/admin/js/app.js"),
    ),
    (
        "js/api.js",
        JS,
        include_str!("../../static/admin/js/api.js"),
    ),
    ("js/ui.js", JS, include_str!("../../static/admin/js/ui.js")),
    (
        "js/chart.js",
        JS,
        include_str!("../../static/admin/js/chart.js"),
    ),
    (
        "js/pages/login.js",
        JS,
        include_str!("../../static/admin/js/pages/login.js"),
    ),
    (
        "js/pages/overview.js",
        JS,
        include_str!("../../static/admin/js/pages/overview.js"),
    ),
    (
        "js/pages/bots.js",
        JS,
        include_str!("../../static/admin/js/pages/bots.js"),
    ),
    (
        "js/pages/sources.js",
        JS,
        include_str!("../../static/admin/js/pages/sources.js"),
    ),
    (
        "js/pages/conversations.js",
        JS,
        include_str!("../../static/admin/js/pages/conversations.js"),
    ),
    (
        "js/pages/inbox.js",
        JS,
        include_str!("../../static/admin/js/pages/inbox.js"),
    ),
    (
        "js/pages/gaps.js",
        JS,
        include_str!("../../static/admin/js/pages/gaps.js"),
    ),
    (
        "js/pages/leads.js",
        JS,
        include_str!("../../static/admin/js/pages/leads.js"),
    ),
    (
        "js/pages/keys.js",
        JS,
        include_str!("../../static/admin/js/pages/keys.js"),
    ),
    (
        "js/pages/webhooks.js",
        JS,
        include_str!("../../static/admin/js/pages/webhooks.js"),
    ),
    (
        "js/pages/accounts.js",
        JS,
        include_str!("../../static/admin/js/pages/accounts.js"),
    ),
];
const JS: &str = "text/javascript; charset=utf-8";

/// Every console file with its quoted ETag (the first 16 hex digits of its sha256).
fn files() -> &'static [(&'static str, &'static str, &'static str, String)] {
    static TAGGED: OnceLock<Vec<(&str, &str, &str, String)>> = OnceLock::new();
    TAGGED.get_or_init(|| {
        FILES
            .iter()
            .map(|&(path, kind, body)| {
                let tag = hex::encode(&Sha256::digest(body.as_bytes())[..8]);
                (path, kind, body, format!("\"{tag}\""))
            })
            .collect()
    })
}

/// The console's files as (path, bytes), for size reports.
pub fn assets() -> impl Iterator<Item = (&'static str, &'static str)> {
    FILES.iter().map(|&(path, _, body)| (path, body))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/admin", "GET")
            .wrap(actix_web::middleware::Compress::default())
            .route(web::get().to(index)),
    )
    .service(
        resource("/admin/{file:.*}", "GET")
            .wrap(actix_web::middleware::Compress::default())
            .route(web::get().to(file)),
    );
}

async fn index(req: HttpRequest) -> HttpResponse {
    serve(&req, "index.html")
}

async fn file(req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    // `/admin/` is the console too.
    let name = match path.as_str() {
        "" => "index.html",
        other => other,
    };
    serve(&req, name)
}

fn serve(req: &HttpRequest, name: &str) -> HttpResponse {
    let Some((_, kind, body, tag)) = files().iter().find(|(path, ..)| *path == name) else {
        let error = super::error::ApiError::not_found("not_found", "no such console file");
        return actix_web::ResponseError::error_response(&error);
    };
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::CONTENT_SECURITY_POLICY, CONSOLE_CSP))
        .insert_header((header::ETAG, HeaderValue::from_str(tag).expect("hex tag")))
        // Revalidated on every load: a new binary's console is used at once.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"));
    if fresh {
        return response.finish();
    }
    response.content_type(*kind).body(*body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_under_static_admin_is_served_and_none_is_missing() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("static/admin");
        let mut on_disk = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let rel = path.strip_prefix(&root).unwrap();
                    on_disk.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        on_disk.sort();
        let mut served: Vec<String> = assets().map(|(p, _)| p.to_string()).collect();
        served.sort();
        assert_eq!(served, on_disk);
    }

    #[test]
    fn no_console_file_holds_inline_script_or_markup_sinks() {
        for (path, body) in assets() {
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!body.contains(sink), "{path} uses {sink}");
            }
            if path.ends_with(".html") {
                let lower = body.to_lowercase();
                assert!(!lower.contains("<script>"), "{path}: inline script");
                assert!(!lower.contains(" style="), "{path}: inline style");
                let handler = lower.split(" on").skip(1).any(|rest| {
                    let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
                    !name.is_empty() && rest[name.len()..].trim_start().starts_with('=')
                });
                assert!(!handler, "{path}: an inline event handler");
            }
        }
    }
}
