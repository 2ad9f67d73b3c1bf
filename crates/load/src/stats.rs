//! Measurement helpers of the load tool: a small log-linear latency histogram (constant memory
//! whatever the packet count, ~1.6 % resolution) and readers of `/proc` for CPU time, memory,
//! file descriptors, threads and the kernel's UDP drop counters.

use std::net::SocketAddr;

use serde::Serialize;

/// Sub-buckets per power of two: relative resolution 1/64.
const SUB: u64 = 64;

/// A histogram of microsecond values.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; (SUB * 40) as usize],
            total: 0,
            sum: 0,
            max: 0,
        }
    }
}

fn bucket(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    // v in [2^exp, 2^(exp+1)), split into 64 sub-buckets of width 2^(exp-6).
    let exp = 63 - u64::from(v.leading_zeros());
    let sub = (v >> (exp - 6)) - SUB;
    ((exp - 5) * SUB + sub) as usize
}

fn bucket_low(b: usize) -> u64 {
    let b = b as u64;
    if b < SUB {
        return b;
    }
    let exp = b / SUB + 5;
    let sub = b % SUB;
    (SUB + sub) << (exp - 6)
}

impl Histogram {
    /// Records one value.
    pub fn record(&mut self, v: u64) {
        let b = bucket(v).min(self.counts.len() - 1);
        self.counts[b] += 1;
        self.total += 1;
        self.sum = self.sum.saturating_add(v);
        self.max = self.max.max(v);
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.sum = self.sum.saturating_add(other.sum);
        self.max = self.max.max(other.max);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1), as the lower bound of its bucket; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_low(b).min(self.max);
            }
        }
        self.max
    }

    /// The mean; 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The largest value recorded.
    pub fn max(&self) -> u64 {
        self.max
    }
}

/// p50 / p99 / max of a histogram, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Quantiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl From<&Histogram> for Quantiles {
    fn from(h: &Histogram) -> Self {
        let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
        Quantiles {
            p50_ms: ms(h.quantile(0.50)),
            p99_ms: ms(h.quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

/// What `/proc/<pid>` says about a process.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ProcSample {
    /// utime + stime, seconds.
    pub cpu_s: f64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// Threads.
    pub threads: u64,
}

/// Samples a process (`None` when it is gone or `/proc` is unreadable).
pub fn proc_sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields = stat_fields(&stat)?;
    let threads = fields.get(17)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    Some(ProcSample {
        cpu_s: cpu_seconds_of_stat(&stat)?,
        rss_kib,
        fds,
        threads,
    })
}

/// The fields of a /proc stat line after the parenthesised command name (which may contain
/// spaces): field 3 of the full line is index 0.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(
        stat.get(stat.rfind(')')? + 2..)?
            .split_whitespace()
            .collect(),
    )
}

/// utime + stime (fields 14 and 15) of a /proc/<pid>/stat or task stat line, in seconds.
pub fn cpu_seconds_of_stat(stat: &str) -> Option<f64> {
    let fields = stat_fields(stat)?;
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clock_ticks_per_second())
}

/// USER_HZ: 100 on every Linux architecture we run on (the kernel's ABI for /proc times).
fn clock_ticks_per_second() -> f64 {
    100.0
}

/// `Udp: RcvbufErrors` from /proc/net/snmp: datagrams the kernel dropped for full receive
/// buffers, machine-wide.
pub fn udp_rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = udp.next()?.split_whitespace().collect();
    let values: Vec<&str> = udp.next()?.split_whitespace().collect();
    let i = names.iter().position(|n| *n == "RcvbufErrors")?;
    values.get(i)?.parse().ok()
}

/// The drops column of /proc/net/udp (and udp6) for sockets bound to `addr`'s port.
pub fn udp_socket_drops(addr: SocketAddr) -> u64 {
    let port = format!(":{:04X}", addr.port());
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| {
            t.lines()
                .skip(1)
                .filter_map(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    cols.get(1)
                        .filter(|local| local.ends_with(&port))
                        .and_then(|_| cols.last()?.parse::<u64>().ok())
                })
                .collect::<Vec<_>>()
        })
        .sum()
}

#[cfg(test)]
mod tests;
