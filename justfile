# Everyday recipes. `just --list` shows them.

# Format check, lints and the whole test suite (what CI runs, minus package installs).
check:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    just test

# The README's test command.
test:
    cargo build --workspace --bins && cargo test --workspace

# Data-plane benchmark: trove vs nginx+curl and nginx+aria2c (needs nginx-light, curl, aria2, bc).
bench size_mib="1024" runs="3":
    bench/data-plane.sh {{size_mib}} {{runs}}

# Announce-path benchmark: have deltas through the broker into SQLite and PostgreSQL.
bench-ingest changes="1000000" nodes="8":
    cargo build --release --bins
    target/release/bench-ingest {{changes}} {{nodes}} both

# The no_std protocol core for a Cortex-M class board.
nostd:
    rustup target add thumbv7em-none-eabihf
    cargo build -p trove-common --no-default-features --target thumbv7em-none-eabihf

# Fuzz every decoder for a while each (needs nightly and `cargo install cargo-fuzz`).
fuzz seconds="60":
    for t in wire_request wire_response manifest text_forms; do cargo +nightly fuzz run $t -- -max_total_time={{seconds}} || exit 1; done
