//! The read surfaces (`/api/ingests`, `/events`, `/events/token`) on whole gateways: off
//! without an API key, never readable cross-origin unless `--api-cors-origins` names the
//! origin, while WHIP's own CORS stays open for publishers on other origins.

use anyhow::Result;

use crate::harness::TestGateway;

const EVIL: &str = "https://evil.example";
const KEY: &str = "read-api-key";

fn allow_origin(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("access-control-allow-origin")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_gateway_serves_no_data_to_anyone() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    gw.register("cam", None, None).await?;
    for path in ["/api/ingests", "/events", "/events?from_seq=1"] {
        let response = gw
            .http
            .get(gw.url(path))
            .header("origin", EVIL)
            .send()
            .await?;
        assert_eq!(response.status(), 403, "{path}");
        assert_eq!(allow_origin(&response), None, "{path}");
        let text = response.text().await?;
        assert!(
            !text.contains("cam") && text.contains("--api-key-file"),
            "{text}"
        );
    }
    let token = gw.http.post(gw.url("/events/token")).send().await?;
    assert_eq!(token.status(), 403);
    // The page loads, and says why it shows nothing.
    assert_eq!(
        gw.http.get(gw.url("/dashboard")).send().await?.status(),
        200
    );
    // WHIP's CORS is unchanged: a publisher page on another origin may POST.
    let preflight = gw
        .http
        .request(reqwest::Method::OPTIONS, gw.whip_url("cam"))
        .header("origin", EVIL)
        .header("access-control-request-method", "POST")
        .send()
        .await?;
    assert_eq!(allow_origin(&preflight).as_deref(), Some("*"));
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_key_the_data_is_readable_only_same_origin_or_from_named_origins() -> Result<()> {
    let ops = "https://ops.example.com";
    let gw = TestGateway::start_with(|c| {
        c.api_key = Some(KEY.into());
        c.api_cors_origins = vec![ops.into()];
    })
    .await?;
    let get = |origin: &'static str, key: Option<&'static str>| {
        let mut request = gw.http.get(gw.url("/api/ingests")).header("origin", origin);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    let evil = get(EVIL, Some(KEY)).await?;
    assert_eq!(evil.status(), 200, "the server answers the key...");
    assert_eq!(
        allow_origin(&evil),
        None,
        "...but no browser lets evil read it"
    );
    let named = get(ops, Some(KEY)).await?;
    assert_eq!(allow_origin(&named).as_deref(), Some(ops));
    assert_eq!(get(ops, None).await?.status(), 401);
    let preflight = gw
        .http
        .request(reqwest::Method::OPTIONS, gw.url("/events/token"))
        .header("origin", EVIL)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization")
        .send()
        .await?;
    assert_eq!(allow_origin(&preflight), None, "no preflight for evil");
    gw.stop().await
}
