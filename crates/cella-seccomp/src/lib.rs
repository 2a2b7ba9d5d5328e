//! Seccomp: compiles OCI `linux.seccomp` profiles into classic BPF, in pure Rust.
