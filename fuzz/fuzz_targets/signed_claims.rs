//! Fuzz target: see `auth_server::fuzzing::signed_claims`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| auth_server::fuzzing::signed_claims(data));
