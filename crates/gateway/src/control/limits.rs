//! What the control plane accepts: the API key check (an interceptor shared by the service
//! and reflection), per-field size limits, and ListIngests pages.

use tonic::{Request, Status};

use crate::error::Error;
use crate::registry::{IngestView, Registry};
use crate::secret::Secret;
use whipgate_proto::pb;

/// Labels per ingest at most.
pub const MAX_LABELS: usize = 32;
/// Bytes per label key at most.
pub const MAX_LABEL_KEY_BYTES: usize = 64;
/// Bytes per label value at most.
pub const MAX_LABEL_VALUE_BYTES: usize = 256;
/// Bytes of a bearer token at most.
pub const MAX_TOKEN_BYTES: usize = 1024;
/// Bytes of a teardown reason at most.
pub const MAX_REASON_BYTES: usize = 256;
/// Bytes of a redirect URL at most.
pub const MAX_URL_BYTES: usize = 2048;
/// Bytes of a `host:port` target at most.
pub const MAX_TARGET_BYTES: usize = 256;
/// Ingest ids or kinds in a WatchEvents filter at most.
pub const MAX_FILTER_ENTRIES: usize = 256;
/// Ingests per ListIngests page when the request names no size.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Ingests per ListIngests page at most.
pub const MAX_PAGE_SIZE: usize = 1000;
/// Largest control-plane request message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Checks `authorization: Bearer <key>` (constant time, length included) when a key is set.
/// Wraps the control service and reflection; health stays open.
pub fn api_key_interceptor(
    key: Option<&str>,
    registry: Registry,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
    let key = key.map(Secret::new);
    move |request: Request<()>| {
        let Some(expected) = &key else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        match given {
            Some(given) if expected.matches(given) => Ok(request),
            _ => {
                registry
                    .metrics()
                    .control_requests
                    .with_label_values(&["auth", "UNAUTHENTICATED"])
                    .inc();
                Err(Status::unauthenticated("missing or invalid API key"))
            }
        }
    }
}

fn at_most(field: &str, value: &str, max: usize) -> Result<(), Error> {
    if value.len() > max {
        return Err(Error::BadRequest(format!(
            "{field} is {} bytes, at most {max} allowed",
            value.len()
        )));
    }
    Ok(())
}

/// Size limits of a registration (the ingest id and codecs are checked by the conversion).
pub(super) fn check_register(req: &pb::RegisterIngestRequest) -> Result<(), Error> {
    at_most("bearer_token", &req.bearer_token, MAX_TOKEN_BYTES)?;
    at_most("redirect_url", &req.redirect_url, MAX_URL_BYTES)?;
    at_most("video_target", &req.video_target, MAX_TARGET_BYTES)?;
    at_most("audio_target", &req.audio_target, MAX_TARGET_BYTES)?;
    at_most("simulcast_layer", &req.simulcast_layer, 255)?;
    if req.labels.len() > MAX_LABELS {
        return Err(Error::BadRequest(format!(
            "{} labels, at most {MAX_LABELS} allowed",
            req.labels.len()
        )));
    }
    for (key, value) in &req.labels {
        at_most("label key", key, MAX_LABEL_KEY_BYTES)?;
        at_most("label value", value, MAX_LABEL_VALUE_BYTES)?;
    }
    if req.video_codecs.len() > 16 || req.audio_codecs.len() > 16 {
        return Err(Error::BadRequest("at most 16 codecs per kind".into()));
    }
    Ok(())
}

/// Size limit of a teardown reason.
pub(super) fn check_reason(reason: &str) -> Result<(), Error> {
    at_most("reason", reason, MAX_REASON_BYTES)
}

/// Size limits of a WatchEvents filter.
pub(super) fn check_watch(req: &pb::WatchEventsRequest) -> Result<(), Error> {
    if req.ingest_ids.len() > MAX_FILTER_ENTRIES || req.kinds.len() > MAX_FILTER_ENTRIES {
        return Err(Error::BadRequest(format!(
            "at most {MAX_FILTER_ENTRIES} ingest ids and kinds in a filter"
        )));
    }
    Ok(())
}

/// One page of `all` (sorted by id): the ingests after `token`, and the token of the next
/// page (empty after the last). The token is the last id of the previous page.
pub(super) fn page(
    all: Vec<IngestView>,
    page_size: u32,
    token: &str,
) -> Result<(Vec<IngestView>, String), Error> {
    if !token.is_empty() {
        crate::registry::validate_ingest_id(token)
            .map_err(|_| Error::BadRequest("invalid page_token".into()))?;
    }
    let size = match page_size as usize {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    };
    let mut rest: Vec<IngestView> = all
        .into_iter()
        .filter(|v| token.is_empty() || v.spec.id.as_str() > token)
        .collect();
    let more = rest.len() > size;
    rest.truncate(size);
    let next = match rest.last() {
        Some(last) if more => last.spec.id.clone(),
        _ => String::new(),
    };
    Ok((rest, next))
}
