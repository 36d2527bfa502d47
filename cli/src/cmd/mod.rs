//! One module per subcommand.

pub mod bench;
pub mod cluster;
pub mod consume;
pub mod dev;
pub mod group;
pub mod produce;
pub mod topic;

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};

/// A table with the house look for listings.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_header(header.to_vec());
    t
}

/// Formats a replica list like `1,2,3`.
pub fn ids(v: &[i32]) -> String {
    v.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

/// Formats a topic id as hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
