//! Offer checks and codec choice.

use super::*;
use crate::registry::Limits;
use whipgate_media::codec::AudioCodec;

fn spec(video: &[VideoCodec]) -> IngestSpec {
    IngestSpec {
        id: "x".into(),
        video_target: None,
        audio_target: None,
        bearer_token: None,
        labels: Default::default(),
        video_codecs: video.to_vec(),
        audio_codecs: AudioCodec::DEFAULT.to_vec(),
        limits: Limits::default(),
        redirect_url: None,
        simulcast_layer: None,
        replace_publisher: false,
    }
}

/// Shaped like a browser offer: VP8 first, H264 in two packetization modes, then Opus.
const BROWSER: &str = "v=0\r\n\
o=- 1 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\n\
c=IN IP4 0.0.0.0\r\n\
a=mid:0\r\n\
a=sendonly\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:0 PCMU/8000\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 106\r\n\
c=IN IP4 0.0.0.0\r\n\
a=mid:1\r\n\
a=sendonly\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\n\
a=rtpmap:102 H264/90000\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n\
a=rtpmap:106 H264/90000\r\n\
a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";

#[test]
fn the_ingest_preference_wins_over_the_offer_order() {
    let plan = plan(BROWSER, &spec(VideoCodec::DEFAULT)).expect("plan");
    let video = plan.video.expect("video");
    assert_eq!(
        (video.codec, video.payload_type),
        (VideoCodec::H264, 106),
        "mode 1 only"
    );
    let audio = plan.audio.expect("audio");
    assert_eq!(
        (audio.payload_type, audio.clock_rate, audio.channels),
        (111, 48000, 2)
    );
}

#[test]
fn a_vp8_only_ingest_picks_vp8() {
    let plan = plan(BROWSER, &spec(&[VideoCodec::Vp8])).expect("plan");
    assert_eq!(plan.video.as_ref().map(|v| v.payload_type), Some(96));
    assert_eq!(
        plan.kind_of(96),
        Some(whipgate_media::codec::MediaKind::Video)
    );
    assert_eq!(
        plan.kind_of(111),
        Some(whipgate_media::codec::MediaKind::Audio)
    );
    assert_eq!(plan.kind_of(97), None);
}

#[test]
fn unusable_offers_are_explained() {
    let only_mode0 = BROWSER.replace("packetization-mode=1", "packetization-mode=0");
    let err = plan(&only_mode0, &spec(&[VideoCodec::H264])).expect_err("no mode 1");
    assert!(
        err.to_string().contains("no supported video codec"),
        "{err}"
    );
    let recv = BROWSER.replace("a=sendonly", "a=recvonly");
    assert!(plan(&recv, &spec(VideoCodec::DEFAULT)).is_err());
    assert!(plan("garbage", &spec(VideoCodec::DEFAULT)).is_err());
    let two_videos = format!(
        "{BROWSER}{}",
        &BROWSER[BROWSER.find("m=video").expect("video")..]
    );
    assert!(plan(&two_videos, &spec(VideoCodec::DEFAULT)).is_err());
}

/// A tiny deterministic generator, so the mutation test needs no dependency.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as usize
    }
}

#[test]
fn mutated_offers_never_panic() {
    let mut rng = Lcg(7);
    let spec = spec(VideoCodec::DEFAULT);
    let base = BROWSER.as_bytes();
    for _ in 0..5_000 {
        let mut bytes = base.to_vec();
        for _ in 0..(1 + rng.next() % 8) {
            let at = rng.next() % bytes.len();
            match rng.next() % 4 {
                0 => bytes[at] = (rng.next() % 256) as u8,
                1 => {
                    bytes.remove(at);
                }
                2 => bytes.insert(at, b"\r\n:= /0123456789abcdef"[rng.next() % 22]),
                _ => bytes.truncate(at),
            }
            if bytes.is_empty() {
                break;
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let _ = plan(&text, &spec);
    }
}

#[test]
fn simulcast_layers_are_read_from_the_send_list() {
    let offer = BROWSER.replace(
        "a=rtpmap:96 VP8/90000\r\n",
        "a=rtpmap:96 VP8/90000\r\na=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send q;h;~f\r\n",
    );
    let planned = plan(&offer, &spec(VideoCodec::DEFAULT)).expect("plan");
    assert_eq!(planned.simulcast_rids, ["q", "h", "f"]);
    assert!(
        plan(BROWSER, &spec(VideoCodec::DEFAULT))
            .expect("plan")
            .simulcast_rids
            .is_empty()
    );
}

const BOTH: &[VideoCodec] = &[VideoCodec::H264, VideoCodec::Vp8];

/// A registration without codecs accepts H264 only: a VP8-only publisher gets a 400 that names
/// the accepted codec.
#[test]
fn the_default_refuses_vp8_only_and_names_h264() {
    let vp8_only = BROWSER
        .replace("96 97 102 106", "96 97")
        .replace("a=rtpmap:102 H264", "a=rtpmap:102 X")
        .replace("a=rtpmap:106 H264", "a=rtpmap:106 X");
    match plan(&vp8_only, &spec(VideoCodec::DEFAULT)) {
        Err(Error::BadRequest(msg)) => assert!(msg.contains("accepted: H264"), "{msg}"),
        other => panic!("expected a 400, got {other:?}"),
    }
    assert_eq!(
        plan(&vp8_only, &spec(BOTH))
            .expect("plan")
            .video
            .map(|v| v.codec),
        Some(VideoCodec::Vp8)
    );
}

/// Firefox (and GStreamer webrtcbin with max-bundle): every section after the first has port 0
/// and `a=bundle-only` (RFC 8843). It is live, not rejected.
#[test]
fn bundle_only_sections_are_live() {
    let offer = "v=0\r\n\
o=mozilla...THIS_IS_SDPARTA-99.0 1 0 IN IP4 0.0.0.0\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 109\r\n\
c=IN IP4 0.0.0.0\r\n\
a=mid:0\r\n\
a=sendonly\r\n\
a=rtpmap:109 opus/48000/2\r\n\
m=video 0 UDP/TLS/RTP/SAVPF 120\r\n\
c=IN IP4 0.0.0.0\r\n\
a=bundle-only\r\n\
a=mid:1\r\n\
a=sendonly\r\n\
a=rtpmap:120 VP8/90000\r\n";
    let planned = plan(offer, &spec(BOTH)).expect("plan");
    assert_eq!(
        planned
            .video
            .expect("the bundle-only video is planned")
            .codec,
        VideoCodec::Vp8
    );
    assert!(planned.audio.is_some());
    // Port 0 without bundle-only still rejects the section.
    let rejected = offer.replace("a=bundle-only\r\n", "");
    assert!(plan(&rejected, &spec(BOTH)).expect("plan").video.is_none());
}
