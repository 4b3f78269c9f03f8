//! Build script: rebuilds when the PostgreSQL migrations change (refinery embeds them at
//! compile time, and cargo does not see a new file in that folder on its own).

fn main() {
    println!("cargo:rerun-if-changed=src/pg/migrations");
}
