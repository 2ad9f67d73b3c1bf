//! ICE restart (RFC 9725 section 4.3.3): the publisher PATCHes new ICE credentials; the
//! session re-applies its offer with them, webrtc-rs generates fresh local credentials, and the
//! gateway answers with its own fragment. DTLS and media continue over the new ICE session.

use std::time::Instant;

use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::sdp::RTCSessionDescription;

use crate::peer::ice_credentials;

/// Why an ICE restart was refused: the publisher's fragment is not one (a bad request).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RestartError(pub String);

/// Our new ICE credentials after a restart, and the answer fragment carrying them.
pub(crate) struct Restarted {
    pub(crate) ufrag: String,
    pub(crate) pwd: String,
    pub(crate) fragment: String,
}

/// Restarts ICE at `now` with the publisher's new credentials from `fragment`.
pub(crate) fn restart(
    peer: &mut RTCPeerConnection,
    fragment: &str,
    now: Instant,
) -> Result<Restarted, RestartError> {
    let (their_ufrag, their_pwd) = ice_credentials(fragment).ok_or(RestartError(
        "the fragment has no ice-ufrag / ice-pwd".into(),
    ))?;
    let current = peer
        .remote_description()
        .map(|d| d.sdp.clone())
        .ok_or(RestartError("no remote description".into()))?;
    let (old_ufrag, _) =
        ice_credentials(&current).ok_or(RestartError("no ICE credentials in the offer".into()))?;
    if old_ufrag == their_ufrag {
        return Err(RestartError(
            "the ufrag did not change: not an ICE restart".into(),
        ));
    }
    let offer = with_credentials(&current, &their_ufrag, &their_pwd);
    let offer = RTCSessionDescription::offer(offer).map_err(|e| RestartError(e.to_string()))?;
    peer.set_remote_description(now, offer)
        .map_err(|e| RestartError(e.to_string()))?;
    let answer = peer
        .create_answer(None)
        .map_err(|e| RestartError(e.to_string()))?;
    peer.set_local_description(now, answer)
        .map_err(|e| RestartError(e.to_string()))?;
    let local = peer
        .local_description()
        .map(|d| d.sdp)
        .ok_or(RestartError("no local description".into()))?;
    let (ufrag, pwd) =
        ice_credentials(&local).ok_or(RestartError("no ICE credentials in the answer".into()))?;
    Ok(Restarted {
        fragment: answer_fragment(&local),
        ufrag,
        pwd,
    })
}

/// `sdp` with every `a=ice-ufrag` / `a=ice-pwd` replaced (session and media level).
fn with_credentials(sdp: &str, ufrag: &str, pwd: &str) -> String {
    sdp.lines()
        .map(|line| {
            if line.starts_with("a=ice-ufrag:") {
                format!("a=ice-ufrag:{ufrag}")
            } else if line.starts_with("a=ice-pwd:") {
                format!("a=ice-pwd:{pwd}")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n"
}

/// The trickle-ice-sdpfrag (RFC 8840) of an answer: ICE options, credentials, then the first
/// (bundled) media section's m= and mid lines with its candidates.
fn answer_fragment(answer: &str) -> String {
    let mut out = String::new();
    let mut in_first_media = false;
    let mut seen_media = false;
    for line in answer.lines().map(str::trim) {
        if line.starts_with("m=") {
            if seen_media {
                break;
            }
            seen_media = true;
            in_first_media = true;
            out.push_str(line);
            out.push_str("\r\n");
            continue;
        }
        let wanted = if in_first_media {
            line.starts_with("a=mid:")
                || line.starts_with("a=candidate:")
                || line == "a=end-of-candidates"
        } else {
            line == "a=ice-lite"
                || line.starts_with("a=ice-options:")
                || line.starts_with("a=ice-ufrag:")
                || line.starts_with("a=ice-pwd:")
        };
        // Credentials at media level go before the m= line in a fragment.
        let credentials =
            in_first_media && (line.starts_with("a=ice-ufrag:") || line.starts_with("a=ice-pwd:"));
        if credentials {
            let at = out.find("m=").unwrap_or(out.len());
            out.insert_str(at, &format!("{line}\r\n"));
        } else if wanted {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out
}

#[cfg(test)]
mod tests;
