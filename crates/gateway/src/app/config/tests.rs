//! Layering (flags > environment > file > defaults), file checks and the control-plane guard.

use super::*;

fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("whipgate-{name}-{}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn defaults_match_the_documented_ports() {
    let c = Config::default();
    assert_eq!(c.http_listen.port(), 8080);
    assert_eq!(
        c.grpc_listen,
        "127.0.0.1:50051".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.udp_listen.port(), 8189);
    assert_eq!(c.tcp_listen.map(|a| a.port()), Some(8189));
    assert_eq!(c.max_publishers, 256);
    assert_eq!(c.media_timeout, Duration::from_secs(10));
    assert_eq!(c.cors_origins, ["*"]);
    c.validate().unwrap();
}

#[test]
fn flags_win_over_the_file_which_wins_over_defaults() {
    let path = temp_file(
        "layers",
        "max_publishers = 3\nhttp_listen = \"127.0.0.1:9000\"\nmedia_timeout_secs = 2.5\n\
         answer_timeout_secs = 4\n",
    );
    let c = Config::load([
        "whipgate",
        "--config",
        path.to_str().unwrap(),
        "--max-publishers",
        "7",
        "--answer-timeout-secs",
        "3",
    ])
    .unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(c.max_publishers, 7, "flag over file");
    assert_eq!(c.answer_timeout, Duration::from_secs(3), "flag over file");
    assert_eq!(
        c.http_listen,
        "127.0.0.1:9000".parse::<SocketAddr>().unwrap(),
        "file"
    );
    assert_eq!(c.media_timeout, Duration::from_millis(2500), "file");
    assert_eq!(c.connect_timeout, Duration::from_secs(30), "default");
}

#[test]
fn every_setting_has_a_file_key_named_like_its_flag() {
    let c = Config::default();
    let toml::Value::Table(table) = toml::Value::try_from(&c).unwrap() else {
        panic!("not a table");
    };
    let command = Config::command();
    for key in table.keys() {
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == key.as_str())
            .unwrap_or_else(|| panic!("file key {key} has no flag"));
        let long = arg.get_long().unwrap();
        // The one plural: `--ice-server` is repeated, the file has a list `ice_servers`.
        let expected = if long == "ice-server" {
            "ice_servers".to_owned()
        } else {
            long.replace('-', "_")
        };
        assert_eq!(expected, *key, "flag --{long} vs key {key}");
        assert!(
            arg.get_env().is_some(),
            "--{long} has no environment variable"
        );
    }
}

#[test]
fn ice_servers_become_link_headers() {
    let turn = IceServer {
        url: "turn:turn.example.net?transport=udp".into(),
        username: Some("user".into()),
        credential: Some("pa\"ss".into()),
    };
    assert_eq!(
        turn.link_header(),
        "<turn:turn.example.net?transport=udp>; rel=\"ice-server\"; username=\"user\"; \
         credential=\"pa\\\"ss\"; credential-type=\"password\""
    );
    let path = temp_file(
        "ice",
        "[[ice_servers]]\nurl = \"stun:stun.example.net\"\n\
         [[ice_servers]]\nurl = \"turn:t.example.net\"\nusername = \"u\"\ncredential = \"c\"\n",
    );
    let c = Config::load(["whipgate", "--config", path.to_str().unwrap()]).unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(
        c.ice_servers[0].link_header(),
        "<stun:stun.example.net>; rel=\"ice-server\""
    );
    assert_eq!(c.ice_servers[1].username.as_deref(), Some("u"));
    let flags =
        Config::load(["whipgate", "--ice-server", "stun:a.example,stun:b.example"]).unwrap();
    assert_eq!(flags.ice_servers.len(), 2);
    let bad = Config {
        ice_servers: vec![IceServer::from_str("turn:x").unwrap()],
        ..Config::default()
    };
    assert!(bad.validate().is_err(), "TURN without credentials");
}

#[test]
fn unknown_file_keys_are_rejected() {
    let path = temp_file("unknown", "max_publisher = 3\n");
    let err = Config::load(["whipgate", "--config", path.to_str().unwrap()]).unwrap_err();
    std::fs::remove_file(&path).ok();
    assert!(err.to_string().contains("max_publisher"), "{err}");
}

#[test]
fn zero_durations_are_rejected() {
    assert!(Config::load(["whipgate", "--media-timeout-secs", "0"]).is_err());
    assert!(Config::load(["whipgate", "--media-timeout-secs", "-1"]).is_err());
}

#[test]
fn ice_tcp_off_clears_the_tcp_listener() {
    let c = Config::load(["whipgate", "--ice-tcp", "false"]).unwrap();
    assert_eq!(c.tcp_listen, None);
}

#[test]
fn an_open_control_plane_refuses_to_start() {
    let err = Config::load(["whipgate", "--grpc-listen", "0.0.0.0:50051"]).unwrap_err();
    assert!(err.to_string().contains("--api-key"), "{err}");
    Config::load([
        "whipgate",
        "--grpc-listen",
        "0.0.0.0:50051",
        "--insecure-control",
    ])
    .unwrap();
    Config::load(["whipgate", "--grpc-listen", "[::]:50051", "--api-key", "k"]).unwrap();
    Config::load(["whipgate", "--grpc-listen", "[::1]:50051"]).unwrap();
}

#[test]
fn the_api_key_comes_from_a_file() {
    let path = temp_file("key", "  s3cret\n");
    let c = Config::load([
        "whipgate",
        "--grpc-listen",
        "0.0.0.0:1",
        "--api-key-file",
        path.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(c.api_key.as_deref(), Some("s3cret"));
    let both = Config::load([
        "whipgate",
        "--api-key",
        "x",
        "--api-key-file",
        path.to_str().unwrap(),
    ]);
    std::fs::remove_file(&path).ok();
    assert!(both.is_err());
    let missing = Config::load(["whipgate", "--api-key-file", "/nonexistent/whipgate-key"]);
    assert!(missing.unwrap_err().to_string().contains("API key file"));
}

#[test]
fn values_that_would_panic_or_open_the_read_api_are_refused_with_their_name() {
    let refused = |args: &[&str]| {
        let mut all = vec!["whipgate"];
        all.extend_from_slice(args);
        Config::load(all).expect_err("refused")
    };
    let err = refused(&["--rate-limit-per-sec", "1e-20"]);
    assert!(err.to_string().contains("rate_limit_per_sec"), "{err}");
    for flag in [
        "--media-timeout-secs",
        "--http-request-timeout-secs",
        "--drain-secs",
    ] {
        let err = refused(&[flag, "1e30"]);
        assert!(
            err.to_string().contains("invalid duration"),
            "{flag}: {err}"
        );
    }
    let err = refused(&["--api-cors-origins", "*"]);
    assert!(err.to_string().contains("api_cors_origins"), "{err}");
    let err = refused(&["--api-cors-origins", "ops.example.com"]);
    assert!(err.to_string().contains("not an origin"), "{err}");
    let ok = Config::load(["whipgate", "--api-cors-origins", "https://ops.example.com"]).unwrap();
    assert_eq!(ok.api_cors_origins, ["https://ops.example.com"]);
    let c = Config::default();
    assert!(c.api_cors_origins.is_empty(), "same-origin by default");
    assert!(!c.public_dashboard);
    assert_eq!(c.http_max_connections_per_client, 64);
    assert_eq!(c.grpc_max_connections, 256);
    assert_eq!(c.grpc_max_connections_per_client, 32);
}
