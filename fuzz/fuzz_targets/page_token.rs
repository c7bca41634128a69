//! Fuzz target: see `auth_server::fuzzing::page_token`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| auth_server::fuzzing::page_token(data));
