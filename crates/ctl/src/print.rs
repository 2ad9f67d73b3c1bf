//! What `whipgate ctl` prints: short aligned text for people, or the control-plane JSON.

use std::fmt::Write as _;

use serde_json::{Value, json};

use whipgate_proto::json;
use whipgate_proto::pb;

/// Where and how results are printed.
#[derive(Clone, Copy)]
pub(super) struct Out {
    pub(super) json: bool,
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// The text block of one ingest.
fn ingest_text(i: &pb::Ingest) -> String {
    let v = json::ingest(i);
    let list = |key: &str| {
        v[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    let mut s = String::new();
    let _ = writeln!(s, "ingest      {}", i.ingest_id);
    let _ = writeln!(
        s,
        "video       {}  codecs {}",
        or_dash(&i.video_target),
        list("video_codecs")
    );
    let _ = writeln!(
        s,
        "audio       {}  codecs {}",
        or_dash(&i.audio_target),
        list("audio_codecs")
    );
    let _ = writeln!(
        s,
        "token       {}",
        if i.has_bearer_token { "yes" } else { "no" }
    );
    if let Some(l) = &i.limits
        && (l.max_bitrate_bps > 0 || l.max_session_seconds > 0)
    {
        let _ = writeln!(
            s,
            "limits      max_bitrate_bps={} max_session_seconds={}",
            l.max_bitrate_bps, l.max_session_seconds
        );
    }
    if !i.redirect_url.is_empty() {
        let _ = writeln!(s, "redirect    {}", i.redirect_url);
    }
    for (k, val) in &i.labels {
        let _ = writeln!(s, "label       {k}={val}");
    }
    match &i.session {
        None => {
            let _ = writeln!(s, "session     none");
        }
        Some(session) => {
            let sv = json::session(session);
            let c = session.counters.unwrap_or_default();
            let _ = writeln!(
                s,
                "session     {} {} from {} on {}",
                session.session_id,
                sv["state"].as_str().unwrap_or_default(),
                or_dash(&session.remote_addr),
                or_dash(&session.node_id)
            );
            let _ = writeln!(
                s,
                "codecs      video {} audio {}",
                or_dash(&session.video_codec),
                or_dash(&session.audio_codec)
            );
            let _ = writeln!(
                s,
                "counters    video {} pkts / {} B, audio {} pkts / {} B, forwarded {}, lost {}, keyframes {}",
                c.video_packets,
                c.video_bytes,
                c.audio_packets,
                c.audio_bytes,
                c.packets_forwarded,
                c.packets_lost,
                c.keyframes
            );
        }
    }
    s
}

impl Out {
    fn print_json(self, v: &Value) {
        println!("{v}");
    }

    /// One ingest (`created` after a register).
    pub(super) fn ingest(self, i: &pb::Ingest, created: Option<bool>) {
        if self.json {
            let mut v = json::ingest(i);
            if let (Some(created), Some(obj)) = (created, v.as_object_mut()) {
                obj.insert("created".into(), json!(created));
            }
            return self.print_json(&v);
        }
        if let Some(created) = created {
            println!(
                "{}",
                if created {
                    "registered"
                } else {
                    "unchanged (identical registration)"
                }
            );
        }
        print!("{}", ingest_text(i));
        let sdp = i
            .session
            .as_ref()
            .map_or(i.consumer_sdp.as_str(), |s| s.consumer_sdp.as_str());
        if !sdp.is_empty() {
            println!("consumer SDP:\n{}", sdp.replace("\r\n", "\n").trim_end());
        }
    }

    /// Every ingest, one line each.
    pub(super) fn ingests(self, all: &[pb::Ingest]) {
        if self.json {
            let list: Vec<Value> = all.iter().map(json::ingest).collect();
            return self.print_json(&json!({ "ingests": list }));
        }
        println!(
            "{:<24} {:<12} {:<12} {:<12} TARGETS",
            "INGEST", "SESSION", "VIDEO", "AUDIO"
        );
        for i in all {
            let (state, video, audio) = match &i.session {
                Some(s) => {
                    let sv = json::session(s);
                    (
                        sv["state"].as_str().unwrap_or_default().to_owned(),
                        or_dash(&s.video_codec).to_owned(),
                        or_dash(&s.audio_codec).to_owned(),
                    )
                }
                None => ("idle".to_owned(), "-".to_owned(), "-".to_owned()),
            };
            println!(
                "{:<24} {:<12} {:<12} {:<12} {} {}",
                i.ingest_id,
                state,
                video,
                audio,
                or_dash(&i.video_target),
                or_dash(&i.audio_target)
            );
        }
    }

    /// A yes/no result.
    pub(super) fn flag(self, name: &str, value: bool) {
        if self.json {
            self.print_json(&json!({ name: value }));
        } else {
            println!("{name}: {}", if value { "yes" } else { "no" });
        }
    }

    /// Caps and the live publisher count.
    pub(super) fn caps(self, caps: Option<&pb::Caps>, live: u32) {
        if self.json {
            return self.print_json(&json!({ "caps": json::caps(caps), "live_publishers": live }));
        }
        println!("max_publishers  {}", caps.map_or(0, |c| c.max_publishers));
        println!("live_publishers {live}");
    }

    /// Gateway nodes.
    pub(super) fn nodes(self, nodes: &[pb::Node]) {
        if self.json {
            let list: Vec<Value> = nodes.iter().map(json::node).collect();
            return self.print_json(&json!({ "nodes": list }));
        }
        println!(
            "{:<28} {:<28} {:>9} {:>9} {:<8} HEARTBEAT",
            "NODE", "URL", "LIVE", "CAPACITY", "STATE"
        );
        for n in nodes {
            let heartbeat = n.last_heartbeat.map(|t| t.to_string()).unwrap_or_default();
            println!(
                "{:<28} {:<28} {:>9} {:>9} {:<8} {heartbeat}",
                n.node_id,
                n.advertise_url,
                n.live_publishers,
                n.publisher_capacity,
                if n.draining { "draining" } else { "serving" }
            );
        }
    }

    /// One event: JSON per line, or `seq kind ingest detail`.
    pub(super) fn event(self, e: &pb::Event) {
        let v = json::event(e);
        if self.json {
            return self.print_json(&v);
        }
        let kind = v["kind"].as_str().unwrap_or_default();
        let detail = match &v[kind] {
            Value::Object(map) => map
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "ingest" | "consumer_sdp" | "counters"))
                .map(|(k, val)| match val {
                    Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        };
        println!(
            "{:>6} {} {:<20} {:<16} {detail}",
            e.seq,
            v["at"].as_str().unwrap_or_default(),
            kind,
            or_dash(&e.ingest_id)
        );
    }
}
