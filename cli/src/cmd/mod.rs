//! One module per subcommand.

/// `println!` for command output: when stdout is closed (piped into `head`, say) the command
/// ends quietly instead of panicking with "failed printing to stdout".
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::cmd::stdout_failed(e);
        }
    }};
}

pub mod bench;
pub mod cluster;
pub mod consume;
pub mod dev;
pub mod group;
pub mod moves;
pub mod produce;
pub mod topic;

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};

/// Ends the process after a failed write to stdout: quietly (success) when the reader went away,
/// with the error otherwise (a full disk behind a redirect, say).
pub fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: writing to stdout: {e}");
    std::process::exit(1);
}

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
