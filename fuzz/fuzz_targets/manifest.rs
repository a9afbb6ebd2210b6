//! Manifests come from the controller or a file: decoding must never panic, and anything
//! that decodes must be a manifest whose chunks are all valid.
#![no_main]
use libfuzzer_sys::fuzz_target;
use trove_common::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::decode_self_checked(data) {
        for c in m.chunks() {
            assert!(c.len() > 0);
        }
        assert_eq!(Manifest::decode(&m.encode(), m.file_id()).as_ref(), Ok(&m));
    }
});
