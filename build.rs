// `sqlx::migrate!` embeds migrations at compile time but cannot watch the folder itself (sqlx docs).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
