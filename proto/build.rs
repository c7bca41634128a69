//! Compiles `auth/v1/*.proto` with protox (pure Rust, no system `protoc`) and generates the
//! prost messages and tonic client/server, plus the encoded descriptor set for reflection.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

/// Messages whose fields hold a password or a token: their `Debug` is written by hand in
/// `src/redact.rs` so secrets never reach a log line.
const SECRET_MESSAGES: &[&str] = &[
    ".auth.v1.RegisterRequest",
    ".auth.v1.LoginRequest",
    ".auth.v1.LoginResponse",
    ".auth.v1.RefreshRequest",
    ".auth.v1.RefreshResponse",
    ".auth.v1.ValidateRequest",
    ".auth.v1.ChangePasswordRequest",
    ".auth.v1.ResetPasswordRequest",
    ".auth.v1.BeginTotpEnrollmentResponse",
    ".auth.v1.ConfirmTotpEnrollmentRequest",
    ".auth.v1.ConfirmTotpEnrollmentResponse",
    ".auth.v1.CompleteMfaLoginRequest",
    ".auth.v1.CompleteMfaLoginResponse",
    ".auth.v1.DisableTotpRequest",
    ".auth.v1.DeleteMyAccountRequest",
    ".auth.v1.CreateUserRequest",
    ".auth.v1.CreateUserResponse",
    ".auth.v1.IssuePasswordResetResponse",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["auth/v1/auth.proto", "auth/v1/admin.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["."])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("auth_v1_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .skip_debug(SECRET_MESSAGES.iter().copied())
        .compile_fds(fds)?;
    Ok(())
}
