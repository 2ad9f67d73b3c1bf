#[test]
fn reads_unlabelled_gauges() {
    let text = "# HELP whipgate_tasks Tasks\nwhipgate_tasks 12\nwhipgate_live_publishers 0\n";
    assert_eq!(super::gauge(text, "whipgate_tasks"), Some(12));
    assert_eq!(super::gauge(text, "whipgate_live_publishers"), Some(0));
    assert_eq!(super::gauge(text, "whipgate_nope"), None);
}
