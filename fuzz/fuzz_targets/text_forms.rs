//! Text a person or a disk may hand us: chunk file names, file IDs, keys, resume state.
#![no_main]
use libfuzzer_sys::fuzz_target;
use trove_common::{ChunkId, FileId, PublicKey};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(c) = s.parse::<ChunkId>() {
        assert_eq!(c.to_string(), s, "one chunk, one name");
    }
    let _ = s.parse::<FileId>();
    let _ = s.parse::<PublicKey>();
    let _ = trove_common::download::ResumeState::parse(s);
});
