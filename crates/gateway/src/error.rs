//! The one error type, and the only place an error becomes an HTTP status or a gRPC code.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::registry::{MAX_INGEST_ID_LEN, RegistryError, RejectReason};
use crate::store::StoreError;

/// Seconds a publisher is told to wait before retrying when the gateway is full or draining.
const RETRY_AFTER_SECS: &str = "5";

/// Everything that can go wrong at the WHIP edge or on the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed or unusable input (SDP, ids, targets, fragments).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong bearer token / API key.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// A signed publish token that does not open this ingest (why, from a fixed set).
    #[error("unauthorized: {0}")]
    TokenRefused(&'static str),
    /// No ingest registered under this id.
    #[error("no such ingest: {0}")]
    IngestNotFound(String),
    /// No live session under this id.
    #[error("no such session")]
    SessionNotFound,
    /// The ingest already has a live publisher (one publisher per stream).
    #[error("ingest {0} already has a live publisher")]
    PublisherConflict(String),
    /// A different ingest is registered under this id.
    #[error("ingest {0} already exists with different parameters (set replace to overwrite)")]
    IngestExists(String),
    /// The global publisher cap is reached.
    #[error("publisher cap reached ({0} live publishers)")]
    CapReached(usize),
    /// The gateway is shutting down and takes no new work.
    #[error("gateway is shutting down")]
    Draining,
    /// Request body of the wrong content type.
    #[error("unsupported content type, expected {0}")]
    UnsupportedMediaType(&'static str),
    /// The answer (ICE gathering included) was not ready in time.
    #[error("ICE gathering did not finish in time")]
    GatherTimeout,
    /// `If-Match` does not match the session's ETag.
    #[error("If-Match does not match the session ETag")]
    PreconditionFailed,
    /// `If-Match` is required and missing.
    #[error("If-Match header required")]
    PreconditionRequired,
    /// Well-formed but not something this server can do.
    #[error("{0}")]
    Unprocessable(String),
    /// A watcher asked for history the gateway no longer holds.
    #[error("{0}")]
    OutOfRange(String),
    /// A watcher could not keep up with the event stream.
    #[error("{0}")]
    Lagged(String),
    /// Too much at once (negotiations, requests, watchers): retry later.
    #[error("{0}")]
    Overloaded(String),
    /// This client sent too many requests; retry after the given time.
    #[error("too many requests, retry in {}s", retry_after_secs(*.0))]
    RateLimited(std::time::Duration),
    /// The request took longer than the configured request timeout.
    #[error("request timed out")]
    RequestTimeout,
    /// The session ended (replaced, torn down, unregistered) before its answer was sent.
    #[error("the session ended during negotiation")]
    SessionEnded,
    /// A watcher named the event epoch of another gateway run.
    #[error("{0}")]
    StaleEpoch(String),
    /// The route is turned off by configuration; the text says how to turn it on.
    #[error("{0}")]
    Forbidden(String),
    /// A dependency (the cluster's Redis) is unreachable for now; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// A flag, file or setting the gateway cannot start (or reload) with; the text names it.
    #[error("{0}")]
    Config(String),
    /// A bug or an environment failure; details go to the log, not to the client.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// A listener that could not be bound, named by its flag and address
    /// (`--tcp-listen 0.0.0.0:8189: address in use`).
    pub fn bind(flag: &str, addr: std::net::SocketAddr, err: &std::io::Error) -> Self {
        use std::io::ErrorKind;
        let why = match err.kind() {
            ErrorKind::AddrInUse => "address in use (another process holds it)".to_owned(),
            ErrorKind::AddrNotAvailable => "address not available on this host".to_owned(),
            ErrorKind::PermissionDenied => {
                "permission denied (ports below 1024 need privileges)".to_owned()
            }
            _ => err.to_string(),
        };
        Error::Config(format!("{flag} {addr}: {why}"))
    }

    /// Wraps any failure as an internal error.
    pub fn internal(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Internal(err.into())
    }

    /// The HTTP status this error answers with at the WHIP edge.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized | Error::TokenRefused(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::IngestNotFound(_) | Error::SessionNotFound => StatusCode::NOT_FOUND,
            Error::PublisherConflict(_) | Error::IngestExists(_) => StatusCode::CONFLICT,
            Error::CapReached(_)
            | Error::Draining
            | Error::Overloaded(_)
            | Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::SessionEnded => StatusCode::CONFLICT,
            Error::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::GatherTimeout => StatusCode::GATEWAY_TIMEOUT,
            Error::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Error::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            Error::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::OutOfRange(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            Error::Lagged(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::StaleEpoch(_) => StatusCode::PRECONDITION_FAILED,
            Error::Config(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC code this error answers with on the control plane.
    pub fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Error::BadRequest(_) | Error::UnsupportedMediaType(_) | Error::Unprocessable(_) => {
                Code::InvalidArgument
            }
            Error::Unauthorized | Error::TokenRefused(_) => Code::Unauthenticated,
            Error::Forbidden(_) => Code::PermissionDenied,
            Error::IngestNotFound(_) | Error::SessionNotFound => Code::NotFound,
            Error::PublisherConflict(_) | Error::IngestExists(_) => Code::AlreadyExists,
            Error::CapReached(_) | Error::Overloaded(_) | Error::RateLimited(_) => {
                Code::ResourceExhausted
            }
            Error::SessionEnded => Code::Aborted,
            Error::Draining | Error::Unavailable(_) => Code::Unavailable,
            Error::GatherTimeout | Error::RequestTimeout => Code::DeadlineExceeded,
            Error::PreconditionFailed | Error::PreconditionRequired => Code::FailedPrecondition,
            Error::OutOfRange(_) => Code::OutOfRange,
            Error::Lagged(_) => Code::ResourceExhausted,
            Error::StaleEpoch(_) => Code::FailedPrecondition,
            Error::Config(_) | Error::Internal(_) => Code::Internal,
        }
    }

    /// Why a publish was refused, for the publish-rejected event.
    pub fn reject_reason(&self) -> RejectReason {
        match self {
            Error::CapReached(_) => RejectReason::Cap,
            Error::PublisherConflict(_) => RejectReason::Conflict,
            Error::Unauthorized | Error::TokenRefused(_) => RejectReason::Auth,
            Error::IngestNotFound(_) => RejectReason::NotFound,
            Error::BadRequest(_) | Error::Unprocessable(_) | Error::UnsupportedMediaType(_) => {
                RejectReason::BadSdp
            }
            Error::Draining => RejectReason::Draining,
            Error::SessionEnded => RejectReason::Conflict,
            Error::Overloaded(_) | Error::RateLimited(_) => RejectReason::Cap,
            _ => RejectReason::Internal,
        }
    }

    /// The short text a client sees (an internal error's details stay in the log).
    fn public_message(&self) -> String {
        self.to_string()
    }

    /// Logs an internal error's whole source chain; called where an error becomes a response.
    fn log_if_internal(&self) {
        if let Error::Internal(source) = self {
            tracing::error!(error = %error_chain(source.as_ref()), "internal error");
        }
    }
}

/// Whole seconds to wait, at least 1 (Retry-After has second resolution).
fn retry_after_secs(wait: std::time::Duration) -> u64 {
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    whole.max(1)
}

pub use crate::net::untrusted::{Bounded, MAX_LOGGED_BYTES, bounded};

/// The registry's refusals in the edge's terms: the status follows from the variant, the
/// client-facing text is written here.
impl From<RegistryError> for Error {
    fn from(err: RegistryError) -> Self {
        match err {
            RegistryError::InvalidIngestId(id) => Error::BadRequest(format!(
                "invalid ingest id {id:?}: 1 to {MAX_INGEST_ID_LEN} characters of [A-Za-z0-9._~-]"
            )),
            RegistryError::IngestNotFound(id) => Error::IngestNotFound(id),
            RegistryError::IngestExists(id) => Error::IngestExists(id),
            RegistryError::SessionNotFound => Error::SessionNotFound,
            RegistryError::PublisherConflict(id) => Error::PublisherConflict(id),
            RegistryError::CapReached(live) => Error::CapReached(live),
            RegistryError::Draining => Error::Draining,
            RegistryError::Unauthorized => Error::Unauthorized,
            RegistryError::BadOffer(reason) => Error::BadRequest(reason.to_string()),
            RegistryError::SessionBusy => Error::Unprocessable("the session is busy; retry".into()),
            RegistryError::EventsGone { from_seq, oldest } => Error::OutOfRange(format!(
                "from_seq {from_seq} is older than the event history (oldest held: {oldest})"
            )),
            RegistryError::EventsAhead { from_seq, newest } => Error::OutOfRange(format!(
                "from_seq {from_seq} is beyond the newest event ({newest})"
            )),
            RegistryError::StaleEpoch {
                requested,
                current,
                oldest,
            } => Error::StaleEpoch(format!(
                "events of epoch {requested} are gone: the gateway restarted and now runs \
                 epoch {current}; resume with epoch {current} from_seq {oldest} (oldest held) \
                 or from_seq 0 (live only)"
            )),
            RegistryError::Store(StoreError::Unavailable(why)) => {
                Error::Unavailable(format!("cluster store unavailable: {why}"))
            }
            err @ RegistryError::Store(_) => Error::internal(err),
        }
    }
}

/// Formats an error with its whole source chain, for logs.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.log_if_internal();
        let status = self.http_status();
        let mut response = (status, self.public_message() + "\n").into_response();
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750 section 3 / RFC 9110 section 15.5.2: a 401 names its scheme.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"whipgate\""),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        if let Error::RateLimited(wait) = self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(wait)),
            );
        }
        response
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        err.log_if_internal();
        tonic::Status::new(err.grpc_code(), err.public_message())
    }
}

#[cfg(test)]
mod tests;
