use super::*;

#[tokio::test(start_paused = true)]
async fn idle_waits_for_open_requests_and_the_timeout() {
    let activity = Activity::new();
    let timeout = Duration::from_secs(10);
    let open = Open::start(Arc::clone(&activity));
    // Open for longer than the timeout: not idle.
    let idle = tokio::time::timeout(Duration::from_secs(30), activity.idle(timeout));
    assert!(idle.await.is_err());
    drop(open);
    let ended = Instant::now();
    activity.idle(timeout).await;
    assert!(ended.elapsed() >= timeout);
}
