//! The built-in UDP sink: stands where FFmpeg would, on the forwarding targets. It counts
//! packets and loss per SSRC (RFC 3550 appendix A.1 extended sequence numbers), forwarding
//! latency (from the stamp the generator put at the end of each payload) and keyframes.
//! One blocking thread per socket: the cheapest receive loop, timestamped as it reads.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::VideoCodec;
use super::payload::{read_stamp, starts_keyframe};
use super::stats::{Histogram, Quantiles, udp_socket_drops};

const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;

/// RFC 3550 A.1 sequence state of one SSRC.
#[derive(Clone, Debug, Default)]
struct SeqState {
    base: u32,
    max: u16,
    cycles: u32,
    received: u64,
    bad_seq: Option<u16>,
    /// Expected and received of earlier runs (before a resynchronisation).
    folded_expected: u64,
    folded_received: u64,
}

impl SeqState {
    fn new(seq: u16) -> Self {
        SeqState {
            base: u32::from(seq),
            max: seq,
            received: 1,
            ..Default::default()
        }
    }

    fn expected(&self) -> u64 {
        u64::from(self.cycles) + u64::from(self.max) + 1 - u64::from(self.base)
            + self.folded_expected
    }

    fn received(&self) -> u64 {
        self.received + self.folded_received
    }

    fn update(&mut self, seq: u16) {
        let delta = seq.wrapping_sub(self.max);
        if delta < MAX_DROPOUT {
            if seq < self.max {
                self.cycles += 1 << 16;
            }
            self.max = seq;
        } else if delta <= u16::MAX - MAX_MISORDER {
            // A big jump: two in sequence mean the source restarted its numbering.
            if self.bad_seq == Some(seq) {
                let expected = self.expected();
                let received = self.received();
                *self = SeqState::new(seq);
                self.folded_expected = expected;
                self.folded_received = received;
                return;
            }
            self.bad_seq = Some(seq.wrapping_add(1));
            return;
        }
        // Else: duplicate or reordered, counted as received.
        self.received += 1;
    }
}

#[derive(Default)]
struct Totals {
    ssrcs: HashMap<u32, SeqState>,
    packets: u64,
    bytes: u64,
    keyframes: u64,
    unstamped: u64,
    latency: Histogram,
}

/// What the sink saw, for one media kind or both.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SinkReport {
    pub packets: u64,
    pub bytes: u64,
    pub ssrcs: usize,
    /// RFC 3550 cumulative loss summed over SSRCs (expected - received).
    pub lost: i64,
    pub loss_percent: f64,
    pub keyframes: u64,
    /// Packets without the generator's stamp (not from whipgate-load).
    pub unstamped: u64,
    /// Forwarding latency: sink receive time - generator send time.
    pub latency: Quantiles,
    /// Datagrams the kernel dropped at the sink's own sockets.
    pub kernel_drops: u64,
}

struct Port {
    /// The receiving thread's id, so its CPU can be told apart from the generator's.
    tid: Arc<AtomicU64>,
    socket: Arc<UdpSocket>,
    totals: Arc<Mutex<Totals>>,
    thread: Option<JoinHandle<()>>,
}

/// A running sink: one video and one audio port.
pub struct Sink {
    video: Port,
    audio: Port,
    stop: Arc<AtomicBool>,
}

impl Sink {
    /// Binds the two ports on `ip` (`ports`: video and audio, else ephemeral) and starts
    /// receiving.
    pub fn bind(
        ip: std::net::IpAddr,
        codec: VideoCodec,
        ports: Option<&[u16]>,
    ) -> std::io::Result<Sink> {
        let stop = Arc::new(AtomicBool::new(false));
        let port = |i: usize| ports.and_then(|p| p.get(i).copied()).unwrap_or(0);
        Ok(Sink {
            video: Port::start(SocketAddr::new(ip, port(0)), Some(codec), Arc::clone(&stop))?,
            audio: Port::start(SocketAddr::new(ip, port(1)), None, Arc::clone(&stop))?,
            stop,
        })
    }

    /// Where video RTP should go.
    pub fn video_addr(&self) -> SocketAddr {
        self.video.addr()
    }

    /// Where audio RTP should go.
    pub fn audio_addr(&self) -> SocketAddr {
        self.audio.addr()
    }

