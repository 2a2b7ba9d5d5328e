//! One module per verb. Each parses nothing itself (clap does) and calls one library.

pub mod net;
pub mod ns;

/// What every verb returns: the exit status to leave with, or an error to report.
pub type CmdResult = Result<u8, Box<dyn std::error::Error>>;
