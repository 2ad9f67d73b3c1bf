use super::*;

const ANSWER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=ice-lite\r\n\
    a=group:BUNDLE 0 1\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=ice-ufrag:NEWU\r\n\
    a=ice-pwd:NEWPASSWORDNEWPASSWORD\r\na=rtpmap:96 VP8/90000\r\n\
    a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n\
    m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n";

#[test]
fn the_answer_fragment_carries_credentials_and_candidates() {
    assert_eq!(
        answer_fragment(ANSWER),
        "a=ice-lite\r\na=ice-ufrag:NEWU\r\na=ice-pwd:NEWPASSWORDNEWPASSWORD\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n\
         a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n"
    );
}

#[test]
fn credentials_are_replaced_everywhere() {
    let sdp = "v=0\r\na=ice-ufrag:old\r\nm=audio 9 X 0\r\na=ice-ufrag:old\r\na=ice-pwd:oldpwd\r\n";
    let new = with_credentials(sdp, "new", "newpwd");
    assert_eq!(new.matches("a=ice-ufrag:new").count(), 2);
    assert!(new.contains("a=ice-pwd:newpwd") && !new.contains("old"));
}
