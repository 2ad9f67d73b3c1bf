//! One event stream for the whole cluster, in a Redis Stream.
//!
//! Appending is one Lua script: `INCR events:seq`, then `XADD events MAXLEN <n> <seq>-0 …`.
//! Scripts run atomically, so sequence numbers are handed out without gaps and every entry's
//! stream id *is* its seq: every reader on every node sees the same events in the same order,
//! and a resume point is just a seq. The stream is trimmed to a fixed length; asking for a seq
//! it no longer holds (or one beyond the newest) is [`ClusterError::OutOfRange`], as on a
//! single node. Live tails use `XREAD BLOCK` on a connection of their own.

use std::time::Duration;

use redis::Script;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};

use super::{ClusterError, Keys, Redis};

/// Most entries one read returns.
pub const READ_BATCH: usize = 256;

/// One event as stored: its seq, the node that wrote it and its encoded payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// Cluster-wide sequence number, from 1, without gaps.
    pub seq: u64,
    /// The node that appended it.
    pub node: String,
    /// The event, encoded by the caller.
    pub data: String,
}

/// Replayed history and where the live tail continues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    /// Events from the requested seq (at most [`READ_BATCH`]; read again from `last_seq + 1`
    /// while `more` is set).
    pub events: Vec<StoredEvent>,
    /// The seq of the last event returned, or the newest seq when none was.
    pub last_seq: u64,
    /// There is more history after `events`.
    pub more: bool,
}

const APPEND: &str = r#"
local seq = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], seq .. '-0', 'node', ARGV[2], 'data', ARGV[3])
return seq
"#;

/// Appends several events in order, in one atomic step; returns the first one's seq.
const APPEND_MANY: &str = r#"
local first = 0
for i = 2, #ARGV, 2 do
  local seq = redis.call('INCR', KEYS[2])
  if first == 0 then first = seq end
  redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], seq .. '-0', 'node', ARGV[i], 'data', ARGV[i + 1])
end
return first
"#;

/// Sets the epoch if there is none, and returns it.
const EPOCH: &str = r#"
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"#;

/// The cluster's event stream.
#[derive(Clone, Debug)]
pub struct EventStream {
    redis: Redis,
    keys: Keys,
    max_len: u64,
    append: Script,
    append_many: Script,
    epoch: Script,
}

impl EventStream {
    /// The stream under `keys`, trimmed to `max_len` entries.
    pub fn new(redis: Redis, keys: Keys, max_len: u64) -> Self {
        EventStream {
            redis,
            keys,
            max_len: max_len.max(1),
            append: Script::new(APPEND),
            append_many: Script::new(APPEND_MANY),
            epoch: Script::new(EPOCH),
        }
    }

    /// The stream's epoch: a random number fixed when the first node used it. It changes only
    /// if Redis lost its data, which also restarts the seqs, so seqs from another epoch are
    /// void.
    pub async fn epoch(&self) -> Result<String, ClusterError> {
        // Below 2^53 (a JSON number browsers read exactly), never 0 ("any epoch").
        let fresh = (uuid::Uuid::new_v4().as_u64_pair().0 >> 11).max(1);
        let mut inv = self.epoch.prepare_invoke();
        inv.key(self.keys.events_epoch()).arg(fresh);
        self.redis.script(&inv).await
    }

    /// [`epoch`](Self::epoch) as the number events carry (`Event.epoch`).
    pub async fn epoch_number(&self) -> Result<u64, ClusterError> {
        let raw = self.epoch().await?;
        raw.parse::<u64>()
            .map_err(|_| ClusterError::Corrupt(format!("event stream epoch {raw:?}")))
    }

