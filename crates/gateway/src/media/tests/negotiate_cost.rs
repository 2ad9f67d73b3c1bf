//! What one offer/answer costs (a measurement, not a check): `cargo test --release --lib
//! negotiate_cost -- --ignored --nocapture`.

use crate::media::peer::PeerFactory;
use std::time::Instant;

/// Measurement, not a check: CPU time of one offer/answer (release build).
#[test]
#[ignore = "measurement"]
fn negotiate_cost() {
    let offer = include_str!("../../../tests/it/fixtures/firefox-esr-153-vp8-offer.sdp");
    let spec = crate::registry::IngestSpec {
        id: "n".to_owned(),
        video_target: None,
        audio_target: None,
        bearer_token: None,
        labels: Default::default(),
        video_codecs: vec![whipgate_media::codec::VideoCodec::Vp8],
        audio_codecs: vec![whipgate_media::codec::AudioCodec::Opus],
        limits: Default::default(),
        redirect_url: None,
        simulcast_layer: None,
        replace_publisher: false,
    };
    let udp = "127.0.0.1:8189".parse().expect("fixture");
    let factory = PeerFactory::new(vec![udp], vec![udp]).expect("fixture");
    let n = 300;
    let t = Instant::now();
    for _ in 0..n {
        let _ = crate::edge::whip::plan_offer(offer, &spec).expect("fixture");
    }
    let plan_us = t.elapsed().as_micros() as f64 / n as f64;
    let plan = crate::edge::whip::plan_offer(offer, &spec).expect("fixture");
    let t = Instant::now();
    for _ in 0..n {
        let _ = factory
            .negotiate(offer.to_owned(), &plan, Instant::now())
            .expect("fixture");
    }
    let neg_us = t.elapsed().as_micros() as f64 / n as f64;
    println!("plan_offer {plan_us:.0} us, negotiate {neg_us:.0} us");
}
