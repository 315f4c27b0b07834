//! One lookup at the case service: a GET of the URL template with `{kind}`
//! and `{id}` filled in, over the project's hyper/rustls client, bounded in
//! time (`timeout_ms` over the whole exchange) and size (64 KiB of body).
//! Redirects are not followed. The bearer credential is read from
//! `bearer_token_file` (again on `reload_token`), sent as a sensitive header
//! and never printed. The answer is parsed strictly: anything but a 404 or a
//! well-formed 200 is an error.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::template::UrlTemplate;
use super::{Answer, Justification, Kind, Status};
use crate::config::ConfigError;
use crate::tls::https_client::{https_client, HttpsClient};

/// Largest answer body accepted (a justification is a few hundred bytes).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most entries accepted in `assignees` or `subjects`.
pub const MAX_LIST_ENTRIES: usize = 1000;

/// Why a lookup got no usable answer. Messages name statuses and causes,
/// never the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("no answer within the timeout")]
    Timeout,
    #[error("transport: {0}")]
    Transport(String),
    #[error("HTTP status {0} (redirects are not followed)")]
    Redirect(u16),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("response body larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("response body: {0}")]
    Body(String),
    #[error("unusable answer: {0}")]
    BadAnswer(String),
    #[error("internal: {0}")]
    Internal(&'static str),
}

impl LookupError {
    /// Whether the failure says the service is down or overloaded (then
    /// lookups fail fast for a while) rather than that one answer was bad.
    pub fn service_down(&self) -> bool {
        match self {
            LookupError::Timeout | LookupError::Transport(_) => true,
            LookupError::Status(s) => *s >= 500 || *s == 429,
            _ => false,
        }
    }
}

/// The HTTP side of the check.
pub struct CaseClient {
    http: HttpsClient,
    url: UrlTemplate,
    timeout: Duration,
    token_file: Option<PathBuf>,
    token: ArcSwapOption<HeaderValue>,
}

impl std::fmt::Debug for CaseClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaseClient")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("token_file", &self.token_file)
            .finish_non_exhaustive()
    }
}

impl CaseClient {
    /// Builds the client; reads `ca_file` and `bearer_token_file` (blocking).
    pub fn new(cfg: &super::JustificationsConfig) -> Result<CaseClient, ConfigError> {
        let token = cfg
            .bearer_token_file
            .as_deref()
            .map(read_token)
            .transpose()?;
        Ok(CaseClient {
            http: https_client(cfg.ca_file.as_deref(), cfg.timeout)?,
            url: cfg.url.clone(),
            timeout: cfg.timeout,
            token_file: cfg.bearer_token_file.clone(),
            token: ArcSwapOption::new(token.map(Arc::new)),
        })
    }

    /// Re-reads the credential file; the old credential stays on error.
    pub fn reload_token(&self) -> Result<(), ConfigError> {
        if let Some(path) = &self.token_file {
            self.token.store(Some(Arc::new(read_token(path)?)));
        }
        Ok(())
    }

    /// Asks the service about one justification.
    pub async fn fetch(&self, kind: Kind, id: &str) -> Result<Answer, LookupError> {
        let uri = self
            .url
            .render(kind, id)
            .map_err(|_| LookupError::Internal("URL from template"))?;
        let mut req = Request::get(uri)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, "purposegate");
        if let Some(token) = self.token.load_full() {
            req = req.header(header::AUTHORIZATION, (*token).clone());
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|_| LookupError::Internal("request build"))?;
        tokio::time::timeout(self.timeout, self.exchange(req))
            .await
            .map_err(|_| LookupError::Timeout)?
    }

    async fn exchange(&self, req: Request<Empty<Bytes>>) -> Result<Answer, LookupError> {
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| LookupError::Transport(error_chain(&e)))?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(Answer::NotFound);
        }
        if status.is_redirection() {
            return Err(LookupError::Redirect(status.as_u16()));
        }
        if status != StatusCode::OK {
            return Err(LookupError::Status(status.as_u16()));
        }
        let declared = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err(LookupError::TooLarge);
        }
        let body = Limited::new(resp.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    LookupError::TooLarge
                } else {
                    LookupError::Body(error_chain(e.as_ref()))
                }
            })?
            .to_bytes();
        parse_answer(&body).map(|j| Answer::Found(Arc::new(j)))
    }
}

/// Reads a bearer credential: the file's text without surrounding
/// whitespace, which must be a non-empty header-safe token. Errors name the
/// file, never its content.
pub fn read_token(path: &Path) -> Result<HeaderValue, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            path,
            None,
            format!("cannot read justifications.bearer_token_file: {e}"),
        )
    })?;
    let token = text.trim();
    let usable = !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic());
    let value = usable
        .then(|| HeaderValue::from_str(&format!("Bearer {token}")).ok())
        .flatten()
        .ok_or_else(|| {
            ConfigError::new(
                path,
                None,
                "justifications.bearer_token_file: expected one token of printable ASCII",
            )
        })?;
    let mut value = value;
    value.set_sensitive(true);
    Ok(value)
}

/// The 200 body as sent.
#[derive(Deserialize)]
struct Wire {
    status: Status,
    #[serde(deserialize_with = "bounded_list")]
    assignees: Vec<String>,
    #[serde(deserialize_with = "bounded_list")]
    subjects: Vec<String>,
    /// `null` reads as absent.
    #[serde(default)]
    requested_by: Option<String>,
}

