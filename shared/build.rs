// The migrations are embedded by `sqlx::migrate!`; a new or changed migration file must
// rebuild the crate.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
    println!("cargo:rerun-if-changed=../migrations-sqlite");
}
