# Everyday recipes. `just --list` shows them.

# Format check, lints and the whole test suite (what CI runs, minus package installs).
check:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    just test

# The README's test command.
test:
    cargo build --workspace --bins && cargo test --workspace

# Every benchmark, one after another: data plane, gateway, announce ingest, search, appliance footprint.
bench:
    just bench-data-plane
    just bench-gateway
    just bench-ingest
    just bench-search
    just bench-appliance

# Data-plane benchmark: trove vs nginx+curl and nginx+aria2c (needs nginx-light, curl, aria2, bc).
bench-data-plane size_mib="1024" runs="3":
    bench/data-plane.sh {{size_mib}} {{runs}}

# Streaming gateway vs nginx: TTFB of a cold mid-file Range request and whole-file throughput,
# a file on 3 local appliances (needs nginx-light, curl, bc).
bench-gateway size_mib="1024" runs="9":
    bench/gateway.sh {{size_mib}} {{runs}}

# Search latency (median, p99) over 100,000 and 1,000,000 files on SQLite, availability ranking on.
bench-search sizes="100000,1000000" queries="1000":
    cargo build --release --bins
    target/release/bench-search {{sizes}} {{queries}}

# Announce-path benchmark: have deltas through the broker into SQLite and PostgreSQL.
bench-ingest changes="1000000" nodes="8":
    cargo build --release --bins
    target/release/bench-ingest {{changes}} {{nodes}} both

# Static troved for the boards (aarch64 musl, armv7 glibc) with Debian's cross toolchains:
# target/<triple>/appliance/troved. Needs gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf
# libc6-dev-arm64-cross libc6-dev-armhf-cross (and qemu-user-static to run them here).
cross:
    rustup target add aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf
    for t in aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf; do cargo --config hardware/cargo-cross.toml build --profile appliance -p trove-firmware --bin troved --target $t || exit 1; done
    ls -l ${CARGO_TARGET_DIR:-target}/*/appliance/troved

# Appliance footprint: binary size per target, troved's RSS idle with 100,000 chunks and
# serving 3 clients (builds `just cross` first).
bench-appliance chunks="100000":
    just cross
    bench/appliance.sh {{chunks}}

# The no_std protocol core for a Cortex-M class board.
nostd:
    rustup target add thumbv7em-none-eabihf
    cargo build -p trove-common --no-default-features --target thumbv7em-none-eabihf

# Fuzz every decoder for a while each (needs nightly and `cargo install cargo-fuzz`).
fuzz seconds="60":
    for t in wire_request wire_response manifest text_forms; do cargo +nightly fuzz run $t -- -max_total_time={{seconds}} || exit 1; done