/// Parses a 200 body. A JSON object is required (serde would also take an
/// array for a struct); members are typed strictly, duplicated members and
/// lists over `MAX_LIST_ENTRIES` are errors. Members this version does not
/// know are ignored, so the service can add fields without breaking proxies.
pub fn parse_answer(body: &[u8]) -> Result<Justification, LookupError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(LookupError::BadAnswer("not a JSON object".into()));
    }
    let wire: Wire = serde_json::from_slice(body)
        .map_err(|e| LookupError::BadAnswer(shorten(&e.to_string())))?;
    Ok(Justification {
        status: wire.status,
        assignees: wire.assignees,
        subjects: wire.subjects,
        requested_by: wire.requested_by,
    })
}

/// serde_json's messages quote the offending value; keep them short.
fn shorten(message: &str) -> String {
    const MAX: usize = 200;
    match message.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &message[..i]),
        None => message.to_string(),
    }
}

fn bounded_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Bounded;
    impl<'de> Visitor<'de> for Bounded {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of at most {MAX_LIST_ENTRIES} strings")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                if out.len() == MAX_LIST_ENTRIES {
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX_LIST_ENTRIES} entries"
                    )));
                }
                out.push(s);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Bounded)
}

/// An error with its sources (hyper's top-level messages say little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_well_formed_answer() {
        let j = parse_answer(
            br#" {"status":"open","assignees":["e1"],"subjects":["u1","u2"],"requested_by":"u1","title":"ignored"}"#,
        )
        .unwrap();
        assert_eq!(j.status, Status::Open);
        assert_eq!(j.assignees, ["e1"]);
        assert_eq!(j.subjects, ["u1", "u2"]);
        assert_eq!(j.requested_by.as_deref(), Some("u1"));
        let j = parse_answer(
            br#"{"status":"closed","assignees":[],"subjects":[],"requested_by":null}"#,
        )
        .unwrap();
        assert_eq!(j.status, Status::Closed);
        assert_eq!(j.requested_by, None);
    }

    #[test]
    fn refuses_hostile_answers() {
        let many: Vec<String> = (0..=MAX_LIST_ENTRIES).map(|i| format!("e{i}")).collect();
        let oversized = format!(
            r#"{{"status":"open","assignees":{},"subjects":[]}}"#,
            serde_json::to_string(&many).unwrap()
        );
        let bad: Vec<&[u8]> = vec![
            b"",
            b"null",
            b"not json",
            br#"["open",["e1"],["u1"]]"#,
            br#"{"status":"pending","assignees":[],"subjects":[]}"#,
            br#"{"status":"Open","assignees":[],"subjects":[]}"#,
            br#"{"status":1,"assignees":[],"subjects":[]}"#,
            br#"{"status":"open","assignees":"e1","subjects":[]}"#,
            br#"{"status":"open","assignees":[1],"subjects":[]}"#,
            br#"{"status":"open","assignees":[null],"subjects":[]}"#,
            br#"{"status":"open","assignees":[],"subjects":[],"requested_by":7}"#,
            br#"{"status":"open","assignees":[]}"#,
            br#"{"status":"closed","status":"open","assignees":[],"subjects":[]}"#,
            br#"{"status":"open","assignees":[],"subjects":[],"subjects":["u1"]}"#,
            br#"{"status":"open","assignees":[],"subjects":[]} trailing"#,
            oversized.as_bytes(),
        ];
        for body in bad {
            let r = parse_answer(body);
            assert!(
                matches!(r, Err(LookupError::BadAnswer(_))),
                "{}: {r:?}",
                String::from_utf8_lossy(&body[..body.len().min(80)])
            );
        }
        let exactly = format!(
            r#"{{"status":"open","assignees":{},"subjects":[]}}"#,
            serde_json::to_string(&many[..MAX_LIST_ENTRIES]).unwrap()
        );
        assert!(parse_answer(exactly.as_bytes()).is_ok());
    }

    #[test]
    fn credential_files_are_checked_without_echoing_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  s3cret-value\n").unwrap();
        let v = read_token(&path).unwrap();
        assert_eq!(v.to_str().unwrap(), "Bearer s3cret-value");
        assert!(v.is_sensitive());
        assert!(!format!("{v:?}").contains("s3cret"));
        for bad in ["", "two words", "tab\there", "caf\u{e9}"] {
            std::fs::write(&path, format!("{bad}\n")).unwrap();
            let e = read_token(&path).unwrap_err();
            assert!(e.to_string().contains("printable ASCII"), "{e}");
            if !bad.is_empty() {
                assert!(!e.to_string().contains(bad), "{e}");
            }
        }
        assert!(read_token(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn which_failures_mean_the_service_is_down() {
        assert!(LookupError::Timeout.service_down());
        assert!(LookupError::Transport("refused".into()).service_down());
        assert!(LookupError::Status(503).service_down());
        assert!(LookupError::Status(429).service_down());
        assert!(!LookupError::Status(401).service_down());
        assert!(!LookupError::Redirect(302).service_down());
        assert!(!LookupError::BadAnswer("x".into()).service_down());
        assert!(!LookupError::TooLarge.service_down());
    }
}