    /// Totals so far, video and audio together.
    pub fn report(&self) -> SinkReport {
        let mut all = Totals::default();
        let mut drops = 0;
        for port in [&self.video, &self.audio] {
            drops += udp_socket_drops(port.addr());
            let t = port.totals.lock().unwrap_or_else(|e| e.into_inner());
            all.packets += t.packets;
            all.bytes += t.bytes;
            all.keyframes += t.keyframes;
            all.unstamped += t.unstamped;
            all.latency.merge(&t.latency);
            all.ssrcs
                .extend(t.ssrcs.iter().map(|(k, v)| (*k ^ port.salt(), v.clone())));
        }
        let expected: u64 = all.ssrcs.values().map(SeqState::expected).sum();
        let received: u64 = all.ssrcs.values().map(SeqState::received).sum();
        let lost = expected as i64 - received as i64;
        SinkReport {
            packets: all.packets,
            bytes: all.bytes,
            ssrcs: all.ssrcs.len(),
            lost,
            loss_percent: if expected == 0 {
                0.0
            } else {
                (lost.max(0) as f64 * 100.0 / expected as f64 * 1000.0).round() / 1000.0
            },
            keyframes: all.keyframes,
            unstamped: all.unstamped,
            latency: Quantiles::from(&all.latency),
            kernel_drops: drops,
        }
    }

    /// CPU seconds the sink's threads used so far.
    pub fn cpu_seconds(&self) -> f64 {
        [&self.video, &self.audio]
            .iter()
            .filter_map(|p| thread_cpu_seconds(p.tid.load(Ordering::Relaxed)))
            .sum()
    }

    /// Forgets everything counted so far (e.g. after a warm-up).
    pub fn reset(&self) {
        for port in [&self.video, &self.audio] {
            *port.totals.lock().unwrap_or_else(|e| e.into_inner()) = Totals::default();
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for port in [&mut self.video, &mut self.audio] {
            if let Some(t) = port.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Port {
    fn start(
        addr: SocketAddr,
        video: Option<VideoCodec>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<Port> {
        let socket = super::udp_socket(addr, 16 << 20)?;
        socket.set_nonblocking(false)?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let socket = Arc::new(socket);
        let totals = Arc::new(Mutex::new(Totals::default()));
        let (s, t) = (Arc::clone(&socket), Arc::clone(&totals));
        let tid = Arc::new(AtomicU64::new(0));
        let my_tid = Arc::clone(&tid);
        let thread = std::thread::Builder::new()
            .name("whipgate-load-sink".into())
            .spawn(move || {
                my_tid.store(thread_id(), Ordering::Relaxed);
                receive(&s, &t, video, &stop)
            })?;
        Ok(Port {
            tid,
            socket,
            totals,
            thread: Some(thread),
        })
    }

    fn addr(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Keeps a video and an audio SSRC that happen to be equal apart when merging.
    fn salt(&self) -> u32 {
        u32::from(self.addr().port())
    }
}

/// This thread's kernel id (from /proc/thread-self -> "PID/task/TID").
fn thread_id() -> u64 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok())
        .unwrap_or(0)
}

fn thread_cpu_seconds(tid: u64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    super::stats::cpu_seconds_of_stat(&stat)
}

fn receive(
    socket: &UdpSocket,
    totals: &Mutex<Totals>,
    video: Option<VideoCodec>,
    stop: &AtomicBool,
) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => break,
        };
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let Some(rtp) = RtpView::parse(&buf[..n]) else {
            continue;
        };
        let mut t = totals.lock().unwrap_or_else(|e| e.into_inner());
        t.packets += 1;
        t.bytes += n as u64;
        t.ssrcs
            .entry(rtp.ssrc)
            .and_modify(|s| s.update(rtp.seq))
            .or_insert_with(|| SeqState::new(rtp.seq));
        match read_stamp(rtp.payload) {
            Some(stamp) => t.latency.record(now_us.saturating_sub(stamp.sent_us)),
            None => t.unstamped += 1,
        }
        if video.is_some_and(|codec| starts_keyframe(codec, rtp.payload)) {
            t.keyframes += 1;
        }
    }
}

/// The fields of an RTP packet the sink reads.
struct RtpView<'a> {
    seq: u16,
    ssrc: u32,
    payload: &'a [u8],
}

impl<'a> RtpView<'a> {
    fn parse(b: &'a [u8]) -> Option<Self> {
        if b.len() < 12 || b[0] >> 6 != 2 {
            return None;
        }
        let mut offset = 12 + 4 * usize::from(b[0] & 0x0f);
        if b[0] & 0x10 != 0 {
            let ext = b.get(offset + 2..offset + 4)?;
            offset += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
        }
        let mut end = b.len();
        if b[0] & 0x20 != 0 {
            end = end.checked_sub(usize::from(*b.last()?))?;
        }
        Some(RtpView {
            seq: u16::from_be_bytes([b[2], b[3]]),
            ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            payload: b.get(offset..end)?,
        })
    }
}

#[cfg(test)]
mod tests;
