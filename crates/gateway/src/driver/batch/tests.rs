use super::*;

async fn sockets(v6: bool) -> ForwardSockets {
    let bind = |a: &str| {
        let a: SocketAddr = a.parse().expect("address");
        async move { tokio::net::UdpSocket::bind(a).await }
    };
    let v6 = if v6 { bind("[::1]:0").await.ok() } else { None };
    ForwardSockets::new(bind("127.0.0.1:0").await.expect("v4"), v6)
}

#[tokio::test]
async fn queued_packets_arrive_in_order_and_a_full_batch_sends_itself() {
    let metrics = Metrics::new(false).expect("metrics");
    let mut batch = ForwardBatch::new(sockets(false).await, &metrics);
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").expect("sink");
    let to = sink.local_addr().expect("addr");
    for i in 0..MAX_PACKETS + 3 {
        let queued = batch.push(to, MediaKind::Video, 1500, |buf| {
            buf[..4].copy_from_slice(&(i as u32).to_be_bytes());
            Some(4)
        });
        assert_eq!(queued, Some(4));
    }
    // The 65th push sent the first 64 already; three wait for the flush.
    assert_eq!(batch.queued.len(), 3);
    batch.flush();
    let mut buf = [0u8; 16];
    for i in 0..MAX_PACKETS + 3 {
        let n = sink.recv(&mut buf).expect("datagram");
        assert_eq!(&buf[..n], &(i as u32).to_be_bytes());
    }
    assert_eq!(batch.queued.len(), 0);
    assert_eq!(metrics.kind(MediaKind::Video).forward_errors.get(), 0);
}

#[tokio::test]
async fn a_packet_that_cannot_be_sent_is_counted_and_the_others_still_go() {
    let metrics = Metrics::new(false).expect("metrics");
    let mut batch = ForwardBatch::new(sockets(false).await, &metrics);
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").expect("sink");
    let to = sink.local_addr().expect("addr");
    let v6: SocketAddr = "[::1]:9".parse().expect("v6");
    // No IPv6 socket: the audio packet for an IPv6 target fails; a failed write queues
    // nothing; the video packet goes.
    batch.push(v6, MediaKind::Audio, 100, |_| Some(10));
    assert_eq!(batch.push(to, MediaKind::Video, 100, |_| None), None);
    batch.push(to, MediaKind::Video, 100, |buf| {
        buf[..2].copy_from_slice(b"ok");
        Some(2)
    });
    batch.flush();
    let mut buf = [0u8; 16];
    let n = sink.recv(&mut buf).expect("datagram");
    assert_eq!(&buf[..n], b"ok");
    assert_eq!(metrics.kind(MediaKind::Audio).forward_errors.get(), 1);
    assert_eq!(metrics.kind(MediaKind::Video).forward_errors.get(), 0);
}

#[tokio::test]
async fn runs_of_a_frame_go_as_one_gso_send_and_arrive_as_separate_datagrams_in_order() {
    let metrics = Metrics::new(false).expect("metrics");
    let sockets = sockets(false).await;
    #[cfg(target_os = "linux")]
    assert!(sockets.gso4.is_some(), "loopback offers UDP GSO on Linux");
    let mut batch = ForwardBatch::new(sockets, &metrics);
    let (a, b) = (
        std::net::UdpSocket::bind("127.0.0.1:0").expect("a"),
        std::net::UdpSocket::bind("127.0.0.1:0").expect("b"),
    );
    let to_a = a.local_addr().expect("a");
    let to_b = b.local_addr().expect("b");
    // A: a single, a frame of 3 x 100 + 40 bytes (one run), then one for B, then A again.
    let plan: [(SocketAddr, u8, usize); 7] = [
        (to_a, 0, 60),
        (to_a, 1, 100),
        (to_a, 2, 100),
        (to_a, 3, 100),
        (to_a, 4, 40),
        (to_b, 5, 100),
        (to_a, 6, 100),
    ];
    for (to, tag, len) in plan {
        batch.push(to, MediaKind::Video, len, |buf| {
            buf[..len].fill(tag);
            Some(len)
        });
    }
    batch.flush();
    let mut buf = [0u8; 200];
    for (to, tag, len) in plan {
        let socket = if to == to_a { &a } else { &b };
        let n = socket.recv(&mut buf).expect("datagram");
        assert_eq!((n, buf[0], buf[n - 1]), (len, tag, tag), "packet {tag}");
    }
    assert_eq!(metrics.kind(MediaKind::Video).forward_errors.get(), 0);
}

#[test]
fn a_gso_run_needs_one_target_adjacent_bytes_and_equal_sizes_but_the_last() {
    let to: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
    let other: SocketAddr = "127.0.0.1:5002".parse().expect("addr");
    let q = |to, start, len| Queued {
        to,
        start,
        len,
        video: true,
    };
    let run = |packets: &[Queued], max| {
        let refs: Vec<&Queued> = packets.iter().collect();
        gso_run(&refs, max)
    };
    let frame = [q(to, 0, 10), q(to, 10, 10), q(to, 20, 4), q(to, 24, 4)];
    assert_eq!(run(&frame, 64), 3, "ends after the short last one");
    assert_eq!(run(&frame, 2), 2, "bounded by the kernel's segment limit");
    assert_eq!(run(&[q(to, 0, 10), q(other, 10, 10)], 64), 1);
    assert_eq!(run(&[q(to, 0, 10), q(to, 30, 10)], 64), 1, "not adjacent");
    assert_eq!(run(&[q(to, 0, 10), q(to, 10, 12)], 64), 1, "larger");
    assert_eq!(run(&[], 64), 0);
}
