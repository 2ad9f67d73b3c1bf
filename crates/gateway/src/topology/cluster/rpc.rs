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
//! encoding.
//!
//! Redis is not trusted with control: anyone who can push onto `rpc:<node>` must not drive the
//! node. Every call carries a random call id, the calling and the called node, and an
//! HMAC-SHA256 tag ([`super::trust`], the `rpc` key) over the id, both nodes, the reply key,
//! the deadline and the body. The owner checks the size first, then the tag (constant time)
//! before it decodes the body, then that the call is for it, answers to `rpc:reply:<call id>`,
//! and that its deadline is neither past nor further away than [`MAX_TIMEOUT`]; a call id seen
//! before its deadline passed is a replay. Whatever fails is dropped, logged at warn with
//! bounded text and counted (`whipgate_cluster_untrusted_total`). The seen ids are kept until
//! their deadline, at most [`MAX_SEEN`]; when that many are in flight, further calls are
//! refused rather than remembered less. Answers carry a tag over the call id, both nodes and
//! the body, which the caller checks the same way; an answer that does not verify is dropped
//! and the caller keeps waiting for the genuine one until its deadline.

use std::collections::HashMap;
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
/// Most call ids a node remembers (until their deadlines) to refuse replays.
pub const MAX_SEEN: usize = 8192;
/// What the envelope adds to a body at most (ids, node names, tag, JSON escaping aside).
const ENVELOPE_OVERHEAD: usize = 1024;

/// A routed call as queued.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    /// Random call id (a UUID); the reply key is `rpc:reply:<id>`.
    id: String,
    /// The calling node.
    from: String,
    /// The called node.
    to: String,
    reply_to: String,
    deadline_ms: u64,
    body: String,
    /// HMAC-SHA256 (hex) over all of the above.
    tag: String,
}

impl Envelope {
    fn signed_fields(&self) -> [Vec<u8>; 7] {
        [
            b"call".to_vec(),
            self.id.as_bytes().to_vec(),
            self.from.as_bytes().to_vec(),
            self.to.as_bytes().to_vec(),
            self.reply_to.as_bytes().to_vec(),
            self.deadline_ms.to_be_bytes().to_vec(),
            self.body.as_bytes().to_vec(),
        ]
    }
}

/// An answer as pushed to the reply key.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyEnvelope {
    /// The call answered.
    id: String,
    /// The answering node (the call's `to`).
    from: String,
    /// The calling node (the call's `from`).
    to: String,
    body: String,
    /// HMAC-SHA256 (hex) over all of the above.
    tag: String,
}

impl ReplyEnvelope {
    fn signed_fields(&self) -> [&[u8]; 5] {
        [
            b"answer",
            self.id.as_bytes(),
            self.from.as_bytes(),
            self.to.as_bytes(),
            self.body.as_bytes(),
        ]
    }
}

fn refs(fields: &[Vec<u8>]) -> Vec<&[u8]> {
    fields.iter().map(Vec::as_slice).collect()
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
    /// This node (the calls' `from`).
    node: String,
    push: Script,
    /// Callers' connections between calls, with the response timeout they were opened with.
    idle: Arc<Mutex<Vec<(Duration, MultiplexedConnection)>>>,
}

impl Rpc {
    /// Routed calls under `keys`, made and served as node `node`.
    pub fn new(redis: Redis, keys: Keys, node: &str) -> Self {
        Rpc {
            redis,
            keys,
            node: node.to_owned(),
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
        let timeout_ms = (timeout.as_millis() as u64).max(1);
        let (id, envelope) = self.envelope(node, body, now_ms() + timeout_ms)?;
        let reply_to = self.keys.rpc_reply(&id);
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
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                self.recycle(response_timeout, conn);
                return Err(ClusterError::NodeTimeout(node.to_string()));
            }
            let reply: Option<(String, String)> = redis::cmd("BLPOP")
                .arg(&reply_to)
                .arg(left.as_secs_f64().max(0.001))
                .query_async(&mut conn)
                .await
                .map_err(|e| super::conn::map_error(&e))?;
            let Some((_, raw)) = reply else {
                // Timed out on the server's side: the connection is idle again (one that
                // failed is dropped above, by `?`).
                self.recycle(response_timeout, conn);
                return Err(ClusterError::NodeTimeout(node.to_string()));
            };
            if let Some(body) = self.verified_answer(&id, node, &raw) {
                self.recycle(response_timeout, conn);
                return Ok(body);
            }
            // Not the owner's answer: keep waiting for it.
        }
    }

    /// A new call of `body` to `node` with `deadline_ms`, tagged: its id and the envelope.
    fn envelope(
        &self,
        node: &str,
        body: &str,
        deadline_ms: u64,
    ) -> Result<(String, String), ClusterError> {
        let id = uuid::Uuid::new_v4().to_string();
        let mut envelope = Envelope {
            id: id.clone(),
            from: self.node.clone(),
            to: node.to_string(),
            reply_to: self.keys.rpc_reply(&id),
            deadline_ms,
            body: body.to_string(),
            tag: String::new(),
        };
        envelope.tag = self
            .redis
            .trust()
            .sign_rpc(&refs(&envelope.signed_fields()));
        let raw =
            serde_json::to_string(&envelope).map_err(|e| ClusterError::Corrupt(e.to_string()))?;
        Ok((id, raw))
    }

    /// The body of `raw` if it is `node`'s authenticated answer to call `id` (else dropped,
    /// logged and counted).
    fn verified_answer(&self, id: &str, node: &str, raw: &str) -> Option<String> {
        let trust = self.redis.trust();
        if raw.len() > 2 * MAX_BODY + ENVELOPE_OVERHEAD {
            trust.reject("rpc_answer", node, "answer too large");
            return None;
        }
        let Ok(answer) = serde_json::from_str::<ReplyEnvelope>(raw) else {
            trust.reject("rpc_answer", node, "unreadable answer");
            return None;
        };
        if !trust.verify_rpc(&answer.signed_fields(), &answer.tag) {
            trust.reject("rpc_answer", node, "answer tag does not verify");
            return None;
        }
        if answer.id != id || answer.from != node || answer.to != self.node {
            trust.reject("rpc_answer", node, "answer to another call");
            return None;
        }
        Some(answer.body)
    }

    /// This node's side: the calls routed to `node`.
    pub fn serve(&self, node: &str) -> Inbox {
        Inbox {
            redis: self.redis.clone(),
            node: node.to_owned(),
            keys: self.keys.clone(),
            queue: self.keys.rpc_queue(node),
            conn: None,
            seen: HashMap::new(),
        }
    }
}

