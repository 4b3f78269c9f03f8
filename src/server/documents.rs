//! `POST /v1/bots/{id}/documents`: documents (PDF, DOCX, HTML, Markdown, text) uploaded as
//! multipart/form-data, read as a stream under caps, stored with a job that indexes them
//! like a crawl (`services::jobs`), and cited under the upload's `base_url`.

use std::path::Path;

use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use futures::StreamExt;
use utoipa::ToSchema;

use super::AppState;
use super::api::{admin_bot, blocking, check_extendable, resource};
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::openapi::ApiErrors;
use super::views::SourceAccepted;
use crate::domain::UploadedFile;
use crate::ingest::local;

/// The most bytes one upload request may carry, all its documents together.
pub const MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;
/// The most documents one upload request may carry.
pub const MAX_UPLOAD_FILES: usize = 20;
/// Upload jobs of one bot that may wait at once (their documents wait in the store).
pub const MAX_PENDING_UPLOADS: usize = 16;
/// Uploads read at once by a node (each holds its documents in memory until stored).
pub const UPLOADS_AT_ONCE: usize = 4;
/// Where uploaded documents are cited when the upload names no `base_url`: a name without
/// a link (`upload:///refund-policy.pdf#page=2`).
pub const DEFAULT_BASE: &str = "upload:///";
/// The longest file name and `base_url` taken.
const MAX_NAME_BYTES: usize = 255;
const MAX_BASE_URL_BYTES: usize = 2048;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/v1/bots/{id}/documents", "POST").route(web::post().to(upload_documents)),
    );
}

/// The form `POST /v1/bots/{id}/documents` takes (multipart/form-data).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DocumentUpload {
    /// The documents, one part each with its file name (`filename=` in its
    /// Content-Disposition), whose extension says its kind: `.pdf`, `.docx`, `.html`,
    /// `.htm`, `.md`, `.markdown` or `.txt`. At most 20 per request and 64 MiB in all; a
    /// PDF or DOCX up to 32 MiB, other files up to 5 MiB. A name uploaded again replaces
    /// the document of that name.
    #[schema(value_type = Vec<String>, format = Binary)]
    file: Vec<Vec<u8>>,
    /// Where the documents are published (an http(s) URL): each is cited as this URL
    /// joined with its file name, `#page=N` for a PDF's page. Without it they are cited as
    /// `upload:///name` (shown by title, without a link).
    #[schema(format = "uri")]
    base_url: Option<String>,
}

#[utoipa::path(post, path = "/v1/bots/{id}/documents", tag = "bots", summary = "Upload documents into the bot (admin): a job indexes them, as a crawl does", request_body(content = DocumentUpload, content_type = "multipart/form-data"), params(("id" = String, Path, description = "Bot id", pattern = "^[a-z0-9-]{1,64}$")), security(("bearer" = [])), responses((status = 202, description = "Queued", body = SourceAccepted), ApiErrors))]
pub(crate) async fn upload_documents(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let bot = admin_bot(&state, &caller, &path).await?;
    check_declared_length(&req)?;
    // What can be refused without the body is refused before reading it.
    check_extendable(&state, &bot).await?;
    check_pending(&state, &bot.id).await?;
    let _reading = state.uploads.clone().try_acquire_owned().map_err(|_| {
        let message = "too many uploads are being received; try again shortly";
        busy("uploads_busy", message)
    })?;
    let form = read_form(&req, payload).await?;
    let base = form.base()?;
    let (jobs, id) = (state.jobs.clone(), bot.id.clone());
    let job = blocking(move || Ok(jobs.upload(&id, &base, &form.files)?)).await?;
    Ok(HttpResponse::Accepted().json(SourceAccepted::new(job)))
}

/// 429 when `MAX_PENDING_UPLOADS` uploads to the bot wait already (their files fill the
/// store until they run).
async fn check_pending(state: &AppState, bot: &crate::domain::BotId) -> ApiResult<()> {
    let (jobs, id) = (state.jobs.clone(), bot.clone());
    let pending = blocking(move || Ok(jobs.pending_uploads(&id)?)).await?;
    if pending >= MAX_PENDING_UPLOADS {
        let message = format!(
            "{MAX_PENDING_UPLOADS} uploads to this bot are waiting to be indexed; \
             try again when one has finished"
        );
        return Err(busy("uploads_pending", message));
    }
    Ok(())
}

/// 429 with a Retry-After: the upload may pass in a moment.
fn busy(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        retry_after: Some(5),
        ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message)
    }
}

fn too_large(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code, message)
}

