use super::*;

#[test]
fn every_codec_maps_both_ways() {
    let all: Vec<VideoCodec> = VIDEO_CODECS.iter().map(|(c, _)| *c).collect();
    let numbers = codecs_to_pb(&all, VIDEO_CODECS);
    assert_eq!(numbers.len(), all.len(), "every video codec has a number");
    assert_eq!(
        codecs_from_pb(&numbers, VIDEO_CODECS, "video").unwrap(),
        all
    );
    assert_eq!(
        codecs_from_pb(&[pb::AudioCodec::Opus as i32], AUDIO_CODECS, "audio").unwrap(),
        [AudioCodec::Opus]
    );
    assert!(
        codecs_from_pb(&[0], VIDEO_CODECS, "video").is_err(),
        "unspecified"
    );
    assert!(codecs_from_pb(&[99], VIDEO_CODECS, "video").is_err());
    assert_eq!(
        codecs_from_pb(&[2, 2, 1], VIDEO_CODECS, "video").unwrap(),
        [VideoCodec::Vp8, VideoCodec::H264],
        "deduplicated, order kept"
    );
}
