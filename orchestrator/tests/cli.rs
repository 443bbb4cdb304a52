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

/// `dvlab analyze` refuses bad input with exit 2 and a message naming the cause, without a
/// beacon node to ask (the refusals that need one — an unknown public key, epochs beyond the
/// head — are checked against a kept devnet in tests/tests/docker_devnet.rs).
#[test]
fn analyze_refuses_bad_input_with_exit_2() {
    let out_dir = concat!(env!("CARGO_TARGET_TMPDIR"), "/cli-analyze");
    // Each case: the arguments after `dvlab analyze` (split at spaces; none contains one),
    // and what stderr must say. Port 9 (discard) has no beacon node.
    let cases: &[(&str, &str)] = &[
        (
            "--beacon-node http://127.0.0.1:9 --validators 0..4 --epochs 1..2",
            "beacon node http://127.0.0.1:9 is unreachable",
        ),
        (
            "--beacon-node notaurl --validators 0..4 --epochs 1..2",
            "--beacon-node `notaurl` is not a URL",
        ),
        (
            "--beacon-node http://127.0.0.1:9 --validators 5..1 --epochs 1..2",
            "validator range `5..1` is empty",
        ),
        (
            "--beacon-node http://127.0.0.1:9 --validators /nonexistent/lock.json --epochs 1..2",
            "validators `/nonexistent/lock.json`: no such file",
        ),
        (
            "--beacon-node http://127.0.0.1:9 --validators 0..4 --epochs 3..1",
            "epoch range `3..1` is empty",
        ),
        (
            "--beacon-node http://127.0.0.1:9 --validators 0..4",
            "--epochs A..B is needed without --follow",
        ),
        (
            "--beacon-node http://127.0.0.1:9 --validators 0..4 --epochs 1..2 --assert foo=1",
            "unknown metric `foo`",
        ),
        (
            "--beacon-node http://127.0.0.1:9 --validators 0..4 --epochs 1..2 --duty-log /nonexistent",
            "--duty-log /nonexistent: not a directory",
        ),
    ];
    for (args, want) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_dvlab"))
            .arg("analyze")
            .args(args.split(' '))
            .args(["--out", out_dir])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