/// A body announced larger than any upload may be is refused before it is read.
fn check_declared_length(req: &HttpRequest) -> ApiResult<()> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // The parts' headers and boundaries come on top of the documents.
    let most = (MAX_UPLOAD_BYTES + 64 * 1024) as u64;
    match declared {
        Some(length) if length > most => Err(too_large(
            "payload_too_large",
            format!(
                "the body is {length} bytes; an upload may carry {MAX_UPLOAD_BYTES} bytes of documents"
            ),
        )),
        _ => Ok(()),
    }
}

/// An upload's parts: its documents and where they are cited.
#[derive(Debug, Default)]
struct Form {
    files: Vec<UploadedFile>,
    base_url: Option<String>,
}

impl Form {
    /// The URL the documents are cited under.
    fn base(&self) -> ApiResult<url::Url> {
        let Some(raw) = self.base_url.as_deref() else {
            return Ok(url::Url::parse(DEFAULT_BASE).expect("the default base parses"));
        };
        let invalid =
            |why: &str| ApiError::bad_request("invalid_request", format!("base_url {why}"));
        let url = url::Url::parse(raw.trim()).map_err(|_| invalid("is not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(invalid("must be an http(s) URL"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("must not hold credentials"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("must not have a query or a fragment"));
        }
        Ok(url)
    }
}

/// Reads the multipart body: each part with a file name is a document, `base_url` a text
/// part; anything else, a name twice, an unsupported kind or too many bytes is refused.
async fn read_form(req: &HttpRequest, payload: web::Payload) -> ApiResult<Form> {
    let is_multipart = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    if !is_multipart {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the documents as Content-Type: multipart/form-data, one part per file",
        ));
    }
    let mut parts = Parts {
        inner: Multipart::new(req.headers(), payload),
        ended: false,
    };
    let read = read_parts(&mut parts).await;
    if read.is_err() {
        parts.drain().await;
    }
    read
}

/// The most a refused upload's remaining body is read for (and thrown away).
const DRAIN_BYTES: usize = 2 * MAX_UPLOAD_BYTES;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(30);

/// A form's parts, ended for good after its last part or its first error (the parser
/// must not be polled again after either).
struct Parts {
    inner: Multipart,
    ended: bool,
}

impl Parts {
    async fn next(&mut self) -> Option<Result<actix_multipart::Field, ApiError>> {
        if self.ended {
            return None;
        }
        let next = self.inner.next().await;
        self.ended = !matches!(next, Some(Ok(_)));
        next.map(|part| part.map_err(malformed))
    }

    /// A part's bytes (`read_part`); a broken body ends the form.
    async fn read(
        &mut self,
        part: &mut actix_multipart::Field,
        cap: usize,
        left: usize,
        name: &str,
    ) -> ApiResult<Vec<u8>> {
        let read = read_part(part, cap, left, name).await;
        if read.as_ref().is_err_and(|e| e.code == "invalid_multipart") {
            self.ended = true;
        }
        read
    }

    /// Reads what is left of a refused upload's body, within bounds, so that the client,
    /// still sending, gets the refusal instead of a connection reset.
    async fn drain(&mut self) {
        let drained = async {
            let mut read = 0usize;
            while let Some(Ok(mut part)) = self.next().await {
                while let Some(chunk) = part.next().await {
                    let Ok(chunk) = chunk else {
                        self.ended = true;
                        return;
                    };
                    read += chunk.len();
                    if read > DRAIN_BYTES {
                        return;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIME, drained).await;
    }
}

async fn read_parts(parts: &mut Parts) -> ApiResult<Form> {
    let mut form = Form::default();
    let mut total = 0usize;
    while let Some(part) = parts.next().await {
        let mut part = part?;
        let file_name = part
            .content_disposition()
            .and_then(|d| d.get_filename())
            .map(str::to_string);
        let field = part.name().unwrap_or_default().to_string();
        match file_name {
            Some(name) => {
                let name = document_name(&name)?;
                if form.files.iter().any(|f| f.name == name) {
                    return Err(ApiError::bad_request(
                        "duplicate_document",
                        format!("{name:?} is in this upload twice"),
                    ));
                }
                if form.files.len() == MAX_UPLOAD_FILES {
                    return Err(ApiError::bad_request(
                        "too_many_documents",
                        format!("an upload may carry {MAX_UPLOAD_FILES} documents"),
                    ));
                }
                let cap = local::max_bytes(Path::new(&name));
                let left = MAX_UPLOAD_BYTES - total;
                let bytes = parts.read(&mut part, cap, left, &name).await?;
                if bytes.is_empty() {
                    return Err(ApiError::bad_request(
                        "empty_document",
                        format!("{name:?} is empty"),
                    ));
                }
                total += bytes.len();
                form.files.push(UploadedFile { name, bytes });
            }
            None if field == "base_url" && form.base_url.is_none() => {
                let bytes = parts
                    .read(&mut part, MAX_BASE_URL_BYTES, usize::MAX, "base_url")
                    .await
                    .map_err(|e| match e.code {
                        "document_too_large" => ApiError::bad_request(
                            "invalid_request",
                            format!("base_url is over {MAX_BASE_URL_BYTES} bytes"),
                        ),
                        _ => e,
                    })?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    ApiError::bad_request("invalid_request", "base_url is not UTF-8 text")
                })?;
                form.base_url = Some(text);
            }
            None => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    format!(
                        "unexpected part {field:?}: send documents as file parts (with a \
                         file name) and at most one base_url"
                    ),
                ));
            }
        }
    }
    if form.files.is_empty() {
        return Err(ApiError::bad_request(
            "missing_field",
            "send at least one document: a file part with its file name",
        ));
    }
    Ok(form)
}

