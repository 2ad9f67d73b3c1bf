//! Segmented sends (UDP GSO) for the publishers' `--gso` option: one system call carries a
//! frame's packets, through `quinn-udp` (already the gateway's receive path).

use std::net::{SocketAddr, UdpSocket};

use super::publisher::Tally;

/// Datagrams per GSO send at most (the kernel's limit is 64).
pub(super) const MAX_GSO_SEGMENTS: usize = 32;
/// Bytes per GSO send at most (one UDP send carries less than 64 KiB).
pub(super) const MAX_GSO_BYTES: usize = 60_000;

/// `quinn-udp`'s view of a publisher socket, for segmented sends (None: plain sends).
pub(super) fn gso_state(socket: &UdpSocket) -> Option<quinn_udp::UdpSocketState> {
    quinn_udp::UdpSocketState::new(socket.into())
        .ok()
        .filter(|s| s.max_gso_segments() > 1)
}

/// Sends `count` datagrams of `segment` bytes (the last may be shorter) packed in `contents`.
pub(super) fn send_batch(
    socket: &UdpSocket,
    state: Option<&quinn_udp::UdpSocketState>,
    contents: &[u8],
    segment: usize,
    count: usize,
    to: Option<SocketAddr>,
    tally: &mut Tally,
) {
    let Some(to) = to else {
        return;
    };
    let sent = match state {
        Some(state) => {
            let transmit = quinn_udp::Transmit {
                destination: to,
                ecn: None,
                contents,
                segment_size: (count > 1).then_some(segment),
                src_ip: None,
            };
            state.try_send(socket.into(), &transmit).is_ok()
        }
        None => socket.send_to(contents, to).is_ok(),
    };
    if !sent {
        tally.send_errors += count as u64;
    }
}
