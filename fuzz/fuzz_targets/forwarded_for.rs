//! Fuzz target: see `auth_server::fuzzing::forwarded_for`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| auth_server::fuzzing::forwarded_for(data));
