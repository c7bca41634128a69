//! Fuzz target: see `auth_server::fuzzing::email_and_password`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| auth_server::fuzzing::email_and_password(data));
