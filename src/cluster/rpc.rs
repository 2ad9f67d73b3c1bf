//! Control calls routed to the node that owns a session, over Redis lists.
//!
//! Why Redis and not a direct gRPC call to the owner: the control listener may be bound to
//! loopback (the safe default) or sit behind an API key the nodes would have to share, and a
//! second network path would need its own failure handling. Redis is already the one thing
//! every node reaches, and its absence already means "control calls answer UNAVAILABLE".
//!
//! A caller pushes `{reply_to, deadline_ms, body}` onto `rpc:<node>` (refused when that queue
//! already holds [`MAX_PENDING`] calls; the queue expires if nobody drains it) and waits with
//! `BLPOP` on its own `rpc:reply:<uuid>` list, on a connection of its own that is kept for
//! later calls (up to [`IDLE_CONNECTIONS`] of them). The owner drains its queue with `BLPOP`, skips
//! calls whose deadline passed, and pushes the answer (which expires shortly after the call's
//! deadline if the caller gave up). Bodies are opaque: the caller and the owner agree on their
//! encoding. Only nodes write these lists (Redis is trusted infrastructure), but what is popped
//! is still checked: its size, that it answers to a reply key of this prefix named by a UUID,
//! and that its deadline is neither past nor further away than [`MAX_TIMEOUT`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Script;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};

use super::{ClusterError, Keys, Redis, now_ms};

/// Most calls queued for one node.
pub const MAX_PENDING: u64 = 1024;
/// Longest accepted body (a control call is small; this bounds what one call can store).
pub const MAX_BODY: usize = 256 * 1024;
/// Longest a caller may wait for one call (a deadline further away is refused).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an unread answer stays past the call's deadline.
const REPLY_GRACE_MS: u64 = 2_000;
/// Idle connections kept for callers' `BLPOP`s (one per call in flight; opening one costs a
/// round trip or two, which a routed call would otherwise pay every time).
pub const IDLE_CONNECTIONS: usize = 16;

#[derive(Serialize, Deserialize)]
struct Envelope {
    reply_to: String,
    deadline_ms: u64,
    body: String,
}

/// Pushes a call unless the queue is full; the queue lives a while past the call's deadline.
const PUSH: &str = r#"
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"#;

/// Routed control calls on one Redis.
#[derive(Clone, Debug)]
pub struct Rpc {
    redis: Redis,
    keys: Keys,
    push: Script,
    /// Callers' connections between calls, with the response timeout they were opened with.
    idle: Arc<Mutex<Vec<(Duration, MultiplexedConnection)>>>,
}

impl Rpc {
    /// Routed calls under `keys`.
    pub fn new(redis: Redis, keys: Keys) -> Self {
        Rpc {
            redis,
            keys,
            push: Script::new(PUSH),
            idle: Arc::default(),
        }
    }

    /// An idle caller connection opened with `response_timeout`, or a new one.
    async fn caller_connection(
        &self,
        response_timeout: Duration,
    ) -> Result<MultiplexedConnection, ClusterError> {
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let at = idle.iter().position(|(t, _)| *t == response_timeout);
            at.map(|i| idle.swap_remove(i).1)
        };
        match reused {
            Some(conn) => Ok(conn),
            None => self.redis.dedicated(Some(response_timeout)).await,
        }
    }

    /// Keeps a connection whose last `BLPOP` completed for the next call.
    fn recycle(&self, response_timeout: Duration, conn: MultiplexedConnection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_CONNECTIONS {
            idle.push((response_timeout, conn));
        }
    }

    /// Sends `body` to `node` and waits up to `timeout` for its answer.
    pub async fn call(
        &self,
        node: &str,
        body: &str,
        timeout: Duration,
    ) -> Result<String, ClusterError> {
        let timeout = timeout.min(MAX_TIMEOUT);
        if body.len() > MAX_BODY {
            return Err(ClusterError::Corrupt(format!(
                "routed call of {} bytes (limit {MAX_BODY})",
                body.len()
            )));
        }
        let reply_to = self.keys.rpc_reply(&uuid::Uuid::new_v4().to_string());
        let timeout_ms = (timeout.as_millis() as u64).max(1);
        let envelope = serde_json::to_string(&Envelope {
            reply_to: reply_to.clone(),
            deadline_ms: now_ms() + timeout_ms,
            body: body.to_string(),
        })
        .map_err(|e| ClusterError::Corrupt(e.to_string()))?;
        // Wait on our own connection first, so no answer can arrive before we listen
        // (it would wait in the list anyway, but connecting is the part that can fail).
        let response_timeout = timeout + self.redis.timeouts().command;
        let mut conn = self.caller_connection(response_timeout).await?;
        let mut inv = self.push.prepare_invoke();
        inv.key(self.keys.rpc_queue(node))
            .arg(envelope)
            .arg(MAX_PENDING)
            .arg(timeout_ms.saturating_mul(2).max(10_000));
        let pushed: i64 = self.redis.script(&inv).await?;
        if pushed != 1 {
            self.recycle(response_timeout, conn);
            return Err(ClusterError::NodeBusy(node.to_string()));
        }
        let reply: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(&reply_to)
            .arg(timeout.as_secs_f64())
            .query_async(&mut conn)
            .await
            .map_err(|e| super::conn::map_error(&e))?;
        // Answered or timed out on the server's side: the connection is idle again (one that
        // failed is dropped above, by `?`).
        self.recycle(response_timeout, conn);
        reply
            .map(|(_, body)| body)
            .ok_or_else(|| ClusterError::NodeTimeout(node.to_string()))
    }

    /// This node's side: the calls routed to `node`.
    pub fn serve(&self, node: &str) -> Inbox {
        Inbox {
            redis: self.redis.clone(),
            queue: self.keys.rpc_queue(node),
            reply_prefix: self.keys.rpc_reply(""),
            conn: None,
        }
    }
}

