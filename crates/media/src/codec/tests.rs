use super::*;

#[test]
fn consumer_sdp_lists_each_forwarded_kind_at_its_target() {
    let v: SocketAddr = "127.0.0.1:5004".parse().unwrap();
    let a: SocketAddr = "127.0.0.1:5006".parse().unwrap();
    let sdp = consumer_sdp(
        "cam1",
        Some((v, &[VideoCodec::H264])),
        Some((a, AudioCodec::DEFAULT)),
    );
    assert!(sdp.contains("m=video 5004 RTP/AVP 96\r\nc=IN IP4 127.0.0.1"));
    assert!(sdp.contains("a=rtpmap:96 H264/90000"));
    assert!(sdp.contains("a=fmtp:96 packetization-mode=1"));
    assert!(sdp.contains("m=audio 5006 RTP/AVP 111"));
    assert!(sdp.contains("a=rtpmap:111 opus/48000/2"));
    // It must parse as SDP.
    let mut reader = std::io::Cursor::new(sdp.as_bytes());
    sdp::SessionDescription::unmarshal(&mut reader).unwrap();
}

#[test]
fn several_video_codecs_are_flagged_and_the_negotiated_sdp_has_one() {
    let v: SocketAddr = "127.0.0.1:5004".parse().unwrap();
    let both = [VideoCodec::H264, VideoCodec::Vp8];
    let sdp = consumer_sdp("cam", Some((v, &both)), None);
    assert!(sdp.contains("m=video 5004 RTP/AVP 96 97\r\n"));
    assert!(sdp.contains(SEVERAL_CODECS_NOTE), "{sdp}");
    let one = consumer_sdp("cam", Some((v, VideoCodec::DEFAULT)), None);
    assert!(!one.contains("i="), "{one}");
    let negotiated = consumer_sdp("cam", Some((v, &[VideoCodec::Vp8])), None);
    assert!(
        negotiated.contains("m=video 5004 RTP/AVP 97\r\n"),
        "{negotiated}"
    );
    assert!(negotiated.contains("a=rtpmap:97 VP8/90000"));
    assert!(!negotiated.contains("H264") && !negotiated.contains("i="));
    for text in [sdp, negotiated] {
        let mut reader = std::io::Cursor::new(text.as_bytes());
        sdp::SessionDescription::unmarshal(&mut reader).unwrap();
    }
}

#[test]
fn omitted_kind_has_no_media_section() {
    let a: SocketAddr = "[::1]:5006".parse().unwrap();
    let sdp = consumer_sdp("x", None, Some((a, AudioCodec::DEFAULT)));
    assert!(!sdp.contains("m=video"));
    assert!(sdp.contains("c=IN IP6 ::1"));
}

#[test]
fn encoding_names_parse_case_insensitively() {
    assert_eq!(
        VideoCodec::from_encoding_name("h264"),
        Some(VideoCodec::H264)
    );
    assert_eq!(VideoCodec::from_encoding_name("vp8"), Some(VideoCodec::Vp8));
    assert_eq!(VideoCodec::from_encoding_name("av1"), Some(VideoCodec::Av1));
    assert_eq!(
        VideoCodec::from_encoding_name("h265"),
        Some(VideoCodec::H265)
    );
    assert_eq!(VideoCodec::from_encoding_name("theora"), None);
    assert_eq!(
        AudioCodec::from_encoding_name("OPUS"),
        Some(AudioCodec::Opus)
    );
}
