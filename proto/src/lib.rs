//! Protobuf contracts of the identity service, package `auth.v1`, compiled for tonic 0.14.
//!
//! - [`auth::v1`]: the messages, `auth_service_client::AuthServiceClient` and
//!   `auth_service_server::AuthServiceServer`.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC server reflection.
//! - [`structs`]: `google.protobuf.Struct` (metadata fields) to and from a JSON object.
//!
//! Messages that carry a password or a token print `[redacted]` in place of the secret in
//! their `Debug` output, so logging a request never leaks one.

mod redact;
pub mod structs;

/// Package `auth`.
pub mod auth {
    /// Package `auth.v1`: the identity service contract.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("auth.v1");
    }
}

pub use auth::v1 as pb;

/// Encoded `FileDescriptorSet` of every `auth.v1` file, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/auth_v1_descriptor.bin"));
