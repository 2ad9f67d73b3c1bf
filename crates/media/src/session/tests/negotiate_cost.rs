//! What one offer/answer costs (a measurement, not a check): `cargo test --release -p
//! whipgate-media negotiate_cost -- --ignored --nocapture`.

use std::time::Instant;

use crate::codec::{AudioCodec, VideoCodec};
use crate::offer::{self, Accepted};
use crate::peer::PeerFactory;

/// Measurement, not a check: CPU time of one offer/answer (release build).
#[test]
#[ignore = "measurement"]
fn negotiate_cost() {
    let offer = include_str!("../../../../gateway/tests/it/fixtures/firefox-esr-153-vp8-offer.sdp");
    let accepted = Accepted {
        video: &[VideoCodec::Vp8],
        audio: &[AudioCodec::Opus],
    };
    let udp = "127.0.0.1:8189".parse().expect("fixture");
    let factory = PeerFactory::new(vec![udp], vec![udp]).expect("fixture");
    let n = 300;
    let t = Instant::now();
    for _ in 0..n {
        let _ = offer::plan(offer, accepted).expect("fixture");
    }
    let plan_us = t.elapsed().as_micros() as f64 / n as f64;
    let plan = offer::plan(offer, accepted).expect("fixture");
    let t = Instant::now();
    for _ in 0..n {
        let _ = factory
            .negotiate(offer.to_owned(), &plan, Instant::now())
            .expect("fixture");
    }
    let neg_us = t.elapsed().as_micros() as f64 / n as f64;
    println!("plan_offer {plan_us:.0} us, negotiate {neg_us:.0} us");
}
