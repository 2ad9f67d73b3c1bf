use super::*;

#[test]
fn plain_urls_pass_through() {
    let t = RedisTarget::parse("redis://127.0.0.1:6379/2").expect("parse");
    assert_eq!(t, RedisTarget::Direct("redis://127.0.0.1:6379/2".into()));
}

#[test]
fn sentinel_urls_split_into_sentinels_master_and_db() {
    let t = RedisTarget::parse("redis+sentinel://:s3cret@10.0.0.1:26380,10.0.0.2/mymaster/3")
        .expect("parse");
    assert_eq!(
        t,
        RedisTarget::Sentinel {
            sentinels: vec![
                "redis://10.0.0.1:26380".into(),
                "redis://10.0.0.2:26379".into()
            ],
            master: "mymaster".into(),
            db: 3,
            username: None,
            password: Some("s3cret".into()),
            tls: false,
        }
    );
    let t = RedisTarget::parse("redis+sentinel://h:1/m").expect("parse");
    assert!(matches!(t, RedisTarget::Sentinel { db: 0, .. }));
    let RedisTarget::Sentinel { sentinels, .. } =
        RedisTarget::parse("redis+sentinel://[::1]:5,[::1]/m").expect("parse")
    else {
        panic!("not sentinel")
    };
    assert_eq!(sentinels, ["redis://[::1]:5", "redis://[::1]:26379"]);
}

#[test]
fn tls_and_credentials_parse() {
    let url = "rediss://app:pw@redis.example:6380/1";
    assert_eq!(
        RedisTarget::parse(url).expect("parse"),
        RedisTarget::Direct(url.into())
    );
    assert_eq!(redact(url), "rediss://app:***@redis.example:6380/1");
    let t = RedisTarget::parse("rediss+sentinel://app:pw@h:1/m").expect("parse");
    assert!(matches!(
        t,
        RedisTarget::Sentinel { tls: true, ref username, .. } if username.as_deref() == Some("app")
    ));
}

#[test]
fn bad_urls_say_what_is_wrong() {
    for (url, want) in [
        ("http://x", "expected redis://"),
        ("redis+sentinel://h:1", "missing master name"),
        ("redis+sentinel://h:x/m", "bad sentinel port"),
        ("redis+sentinel://h:1,/m", "empty sentinel address"),
        ("redis+sentinel://h:1/m/zz", "bad database number"),
        ("redis+sentinel://h:1/m/1/x", "unexpected path"),
    ] {
        let err = RedisTarget::parse(url).expect_err(url).to_string();
        assert!(err.contains(want), "{url}: {err}");
    }
}

#[test]
fn passwords_never_reach_messages() {
    let err = RedisTarget::parse("redis+sentinel://u:hunter2@h:1")
        .expect_err("no master")
        .to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert_eq!(redact("redis://:pw@h:1/0"), "redis://:***@h:1/0");
    assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
}
