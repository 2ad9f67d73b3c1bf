//! The offer check and codec choice of a publish (`whipgate_media::offer`), against the
//! ingest's accepted codecs; a refusal is the publisher's bad request.

use crate::error::Error;
use crate::registry::IngestSpec;
use whipgate_media::codec::OfferPlan;
use whipgate_media::offer::{self, Accepted};

/// Parses and checks an offer against an ingest's accepted codecs.
pub fn plan(offer: &str, spec: &IngestSpec) -> Result<OfferPlan, Error> {
    let accepted = Accepted {
        video: &spec.video_codecs,
        audio: &spec.audio_codecs,
    };
    offer::plan(offer, accepted).map_err(|err| Error::BadRequest(err.0))
}
