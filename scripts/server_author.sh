#!/usr/bin/env bash
# A server author's view of the child library: a new crate, outside the
# workspace, that depends on supervisor-child by path (feature axum) and
# serves HTTP on the inherited listener with the drain kit. It builds that
# crate from clean, prints `cargo tree` for it, the number of crates it
# compiles and the build's wall time, and removes the crate.
#
#   scripts/server_author.sh                  # this checkout's supervisor-child
#   scripts/server_author.sh --old-package P  # an older checkout P, from
#                                             # before the workspace split (its
#                                             # one package, `supervisor`, with
#                                             # the child library as a module)
#
# It reuses the workspace's Cargo.lock (so the versions are the ones the
# project tests with) and needs the crates in cargo's cache or crates.io.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
old=""
if [ "${1:-}" = "--old-package" ]; then
    old="$(cd "${2:?--old-package needs a path}" && pwd)"
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/server-author.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src"
if [ -n "$old" ]; then
    dep="supervisor = { path = \"$old\", features = [\"axum\"] }"
    prelude="use supervisor::child as supervisor_child;"
    lock="$old/Cargo.lock"
else
    dep="supervisor-child = { path = \"$root/crates/supervisor-child\", features = [\"axum\"] }"
    prelude=""
    lock="$root/Cargo.lock"
fi
cat >"$work/Cargo.toml" <<TOML
[package]
name = "scratch-server"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
$dep
axum = { version = "0.8", default-features = false, features = ["tokio", "http1"] }
tokio = { version = "1", features = ["rt"] }

[workspace]
TOML
cat >"$work/src/main.rs" <<RUST
//! HTTP on the listener the supervisor passed down, drained by the kit.
$prelude
use axum::{Router, routing::get};
use supervisor_child::drain::{self, Drain};
use supervisor_child::Listeners;

fn main() -> std::io::Result<()> {
    let listener = Listeners::from_env()?.take_tcp_listener("http")?.expect("run me under supervisor");
    let drain = Drain::install()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let listener = drain::axum::Listener::from_std(listener, &drain)?;
        let app = Router::new().route("/", get(|| async { "hello\n" })).layer(drain::axum::layer(&drain));
        drain.ready()?;
        let server = axum::serve(listener, app).with_graceful_shutdown(drain.shutdown_signal());
        let _ = drain.bounded(server).await;
        Ok(())
    })
}
RUST
cp "$lock" "$work/Cargo.lock"
cd "$work"
export CARGO_TARGET_DIR="$work/target"
cargo fetch --quiet
echo "== cargo tree -e normal --depth 2 (the scratch server's dependencies)"
cargo tree -e normal --depth 2
crates=$(cargo tree -e normal,build --prefix none | sed 's/ (\*)$//' | sort -u | wc -l)
echo "== build from clean (debug)"
start=$(date +%s.%N)
cargo build --quiet --offline
end=$(date +%s.%N)
compiled=$(find "$work/target/debug/.fingerprint" -mindepth 1 -maxdepth 1 -type d | wc -l)
printf 'crates in the tree (normal + build): %s\n' "$crates"
printf 'units compiled (incl. build scripts): %s\n' "$compiled"
printf 'clean debug build: %.1f s\n' "$(echo "$end - $start" | bc)"
