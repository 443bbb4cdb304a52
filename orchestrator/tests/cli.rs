//! The dvlab command line towards its caller's pipes.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

/// `dvlab plan FILE | head`: a reader that has gone before the plan is written ends the command
/// with 0 and nothing on stderr, not with a panic on the broken pipe.
#[test]
fn plan_into_a_closed_pipe_exits_quietly() {
    let (reader, writer) = UnixStream::pair().unwrap();
    // The reader is gone before dvlab writes: its first write fails with EPIPE.
    drop(reader);
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/../devnets/basic.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_dvlab"))
        .args(["plan", spec])
        .stdout(Stdio::from(OwnedFd::from(writer)))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", out.status);
    assert!(stderr.is_empty(), "{stderr}");
}