/// The calls routed to this node.
pub struct Inbox {
    redis: Redis,
    queue: String,
    reply_prefix: String,
    conn: Option<MultiplexedConnection>,
}

/// One routed call to answer.
pub struct Call {
    /// What the caller sent.
    pub body: String,
    reply_to: String,
    deadline_ms: u64,
    redis: Redis,
}

impl Inbox {
    /// Waits up to `block` for the next call whose deadline has not passed.
    pub async fn next(&mut self, block: Duration) -> Result<Option<Call>, ClusterError> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let deadline = block + self.redis.timeouts().command;
                self.conn
                    .insert(self.redis.dedicated(Some(deadline)).await?)
            }
        };
        let popped: Option<(String, String)> = match redis::cmd("BLPOP")
            .arg(&self.queue)
            .arg(block.as_secs_f64().max(0.001))
            .query_async(conn)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                self.conn = None;
                return Err(super::conn::map_error(&e));
            }
        };
        let Some((_, raw)) = popped else {
            return Ok(None);
        };
        // The envelope adds the reply key, the deadline and JSON escaping to the body.
        if raw.len() > 2 * MAX_BODY + 256 {
            return Err(ClusterError::Corrupt(format!(
                "routed call of {} bytes",
                raw.len()
            )));
        }
        let envelope: Envelope = serde_json::from_str(&raw)
            .map_err(|e| ClusterError::Corrupt(format!("routed call: {e}")))?;
        let named_by_uuid = envelope
            .reply_to
            .strip_prefix(&self.reply_prefix)
            .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok());
        if !named_by_uuid {
            return Err(ClusterError::Corrupt(format!(
                "routed call answers to {:?}, not a reply key",
                crate::error::bounded(&envelope.reply_to)
            )));
        }
        if envelope.body.len() > MAX_BODY {
            return Err(ClusterError::Corrupt("routed call body too large".into()));
        }
        let now = now_ms();
        if envelope.deadline_ms < now {
            // The caller has given up; acting now would surprise it.
            return Ok(None);
        }
        if envelope.deadline_ms - now > MAX_TIMEOUT.as_millis() as u64 {
            return Err(ClusterError::Corrupt(format!(
                "routed call with a deadline {} ms away",
                envelope.deadline_ms - now
            )));
        }
        Ok(Some(Call {
            body: envelope.body,
            reply_to: envelope.reply_to,
            deadline_ms: envelope.deadline_ms,
            redis: self.redis.clone(),
        }))
    }
}

impl Call {
    /// Sends the answer back to the caller (it expires shortly after the caller's deadline).
    pub async fn reply(self, body: &str) -> Result<(), ClusterError> {
        let ttl_ms = self
            .deadline_ms
            .saturating_sub(now_ms())
            .saturating_add(REPLY_GRACE_MS);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("RPUSH")
            .arg(&self.reply_to)
            .arg(body)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&self.reply_to)
            .arg(ttl_ms)
            .ignore();
        self.redis.pipe::<()>(&pipe).await
    }
}
