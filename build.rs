// `sqlx::migrate!` embeds migrations/ when the crate compiles: rebuild when a migration is
// added or changed, not only when Rust source changes (otherwise the binary would silently
// carry the old set and never apply the new file).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
