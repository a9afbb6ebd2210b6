//! What a shared file is: [`trove_common::kind`] (shared with the controller's uploads),
//! given a path. `--kind` overrides it (clap checks it against the kinds, see `main.rs`).

use std::path::Path;

pub use trove_common::kind::SNIFF_BYTES;

/// The kind of the file at `name` that starts with `head` (its first [`SNIFF_BYTES`]).
pub fn detect(name: &Path, head: &[u8]) -> &'static str {
    trove_common::kind::detect(&name.to_string_lossy(), head)
}
