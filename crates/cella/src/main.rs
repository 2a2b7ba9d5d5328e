//! The `cella` command line: parses arguments, calls a library, maps errors to messages
//! and exit codes. Nothing else lives here.

fn main() {
    println!("cella {}", env!("CARGO_PKG_VERSION"));
}
