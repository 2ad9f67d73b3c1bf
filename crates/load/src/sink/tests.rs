use super::*;

fn run(seqs: &[u16]) -> (u64, u64) {
    let mut s = SeqState::new(seqs[0]);
    for &q in &seqs[1..] {
        s.update(q);
    }
    (s.expected(), s.received())
}

#[test]
fn extended_sequence_numbers_count_loss_across_wraps() {
    assert_eq!(run(&[65534, 65535, 0, 1]), (4, 4));
    assert_eq!(run(&[65534, 0, 1]), (4, 3));
    // Reordered: nothing lost.
    assert_eq!(run(&[10, 12, 11, 13]), (4, 4));
    // A restart of the numbering: two packets in sequence resynchronise.
    let (expected, received) = run(&[100, 101, 40000, 40001, 40002]);
    assert_eq!(expected - received, 0, "{expected} {received}");
}