/// The calls routed to this node.
pub struct Inbox {
    redis: Redis,
    node: String,
    keys: Keys,
    queue: String,
    conn: Option<MultiplexedConnection>,
    /// Call ids served, with their deadlines (replays are refused until then).
    seen: HashMap<String, u64>,
}

/// One routed call to answer.
pub struct Call {
    /// What the caller sent.
    pub body: String,
    /// The calling node (authenticated).
    pub from: String,
    id: String,
    to: String,
    reply_to: String,
    deadline_ms: u64,
    redis: Redis,
}

impl Inbox {
    /// Waits up to `block` for the next call that is authenticated, for this node, not a
    /// replay and whose deadline has not passed; `None` also when what was popped was dropped.
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
        Ok(self.admit(&raw))
    }

    /// The call in `raw` if it is authenticated, for this node, current and not a replay;
    /// otherwise `None` (dropped: logged at warn and counted).
    fn admit(&mut self, raw: &str) -> Option<Call> {
        let trust = self.redis.trust().clone();
        let reject = |why: &str| {
            trust.reject("rpc_call", &self.queue, why);
            None
        };
        let now = now_ms();
        let envelope = match check_envelope(&trust, &self.node, &self.keys, raw, now) {
            Ok(Some(envelope)) => envelope,
            // The caller has given up; acting now would surprise it.
            Ok(None) => return None,
            Err(why) => return reject(why),
        };
        self.seen.retain(|_, deadline| *deadline >= now);
        if self.seen.contains_key(&envelope.id) {
            return reject("replayed call");
        }
        if self.seen.len() >= MAX_SEEN {
            return reject("too many calls in flight to remember");
        }
        self.seen.insert(envelope.id.clone(), envelope.deadline_ms);
        Some(Call {
            body: envelope.body,
            from: envelope.from,
            id: envelope.id,
            to: envelope.to,
            reply_to: envelope.reply_to,
            deadline_ms: envelope.deadline_ms,
            redis: self.redis.clone(),
        })
    }
}

/// What a routed call must pass before anything in it is believed (a pure function of the
/// popped text, so the fuzz target runs it): size, envelope, tag (before the body is read),
/// addressee, reply key, deadline. `Ok(None)`: the caller's deadline has passed.
fn check_envelope(
    trust: &super::trust::Trust,
    node: &str,
    keys: &Keys,
    raw: &str,
    now: u64,
) -> Result<Option<Envelope>, &'static str> {
    if raw.len() > 2 * MAX_BODY + ENVELOPE_OVERHEAD {
        return Err("call too large");
    }
    let envelope = serde_json::from_str::<Envelope>(raw).map_err(|_| "unreadable envelope")?;
    if !trust.verify_rpc(&refs(&envelope.signed_fields()), &envelope.tag) {
        return Err("call tag does not verify");
    }
    if envelope.to != node {
        return Err("call for another node");
    }
    if uuid::Uuid::parse_str(&envelope.id).is_err()
        || envelope.reply_to != keys.rpc_reply(&envelope.id)
    {
        return Err("call does not answer to its own reply key");
    }
    if envelope.body.len() > MAX_BODY {
        return Err("call body too large");
    }
    if envelope.deadline_ms < now {
        return Ok(None);
    }
    if envelope.deadline_ms - now > MAX_TIMEOUT.as_millis() as u64 {
        return Err("call deadline too far away");
    }
    Ok(Some(envelope))
}

/// Fuzzing: [`check_envelope`] on outside text, for node `node` with `trust`; whether the
/// call would be admitted (replays aside).
#[doc(hidden)]
pub fn fuzz_check_envelope(trust: &super::trust::Trust, node: &str, raw: &str) -> bool {
    matches!(
        check_envelope(trust, node, &Keys::default(), raw, now_ms()),
        Ok(Some(_))
    )
}

impl Call {
    /// Sends the answer back to the caller (it expires shortly after the caller's deadline).
    pub async fn reply(self, body: &str) -> Result<(), ClusterError> {
        let ttl_ms = self
            .deadline_ms
            .saturating_sub(now_ms())
            .saturating_add(REPLY_GRACE_MS);
        let mut answer = ReplyEnvelope {
            id: self.id,
            from: self.to,
            to: self.from,
            body: body.to_owned(),
            tag: String::new(),
        };
        answer.tag = self.redis.trust().sign_rpc(&answer.signed_fields());
        let answer =
            serde_json::to_string(&answer).map_err(|e| ClusterError::Corrupt(e.to_string()))?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("RPUSH")
            .arg(&self.reply_to)
            .arg(answer)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&self.reply_to)
            .arg(ttl_ms)
            .ignore();
        self.redis.pipe::<()>(&pipe).await
    }
}

#[cfg(test)]
mod tests;
