use super::*;

#[test]
fn calls_round_trip_and_unknown_fields_are_refused() {
    let call = RoutedCall::SelectLayer {
        ingest: "cam".into(),
        rid: Some("h".into()),
    };
    let raw = serde_json::to_string(&call).expect("json");
    assert_eq!(serde_json::from_str::<RoutedCall>(&raw).ok(), Some(call));
    assert!(serde_json::from_str::<RoutedCall>(r#"{"op":"keyframe","ingest":"a","x":1}"#).is_err());
    assert!(serde_json::from_str::<RoutedCall>(r#"{"op":"reboot"}"#).is_err());
}

#[test]
fn bad_calls_are_answered_invalid_not_executed() {
    let registry = Registry::new(
        crate::registry::Caps { max_publishers: 1 },
        16,
        std::sync::Arc::new(crate::metrics::Metrics::new(false).expect("metrics")),
    );
    for call in [
        RoutedCall::Keyframe {
            ingest: "bad id".into(),
        },
        RoutedCall::Teardown {
            ingest: "cam".into(),
            detail: "x".repeat(MAX_DETAIL + 1),
        },
        RoutedCall::SelectLayer {
            ingest: "cam".into(),
            rid: Some("a b".into()),
        },
    ] {
        assert!(
            matches!(execute(&registry, call), Answer::Invalid { .. }),
            "refused"
        );
    }
    assert_eq!(
        execute(
            &registry,
            RoutedCall::Keyframe {
                ingest: "cam".into()
            }
        ),
        Answer::IngestNotFound
    );
}
