use super::*;

#[tokio::test]
async fn runs_in_arrival_order_and_refuses_when_full_or_closed() {
    let tracker = TaskTracker::new();
    let pool = Negotiators::start(1, 2, &tracker);
    // Hold the one thread so that the queue fills behind it.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let first = pool
        .submit(move || {
            let _ = held.recv();
            0
        })
        .unwrap();
    // The thread may not have taken the first job yet: fill until refused.
    let mut queued = Vec::new();
    let busy = loop {
        match pool.submit({
            let n = queued.len() + 1;
            move || n
        }) {
            Ok(rx) => queued.push(rx),
            Err(refused) => break refused,
        }
        assert!(queued.len() <= 3, "a queue of 2 took more");
    };
    assert_eq!(busy, Refused::Busy);
    release.send(()).unwrap();
    assert_eq!(first.await.unwrap(), 0);
    for (i, rx) in queued.into_iter().enumerate() {
        assert_eq!(rx.await.unwrap(), i + 1);
    }
    // A panicking job loses its answer, not the thread.
    let panicked = pool.submit(|| -> usize { panic!("boom") }).unwrap();
    assert!(panicked.await.is_err());
    assert_eq!(pool.submit(|| 7).unwrap().await.unwrap(), 7);
    pool.close();
    assert_eq!(pool.submit(|| 8).err(), Some(Refused::Closed));
    tracker.close();
    tokio::time::timeout(std::time::Duration::from_secs(10), tracker.wait())
        .await
        .expect("the threads end once closed");
}