fn malformed(e: actix_multipart::MultipartError) -> ApiError {
    ApiError::bad_request(
        "invalid_multipart",
        format!("unreadable multipart body: {e}"),
    )
}

/// A part's bytes, refused past `cap` (the file's own limit) or `left` (what the request
/// may still carry).
async fn read_part(
    part: &mut actix_multipart::Field,
    cap: usize,
    left: usize,
    name: &str,
) -> ApiResult<Vec<u8>> {
    let mut bytes = Vec::new();
    while let Some(chunk) = part.next().await {
        let chunk = chunk.map_err(malformed)?;
        if bytes.len() + chunk.len() > cap {
            return Err(too_large(
                "document_too_large",
                format!("{name:?} is over {cap} bytes, the most a file of its kind may have"),
            ));
        }
        if bytes.len() + chunk.len() > left {
            return Err(too_large(
                "payload_too_large",
                format!("an upload may carry {MAX_UPLOAD_BYTES} bytes of documents"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// The name a document is kept and cited under: the uploaded file name without folders,
/// of a kind docent reads.
fn document_name(raw: &str) -> ApiResult<String> {
    let name = raw.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    let invalid = |why: String| ApiError::bad_request("invalid_document_name", why);
    if name.is_empty() || name == "." || name == ".." {
        return Err(invalid(format!("{raw:?} is not a file name")));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(invalid(format!(
            "a file name may have {MAX_NAME_BYTES} bytes"
        )));
    }
    if name.chars().any(|c| c.is_control() || c == '\u{10ffff}') {
        return Err(invalid(format!("{name:?} holds control characters")));
    }
    if !local::is_supported(Path::new(name)) {
        let kinds = local::SUPPORTED
            .iter()
            .map(|ext| format!(".{ext}"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ApiError::bad_request(
            "unsupported_document",
            format!("{name:?} is not a kind of file docent reads ({kinds})"),
        ));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_keeps_its_file_name_without_folders_and_of_a_kind_docent_reads() {
        assert_eq!(
            document_name("refund-policy.pdf").unwrap(),
            "refund-policy.pdf"
        );
        assert_eq!(
            document_name("C:\\Users\\ana\\Price List.DOCX").unwrap(),
            "Price List.DOCX"
        );
        assert_eq!(document_name("../../etc/notes.md").unwrap(), "notes.md");
        for (raw, code) in [
            ("", "invalid_document_name"),
            ("docs/", "invalid_document_name"),
            ("..", "invalid_document_name"),
            ("a\u{7}.pdf", "invalid_document_name"),
            ("setup.exe", "unsupported_document"),
            ("archive.pdf.zip", "unsupported_document"),
            ("README", "unsupported_document"),
        ] {
            assert_eq!(document_name(raw).unwrap_err().code, code, "{raw:?}");
        }
        let long = format!("{}.pdf", "a".repeat(300));
        assert_eq!(
            document_name(&long).unwrap_err().code,
            "invalid_document_name"
        );
    }

    #[test]
    fn the_base_url_is_a_plain_http_address_or_the_upload_default() {
        let form = |base: Option<&str>| Form {
            base_url: base.map(str::to_string),
            ..Form::default()
        };
        assert_eq!(form(None).base().unwrap().as_str(), DEFAULT_BASE);
        assert_eq!(
            form(Some(" https://docs.example/files/ "))
                .base()
                .unwrap()
                .as_str(),
            "https://docs.example/files/"
        );
        for bad in [
            "docs/files",
            "ftp://docs.example/",
            "file:///etc/",
            "https://ana:pw@docs.example/",
            "https://docs.example/?a=1",
            "https://docs.example/#x",
        ] {
            assert_eq!(
                form(Some(bad)).base().unwrap_err().code,
                "invalid_request",
                "{bad}"
            );
        }
    }
}
