use super::*;

/// What a WHIP client does about each error. Exhaustive: adding a variant fails to
/// compile until it is placed here.
fn reaction(err: &Error) -> (&'static str, u16) {
    match err {
        Error::BadRequest(_) => ("fix the request", 400),
        Error::Unauthorized | Error::TokenRefused(_) => ("send the right token", 401),
        Error::Forbidden(_) => ("ask the operator to turn it on", 403),
        Error::IngestNotFound(_) | Error::SessionNotFound => ("wrong URL", 404),
        Error::PublisherConflict(_) | Error::IngestExists(_) | Error::SessionEnded => {
            ("someone else holds it", 409)
        }
        Error::CapReached(_) | Error::Draining | Error::Overloaded(_) | Error::Unavailable(_) => {
            ("retry after Retry-After", 503)
        }
        Error::UnsupportedMediaType(_) => ("fix the content type", 415),
        Error::GatherTimeout => ("retry now", 504),
        Error::RequestTimeout => ("send the request faster", 408),
        Error::PreconditionFailed | Error::StaleEpoch(_) => ("refetch the state", 412),
        Error::PreconditionRequired => ("send If-Match", 428),
        Error::Unprocessable(_) => ("offer something else", 422),
        Error::OutOfRange(_) => ("resume from the start", 416),
        Error::Lagged(_) | Error::RateLimited(_) => ("slow down", 429),
        // A start-up or reload failure: never an answer to a request.
        Error::Config(_) | Error::Internal(_) => ("report a bug", 500),
    }
}

fn every_variant() -> Vec<Error> {
    vec![
        Error::Forbidden("off".into()),
        Error::BadRequest("x".into()),
        Error::Unauthorized,
        Error::TokenRefused("expired"),
        Error::IngestNotFound("x".into()),
        Error::SessionNotFound,
        Error::PublisherConflict("x".into()),
        Error::IngestExists("x".into()),
        Error::CapReached(1),
        Error::Draining,
        Error::UnsupportedMediaType("application/sdp"),
        Error::GatherTimeout,
        Error::PreconditionFailed,
        Error::PreconditionRequired,
        Error::Unprocessable("x".into()),
        Error::OutOfRange("x".into()),
        Error::Lagged("x".into()),
        Error::Overloaded("x".into()),
        Error::RateLimited(std::time::Duration::from_millis(1500)),
        Error::SessionEnded,
        Error::RequestTimeout,
        Error::StaleEpoch("x".into()),
        Error::Unavailable("x".into()),
        Error::internal("x"),
    ]
}

#[test]
fn every_publish_failure_has_distinct_http_status() {
    let all = every_variant();
    for err in &all {
        assert_eq!(err.http_status(), reaction(err).1, "{err:?}");
    }
    // Two errors share a status exactly when the client reacts to them the same way.
    for a in &all {
        for b in &all {
            assert_eq!(
                a.http_status() == b.http_status(),
                reaction(a).0 == reaction(b).0,
                "{a:?} vs {b:?}"
            );
        }
    }
    // Every variant is listed once (the match above is the exhaustive part).
    let mut names: Vec<String> = all
        .iter()
        .map(|e| {
            format!("{e:?}")
                .split(['(', ' '])
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), all.len());
}

#[test]
fn rate_limited_answers_say_when_to_retry() {
    let response = Error::RateLimited(std::time::Duration::from_millis(1500)).into_response();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    assert_eq!(retry_after_secs(std::time::Duration::ZERO), 1);
    assert_eq!(retry_after_secs(std::time::Duration::from_secs(3)), 3);
}

#[test]
fn unavailable_answers_carry_retry_after() {
    let response = Error::CapReached(64).into_response();
    assert_eq!(response.headers()[header::RETRY_AFTER], RETRY_AFTER_SECS);
}

#[test]
fn grpc_codes_follow_the_contract() {
    use tonic::Code;
    assert_eq!(
        Error::IngestNotFound("x".into()).grpc_code(),
        Code::NotFound
    );
    assert_eq!(
        Error::IngestExists("x".into()).grpc_code(),
        Code::AlreadyExists
    );
    assert_eq!(
        Error::BadRequest("x".into()).grpc_code(),
        Code::InvalidArgument
    );
    assert_eq!(Error::CapReached(1).grpc_code(), Code::ResourceExhausted);
    assert_eq!(Error::Draining.grpc_code(), Code::Unavailable);
    assert_eq!(Error::Unauthorized.grpc_code(), Code::Unauthenticated);
}
