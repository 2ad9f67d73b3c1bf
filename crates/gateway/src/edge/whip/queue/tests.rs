use super::*;

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

fn queue(slots: usize, max_waiting: usize, per_client: usize) -> NegotiationQueue {
    NegotiationQueue::new(slots, Duration::from_secs(3), max_waiting, per_client)
}

#[tokio::test(start_paused = true)]
async fn a_burst_waits_for_slots_instead_of_being_refused() {
    let q = queue(2, 100, 100);
    let a = q.acquire(ip(1)).await.expect("free slot");
    let b = q.acquire(ip(1)).await.expect("free slot");
    let waiting = tokio::spawn({
        let q = q.clone();
        async move { q.acquire(ip(1)).await.map(|_| ()) }
    });
    tokio::task::yield_now().await;
    assert_eq!(q.waiting(), 1);
    drop(a);
    assert_eq!(waiting.await.expect("task"), Ok(()));
    drop(b);
    assert_eq!(q.waiting(), 0);
    let _c = q.acquire(ip(2)).await.expect("both slots are free again");
    let _d = q.acquire(ip(2)).await.expect("both slots are free again");
}

#[tokio::test(start_paused = true)]
async fn freed_slots_go_round_robin_by_client() {
    let q = queue(1, 100, 100);
    let held = q.acquire(ip(1)).await.expect("free slot");
    let (order_tx, mut order) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    // A busy client queues five, then another client one.
    for (n, client) in [(0, 1), (1, 1), (2, 1), (3, 1), (4, 1), (5, 2)] {
        let (q, order_tx) = (q.clone(), order_tx.clone());
        tasks.push(tokio::spawn(async move {
            let slot = q.acquire(ip(client)).await.expect("a slot");
            order_tx.send(n).expect("order");
            tokio::task::yield_now().await;
            drop(slot);
        }));
        tokio::task::yield_now().await;
    }
    assert_eq!(q.waiting(), 6);
    drop(held);
    for task in tasks {
        task.await.expect("task");
    }
    let mut served = Vec::new();
    while let Ok(n) = order.try_recv() {
        served.push(n);
    }
    assert_eq!(
        served,
        vec![0, 5, 1, 2, 3, 4],
        "the other client is served second, not sixth"
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_or_a_wait_over_is_refused_and_loses_no_slot() {
    let q = queue(1, 2, 1);
    let held = q.acquire(ip(1)).await.expect("free slot");
    let first = tokio::spawn({
        let q = q.clone();
        async move { q.acquire(ip(1)).await.map(|_| ()) }
    });
    tokio::task::yield_now().await;
    assert_eq!(
        q.acquire(ip(1)).await.err(),
        Some(Refused::QueueFull),
        "one waiter per client"
    );
    let second = tokio::spawn({
        let q = q.clone();
        async move { q.acquire(ip(2)).await.map(|_| ()) }
    });
    tokio::task::yield_now().await;
    assert_eq!(q.acquire(ip(3)).await.err(), Some(Refused::QueueFull));
    // Nobody frees the slot: both waits end.
    assert_eq!(first.await.expect("task"), Err(Refused::WaitOver));
    assert_eq!(second.await.expect("task"), Err(Refused::WaitOver));
    assert_eq!(q.waiting(), 0);
    drop(held);
    let _again = q.acquire(ip(4)).await.expect("the slot came back");
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_goes_away_withdraws_or_passes_its_slot_on() {
    let q = queue(1, 10, 10);
    let held = q.acquire(ip(1)).await.expect("free slot");
    let gone = tokio::spawn({
        let q = q.clone();
        async move { q.acquire(ip(2)).await.map(|_| ()) }
    });
    tokio::task::yield_now().await;
    gone.abort();
    let _ = gone.await;
    assert_eq!(q.waiting(), 0, "withdrawn");
    drop(held);
    let slot = q.acquire(ip(3)).await.expect("the slot is free");
    // Granted but never taken: the place passes the slot on when dropped.
    let (tx, rx) = oneshot::channel();
    {
        let mut slots = lock(&q.shared);
        slots.waiting.entry(ip(4)).or_default().push_back(Waiter {
            ticket: 99,
            grant: tx,
        });
        slots.count += 1;
    }
    drop(slot);
    drop(Place {
        shared: Arc::clone(&q.shared),
        client: ip(4),
        ticket: 99,
        granted: Some(rx),
    });
    let _free = q.acquire(ip(5)).await.expect("passed on, not lost");
}