    /// Appends events (`(node, data)`, in order) in one round trip; returns the first seq
    /// (0 for none). Atomic: all are appended, with consecutive seqs, or none.
    pub async fn append_batch(&self, events: &[(String, String)]) -> Result<u64, ClusterError> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut inv = self.append_many.prepare_invoke();
        inv.key(self.keys.events())
            .key(self.keys.events_seq())
            .arg(self.max_len);
        for (node, data) in events {
            inv.arg(node).arg(data);
        }
        self.redis.script(&inv).await
    }

    /// Appends one event; returns its seq.
    pub async fn append(&self, node: &str, data: &str) -> Result<u64, ClusterError> {
        let mut inv = self.append.prepare_invoke();
        inv.key(self.keys.events())
            .key(self.keys.events_seq())
            .arg(self.max_len)
            .arg(node)
            .arg(data);
        self.redis.script(&inv).await
    }

    /// The newest seq (0 before the first event).
    pub async fn last_seq(&self) -> Result<u64, ClusterError> {
        let seq: Option<u64> = self
            .redis
            .query(redis::cmd("GET").arg(self.keys.events_seq()))
            .await?;
        Ok(seq.unwrap_or(0))
    }

    /// History from `from_seq` (inclusive). `0`, or the next seq to come: nothing to replay.
    /// Older than the stream holds, or beyond the next seq: [`ClusterError::OutOfRange`].
    pub async fn read_from(&self, from_seq: u64) -> Result<Replay, ClusterError> {
        let mut pipe = redis::pipe();
        // One MULTI, so the range, the oldest entry and the counter agree.
        pipe.atomic()
            .cmd("XRANGE")
            .arg(self.keys.events())
            .arg(format!("{from_seq}-0"))
            .arg("+")
            .arg("COUNT")
            .arg(READ_BATCH + 1)
            .cmd("XRANGE")
            .arg(self.keys.events())
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .cmd("GET")
            .arg(self.keys.events_seq());
        let (range, oldest, last): (StreamRangeReply, StreamRangeReply, Option<u64>) =
            self.redis.pipe(&pipe).await?;
        let newest = last.unwrap_or(0);
        let next = newest + 1;
        if from_seq == 0 || from_seq == next {
            return Ok(Replay {
                events: Vec::new(),
                last_seq: newest,
                more: false,
            });
        }
        if from_seq > next {
            return Err(ClusterError::OutOfRange(format!(
                "from_seq {from_seq} is beyond the newest event ({newest})"
            )));
        }
        let oldest = match oldest.ids.first() {
            Some(id) => parse(id)?.seq,
            None => next,
        };
        if from_seq < oldest {
            return Err(ClusterError::OutOfRange(format!(
                "from_seq {from_seq} is older than the event history (oldest held: {oldest})"
            )));
        }
        let mut events = range.ids.iter().map(parse).collect::<Result<Vec<_>, _>>()?;
        let more = events.len() > READ_BATCH;
        events.truncate(READ_BATCH);
        let last_seq = events.last().map_or(newest, |e| e.seq);
        Ok(Replay {
            events,
            last_seq,
            more,
        })
    }

    /// A live tail that returns the events after `after_seq`, blocking up to a given time.
    pub fn tail(&self, after_seq: u64) -> Tail {
        Tail {
            redis: self.redis.clone(),
            key: self.keys.events(),
            conn: None,
            after: after_seq,
        }
    }
}

/// A live tail of the event stream on a connection of its own.
pub struct Tail {
    redis: Redis,
    key: String,
    conn: Option<MultiplexedConnection>,
    after: u64,
}

impl Tail {
    /// The last seq this tail returned (or started after).
    pub fn position(&self) -> u64 {
        self.after
    }

    /// Waits up to `block` for events after [`position`](Self::position); empty on timeout.
    /// If the stream was trimmed past the position (this tail fell behind by more than the
    /// stream's length), [`ClusterError::Lagged`] names the seq to resume from.
    pub async fn next(&mut self, block: Duration) -> Result<Vec<StoredEvent>, ClusterError> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let deadline = block + self.redis.timeouts().command;
                self.conn
                    .insert(self.redis.dedicated(Some(deadline)).await?)
            }
        };
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(READ_BATCH)
            .arg("BLOCK")
            .arg(block.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(format!("{}-0", self.after));
        let reply: Option<StreamReadReply> = match cmd.query_async(conn).await {
            Ok(r) => r,
            Err(e) => {
                self.conn = None;
                return Err(super::conn::map_error(&e));
            }
        };
        let mut out = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for id in &key.ids {
                out.push(parse(id)?);
            }
        }
        if let Some(first) = out.first()
            && first.seq != self.after + 1
        {
            return Err(ClusterError::Lagged(format!(
                "event tail fell behind the stream (at {}, oldest held {}); resume with from_seq={}",
                self.after,
                first.seq,
                self.after + 1
            )));
        }
        if let Some(last) = out.last() {
            self.after = last.seq;
        }
        Ok(out)
    }
}

fn parse(id: &StreamId) -> Result<StoredEvent, ClusterError> {
    let bad = |what: &str| ClusterError::Corrupt(format!("event {}: {what}", id.id));
    let seq = id
        .id
        .split_once('-')
        .and_then(|(ms, _)| ms.parse::<u64>().ok())
        .ok_or_else(|| bad("id is not <seq>-0"))?;
    let node: String = id.get("node").ok_or_else(|| bad("no node"))?;
    let data: String = id.get("data").ok_or_else(|| bad("no data"))?;
    Ok(StoredEvent { seq, node, data })
}
