use super::*;

fn log(capacity: usize) -> EventLog {
    EventLog::new(
        capacity,
        EventClock {
            epoch: 1,
            first_seq: 1,
            reserved_to: u64::MAX,
        },
    )
}

fn emit_n(log: &mut EventLog, n: usize) {
    for _ in 0..n {
        log.emit("a", None, EventPayload::IngestUnregistered);
    }
}

#[test]
fn sequence_numbers_start_at_one_without_gaps() {
    let mut log = log(8);
    let mut sub = log.subscribe(0).unwrap();
    emit_n(&mut log, 3);
    let seqs: Vec<u64> = (0..3).map(|_| sub.live.try_recv().unwrap().seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
}

#[test]
fn resume_replays_the_history_from_the_requested_seq() {
    let mut log = log(8);
    emit_n(&mut log, 5);
    let sub = log.subscribe(3).unwrap();
    let seqs: Vec<u64> = sub.replay.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [3, 4, 5]);
}

#[test]
fn resume_older_than_history_is_refused() {
    let mut log = log(4);
    emit_n(&mut log, 10);
    assert_eq!(
        log.subscribe(2).err(),
        Some(SubscribeError::Gone { oldest: 7 })
    );
    assert_eq!(
        log.subscribe(12).err(),
        Some(SubscribeError::Future { newest: 10 })
    );
    assert!(
        log.subscribe(11).is_ok(),
        "the next seq is a valid resume point"
    );
    assert_eq!(log.subscribe(7).unwrap().replay.len(), 4);
}

#[test]
fn a_reservation_is_asked_for_once_when_sequence_numbers_run_low() {
    let mut log = EventLog::new(
        8,
        EventClock {
            epoch: 3,
            first_seq: 1001,
            reserved_to: 1000 + SEQ_LOW_WATER + 3,
        },
    );
    let asks: Vec<bool> = (0..4)
        .map(|_| log.emit("a", None, EventPayload::IngestUnregistered).1)
        .collect();
    assert_eq!(asks, [false, false, true, false], "asked once, when low");
    let due = log.reservation_due().expect("due");
    assert_eq!(due, log.next_seq + SEQ_BLOCK_SIZE);
    log.reserved(due);
    assert_eq!(log.reservation_due(), None);
    assert!(!log.emit("a", None, EventPayload::IngestUnregistered).1);
}
