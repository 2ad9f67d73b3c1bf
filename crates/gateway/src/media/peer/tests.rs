use super::*;
use whipgate_media::codec::{AudioCodec, VideoCodec};

const FIREFOX: &str = include_str!("../../../tests/it/fixtures/firefox-esr-153-vp8-offer.sdp");

fn plan() -> OfferPlan {
    crate::edge::whip::plan_offer(FIREFOX, &plan_spec()).expect("Firefox's offer plans")
}

fn plan_spec() -> crate::registry::IngestSpec {
    crate::registry::IngestSpec {
        id: "p".to_owned(),
        video_target: None,
        audio_target: None,
        bearer_token: None,
        labels: Default::default(),
        video_codecs: vec![VideoCodec::Vp8],
        audio_codecs: vec![AudioCodec::Opus],
        limits: Default::default(),
        redirect_url: None,
        simulcast_layer: None,
        replace_publisher: false,
    }
}

#[test]
fn rtc_gets_the_offer_without_candidates_and_with_only_the_chosen_codecs() {
    let plan = plan();
    let pruned = offer_for_rtc(FIREFOX, &plan);
    assert!(
        pruned.contains("m=audio 40519 UDP/TLS/RTP/SAVPF 109\r\n"),
        "{pruned}"
    );
    assert!(
        pruned.contains("m=video 0 UDP/TLS/RTP/SAVPF 120 124\r\n"),
        "{pruned}"
    );
    for gone in [
        "a=rtpmap:9 ",
        "a=rtpmap:125 ",
        "a=fmtp:121 ",
        "a=rtcp-fb:121 ",
        "a=candidate:",
    ] {
        assert!(!pruned.contains(gone), "{gone} left in {pruned}");
    }
    for kept in [
        "a=rtpmap:109 opus",
        "a=rtpmap:120 VP8",
        "a=rtcp-fb:120 nack pli",
        "a=mid:",
        "a=extmap:",
    ] {
        assert!(pruned.contains(kept), "{kept} missing from {pruned}");
    }
    // The answer keeps the chosen codecs at the offer's payload types.
    let udp: SocketAddr = "127.0.0.1:8189".parse().expect("addr");
    let factory = PeerFactory::new(vec![udp], vec![]).expect("factory");
    let answer = factory
        .negotiate(FIREFOX.to_owned(), &plan, Instant::now())
        .expect("negotiates")
        .answer_sdp;
    assert!(answer.contains("a=rtpmap:120 VP8/90000"), "{answer}");
    assert!(answer.contains("a=rtpmap:109 opus/48000/2"), "{answer}");
    assert!(
        answer
            .lines()
            .any(|l| l.starts_with("m=video ") && l.ends_with(" 120 124")),
        "{answer}"
    );
}

const CHROMIUM: &str = include_str!("../../../tests/it/fixtures/chromium-156-h264-offer.sdp");

#[test]
fn rtx_and_red_are_answered_when_offered_red_first() {
    let spec = crate::registry::IngestSpec {
        video_codecs: vec![VideoCodec::H264],
        ..plan_spec()
    };
    let plan = crate::edge::whip::plan_offer(CHROMIUM, &spec).expect("Chromium's offer plans");
    let video = plan.video.as_ref().expect("video");
    assert_eq!((video.codec, video.payload_type), (VideoCodec::H264, 102));
    assert_eq!(plan.video_rtx, Some(103), "RTX with apt=102");
    assert_eq!(plan.audio_red, Some(63), "red/48000/2 with 111/111");
    let pruned = offer_for_rtc(CHROMIUM, &plan);
    assert!(pruned.contains("/SAVPF 102 103\r\n"), "{pruned}");
    assert!(pruned.contains("/SAVPF 63 111\r\n"), "{pruned}");
    let factory =
        PeerFactory::new(vec!["127.0.0.1:8189".parse().expect("addr")], vec![]).expect("factory");
    let answer = factory
        .negotiate(CHROMIUM.to_owned(), &plan, Instant::now())
        .expect("negotiates")
        .answer_sdp;
    assert!(
        answer.contains("a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102"),
        "{answer}"
    );
    assert!(
        answer.contains("a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111"),
        "{answer}"
    );
    assert!(
        answer.contains("a=fmtp:111 minptime=10;useinbandfec=1"),
        "{answer}"
    );
    // Chromium sends RED only when the answer lists it before Opus.
    let audio = answer
        .lines()
        .find(|l| l.starts_with("m=audio"))
        .expect("audio");
    assert!(audio.ends_with(" 63 111"), "{audio}");
}

#[test]
fn the_answer_takes_the_dtls_role_the_offer_leaves() {
    let factory =
        PeerFactory::new(vec!["127.0.0.1:8189".parse().expect("addr")], vec![]).expect("factory");
    let answer = |offer: String| {
        factory
            .negotiate(offer, &plan(), Instant::now())
            .expect("negotiates")
            .answer_sdp
    };
    assert!(FIREFOX.contains("a=setup:actpass"));
    let to_actpass = answer(FIREFOX.to_owned());
    assert!(to_actpass.contains("a=setup:passive"), "we are the server");
    // FFmpeg's WHIP muxer offers to be the server: the answer must be active (RFC 8842).
    let to_passive = answer(FIREFOX.replace("a=setup:actpass", "a=setup:passive"));
    assert!(to_passive.contains("a=setup:active"), "{to_passive}");
    assert!(!to_passive.contains("a=setup:passive"));
}

#[test]
fn the_answer_is_the_local_description_with_every_candidate() {
    let udp: Vec<SocketAddr> = vec![
        "127.0.0.1:8189".parse().expect("addr"),
        "[::1]:8189".parse().expect("addr"),
    ];
    let tcp: Vec<SocketAddr> = vec!["127.0.0.1:8190".parse().expect("addr")];
    let factory = PeerFactory::new(udp, tcp).expect("factory");
    let negotiated = factory
        .negotiate(FIREFOX.to_owned(), &plan(), Instant::now())
        .expect("negotiates");
    let local = negotiated
        .peer
        .local_description()
        .expect("a local description")
        .sdp;
    assert_eq!(negotiated.answer_sdp, local);
    for candidate in [
        " udp 2130706431 127.0.0.1 8189 typ host",
        " udp 2130706431 ::1 8189 typ host",
        " tcp 2124414975 127.0.0.1 8190 typ host tcptype passive",
    ] {
        assert!(
            local
                .lines()
                .any(|l| l.starts_with("a=candidate:") && l.ends_with(candidate)),
            "{candidate} missing from {local}"
        );
    }
    assert!(local.contains("a=end-of-candidates\r\n"), "{local}");
}

#[test]
fn a_section_without_the_chosen_payload_type_is_left_whole() {
    let mut plan = plan();
    if let Some(video) = plan.video.as_mut() {
        video.payload_type = 42;
    }
    let pruned = offer_for_rtc(FIREFOX, &plan);
    assert!(pruned.contains("m=video 0 UDP/TLS/RTP/SAVPF 120 124 121 125 99 100 123 122 119\r\n"));
    assert!(pruned.contains("a=rtpmap:121 VP9/90000"));
    assert_eq!(codec_line_payload_type("a=rtcp-fb:* transport-cc"), None);
    assert_eq!(codec_line_payload_type("a=fmtp:97 apt=96"), Some(97));
    assert_eq!(codec_line_payload_type("a=mid:0"), None);
}
