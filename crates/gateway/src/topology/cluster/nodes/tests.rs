use super::*;

fn node(id: &str, live: u64, cap: u64, draining: bool) -> NodeRecord {
    NodeRecord {
        id: id.into(),
        advertise_url: format!("http://{id}"),
        live_publishers: live,
        capacity: cap,
        draining,
        last_heartbeat_ms: 0,
    }
}

#[test]
fn least_loaded_skips_full_draining_and_self() {
    let nodes = [
        node("a", 0, 10, false),
        node("b", 5, 5, false),
        node("c", 1, 10, true),
        node("d", 3, 10, false),
        node("e", 1, 2, false),
    ];
    assert_eq!(least_loaded(&nodes, "a").map(|n| n.id.as_str()), Some("d"));
    assert_eq!(least_loaded(&nodes, "x").map(|n| n.id.as_str()), Some("a"));
    assert_eq!(least_loaded(&nodes[1..3], "x"), None);
}

#[test]
fn ties_go_to_the_smaller_id() {
    let nodes = [node("b", 1, 4, false), node("a", 2, 8, false)];
    assert_eq!(least_loaded(&nodes, "").map(|n| n.id.as_str()), Some("a"));
}
