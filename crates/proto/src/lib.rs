//! whipgate's control-plane contract, shared by the gateway, `whipgate ctl` and
//! `whipgate-load`: the generated protobuf and gRPC code of `proto/whipgate/v1/*.proto`
//! ([`pb`]), the JSON form of its messages ([`json`]) and the canonical names of gRPC codes.
//! The proto package, services, RPCs and field names are a contract with clients outside this
//! repository: add to them, never rename.

pub mod json;

/// Generated protobuf and gRPC code (`whipgate.v1`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("whipgate.v1");

    /// Encoded descriptors, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("whipgate_descriptor");
}

/// The canonical name of a gRPC code (`RESOURCE_EXHAUSTED`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        InvalidArgument => "INVALID_ARGUMENT",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Unavailable => "UNAVAILABLE",
        Unauthenticated => "UNAUTHENTICATED",
        OutOfRange => "OUT_OF_RANGE",
        DataLoss => "DATA_LOSS",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        Internal => "INTERNAL",
        _ => "OTHER",
    }
}
