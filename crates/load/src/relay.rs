//! A bare UDP relay: receive a datagram, send it on, nothing else (one blocking thread per
//! direction). The benchmark measures it in the same run as whipgate, as the floor of what
//! forwarding a packet costs on this machine.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A running relay: video and audio ports, each forwarding to its target.
pub struct Relay {
    addrs: [SocketAddr; 2],
    stop: Arc<AtomicBool>,
    forwarded: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Binds two ports on `ip` forwarding to `video_to` and `audio_to`.
    pub fn start(ip: IpAddr, video_to: SocketAddr, audio_to: SocketAddr) -> std::io::Result<Relay> {
        let stop = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(AtomicU64::new(0));
        let mut addrs = [SocketAddr::new(ip, 0); 2];
        let mut threads = Vec::new();
        for (i, to) in [video_to, audio_to].into_iter().enumerate() {
            let socket = super::udp_socket(SocketAddr::new(ip, 0), 16 << 20)?;
            socket.set_nonblocking(false)?;
            socket.set_read_timeout(Some(Duration::from_millis(100)))?;
            addrs[i] = socket.local_addr()?;
            let (stop, forwarded) = (Arc::clone(&stop), Arc::clone(&forwarded));
            threads.push(
                std::thread::Builder::new()
                    .name("whipgate-load-relay".into())
                    .spawn(move || relay(&socket, to, &stop, &forwarded))?,
            );
        }
        Ok(Relay {
            addrs,
            stop,
            forwarded,
            threads,
        })
    }

    /// The video and audio input ports.
    pub fn addrs(&self) -> [SocketAddr; 2] {
        self.addrs
    }

    /// Datagrams forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn relay(socket: &UdpSocket, to: SocketAddr, stop: &AtomicBool, forwarded: &AtomicU64) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv(&mut buf) {
            Ok(n) => {
                if socket.send_to(&buf[..n], to).is_ok() {
                    forwarded.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
}
