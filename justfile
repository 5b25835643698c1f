# ckm — Collaborative Key Management for Bitcoin. `just --list` shows every recipe.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List recipes
default:
    @just --list

# Format check, the house rules (contrib/layers.py), clippy (-D warnings) on every target, docs (-D warnings)
check:
    cargo fmt --all -- --check
    python3 contrib/layers.py
    cargo clippy --locked --all-targets --all-features -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --lib

# Audit Cargo.lock against the RustSec database copy in ../shared/advisory-db, offline; fails on any advisory not explained in .cargo/audit.toml
audit:
    command -v cargo-audit >/dev/null || cargo install cargo-audit --locked --version ^0.22.2
    db="{{justfile_directory()}}/../shared/advisory-db"; \
    test -d "$db/crates" || { echo "no RustSec advisory database at $db (see its SOURCE.md)" >&2; exit 1; }; \
    cargo audit --db "$db" --no-fetch --stale --no-yanked

# Make bitcoind, bitcoin-cli and electrs available (cached build; idempotent)
regtest-install:
    regtest/install

# Unit, integration and regtest tests (real bitcoind + electrs, installed if missing)
test: regtest-install
    eval "$(regtest/install --print-env)"; export BITCOIND_EXE BITCOIN_CLI_EXE ELECTRS_EXE; \
    cargo test --locked --features regtest -- --test-threads 2

# Fast tests only (no bitcoind/electrs needed)
test-fast:
    cargo test --locked

# The main job on a local regtest: 3 signers, a 2-of-3 wallet, a payment co-signed by two; the wallet talks to bitcoind over RPC (no electrs built or run)
demo:
    regtest/install --only bitcoind
    cargo build --locked --release
    eval "$(regtest/install --only bitcoind --print-env)"; export BITCOIND_EXE BITCOIN_CLI_EXE; \
    CKM=target/release/ckm regtest/demo

# The same demo through an Electrum server (electrs, built the first time)
demo-electrum: regtest-install
    cargo build --locked --release
    eval "$(regtest/install --print-env)"; export BITCOIND_EXE BITCOIN_CLI_EXE ELECTRS_EXE; \
    CKM=target/release/ckm regtest/demo --electrum

# Start bitcoind + electrs for manual use (prints the URLs); stop with `just down`
up: regtest-install
    regtest/up

# Start bitcoind alone for manual use (no electrs built or run); stop with `just down`
up-bitcoind:
    regtest/install --only bitcoind
    regtest/up --no-electrs

# Stop what `just up` started
down:
    regtest/down

# Co-signing benchmark: bare FROST vs in memory vs signer processes vs single-key, DKG, scale (1 vs 10 000 wallets), load; then over an emulated WAN: two vs one round, statements, ROAST vs retry with faulty signers, and small payments against one durable commit (commit_ms; writes target/bench/report.json); hostile-PSBT decoding from 1k to 160k pairs; the everyday wallet: wallet send vs single-key, history and balance over 10 000 transactions, console pages, first and incremental sync of a 2 000-block chain through bitcoind, Electrum and compact filters vs raw block fetch (target/bench/wallet.json)
bench:
    cargo build --release --locked --bins --examples
    CKM_BIN=target/release/ckm cargo bench --locked --bench cosign
    CKM_BIN=target/release/ckm CKM_FAULTY_BIN=target/release/examples/faulty_signer cargo bench --locked --bench wan
    cargo bench --locked --bench psbt_decode
    eval "$(regtest/install --print-env)"; export BITCOIND_EXE BITCOIN_CLI_EXE ELECTRS_EXE; \
      cargo bench --locked --bench wallet

# Fuzz each target (PSBT checks, PSBT v0/v2 and UR decoding, signer messages, share store) for SECS seconds
fuzz secs="60":
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    cd fuzz && for t in check_psbt psbt_formats signer_message share_store; do \
      RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" -- -max_total_time={{secs}} -rss_limit_mb=4096 2>&1 | tail -n 3; \
    done
