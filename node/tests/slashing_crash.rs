//! Crash safety of the slashing protection database.
//!
//! The test re-executes its own binary as a child process (selected by an environment variable and
//! `--exact` test name) that keeps check-and-inserting blocks and attestations and prints an `ACK`
//! line after each commit returns. Attestations are recorded for several validators at once, in
//! the one transaction per duty the node uses (`check_and_insert_attestations_of_many`). The parent SIGKILLs the child at random moments, several rounds
//! on the same database, and after every round reopens it and checks that every acknowledged
//! record is present, that no record is torn and that the records form a gap-free prefix.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use dvnode::slashing::{Safety, SlashingDb, SlashingError};
use rand::Rng;

const CHILD_ENV: &str = "DVNODE_SLASHING_CRASH_DB";
const START_ENV: &str = "DVNODE_SLASHING_CRASH_START";
const CHILD_TEST: &str = "crash_child_writer";
const PK: [u8; 48] = [0x8c; 48];
/// Validators whose attestations are recorded together (PK first).
const ATT_KEYS: [[u8; 48]; 4] = [PK, [0x91; 48], [0xa2; 48], [0xb3; 48]];
const GVR: [u8; 32] = [0x42; 32];

/// Deterministic, non-zero signing root of the i-th message of a kind.
fn root_for(kind: u8, i: u64) -> [u8; 32] {
    let mut r = [kind; 32];
    r[..8].copy_from_slice(&(i + 1).to_be_bytes());
    r
}

/// Child process: block at slot i and attestation (i, i + 1) for i = START.., forever.
#[test]
#[ignore = "helper process of crash_safety_under_sigkill, started by it"]
fn crash_child_writer() {
    use std::io::Write;
    let db_path = std::env::var(CHILD_ENV).expect("crash child started without its DB path");
    let start: u64 = std::env::var(START_ENV)
        .expect("start index")
        .parse()
        .expect("start index");
    let db = SlashingDb::open(Path::new(&db_path)).expect("child: open DB");
    db.set_genesis_validators_root(GVR).expect("child: gvr");
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY").unwrap();
    out.flush().unwrap();
    for i in start.. {
        // Messages from before the previous kill may have been committed without an ACK; they
        // are re-signed with identical data (SameData).
        db.check_and_insert_block(&PK, i, Some(root_for(1, i)))
            .expect("child: block");
        writeln!(out, "ACK block {i}").unwrap();
        out.flush().unwrap();
        let att = dvnode::slashing::interchange::SignedAttestation {
            source_epoch: i,
            target_epoch: i + 1,
            signing_root: Some(root_for(2, i)),
        };
        let records: Vec<_> = ATT_KEYS.iter().map(|pk| (*pk, att)).collect();
        for verdict in db
            .check_and_insert_attestations_of_many(&records)
            .expect("child: attestations")
        {
            verdict.expect("child: attestation");
        }
        writeln!(out, "ACK att {i}").unwrap();
        out.flush().unwrap();
    }
}

/// Kills the child process if the parent panics before killing it on purpose.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs one child until a random kill point; returns the highest acked block and attestation.
fn run_round(db_path: &Path, start: u64, rng: &mut impl Rng) -> (Option<u64>, Option<u64>) {
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                CHILD_TEST,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, db_path)
            .env(START_ENV, start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning crash child"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    // Wait for the child to be running, then kill it after a random number of acks or delay.
    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            // libtest may print "test crash_child_writer ... " before the child's first line.
            Ok(line) if line.ends_with("READY") => break true,
            Ok(_) => {}
            Err(_) if Instant::now() > deadline => break false,
            Err(_) => {}
        }
    };
    assert!(ready, "crash child did not start");
    let mut lines = Vec::new();
    let kill_after_acks = rng.gen_range(1..120);
    let kill_at = Instant::now() + Duration::from_micros(rng.gen_range(0..400_000));
    while lines.len() < kill_after_acks && Instant::now() < kill_at {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(1)) {
            lines.push(line);
        }
    }
    // Child::kill sends SIGKILL on Unix.
    child.0.kill().expect("killing crash child");
    let status = child.0.wait().unwrap();
    assert!(!status.success(), "child must have been killed, not exited");
    reader.join().unwrap();
    lines.extend(rx.try_iter());

    let (mut block, mut att) = (None, None);
    for line in &lines {
        if let Some(i) = line.strip_prefix("ACK block ") {
            block = Some(i.parse::<u64>().unwrap());
        } else if let Some(i) = line.strip_prefix("ACK att ") {
            att = Some(i.parse::<u64>().unwrap());
        }
    }
    (block, att)
}

/// Reopens the database and verifies it against everything acknowledged so far.
fn verify(db_path: &Path, acked_block: Option<u64>, acked_att: Option<u64>) -> u64 {
    let db = SlashingDb::open(db_path).expect("database must reopen after SIGKILL");
    assert_eq!(db.genesis_validators_root().unwrap(), Some(GVR));

    if let Some(max) = acked_block {
        for i in 0..=max {
            let err = db
                .check_and_insert_block(&PK, i, Some(root_for(9, i)))
                .unwrap_err();
            assert!(
                matches!(err, SlashingError::DoubleBlockProposal { .. }),
                "block {i}: {err}"
            );
            assert_eq!(
                db.check_block(&PK, i, Some(root_for(1, i))).unwrap(),
                Safety::SameData
            );
        }
    }
    if let Some(max) = acked_att {
        for i in 0..=max {
            for pk in &ATT_KEYS {
                let err = db
                    .check_and_insert_attestation(pk, i, i + 1, Some(root_for(9, i)))
                    .unwrap_err();
                assert!(
                    matches!(err, SlashingError::DoubleVote { .. }),
                    "attestation {i}: {err}"
                );
                let same = db
                    .check_attestation(pk, i, i + 1, Some(root_for(2, i)))
                    .unwrap();
                assert_eq!(same, Safety::SameData);
            }
        }
    }

    // Nothing torn: every stored record is exactly what the child wrote, with no gaps.
    let exported = db.export_interchange().unwrap();
    let (mut blocks, mut atts) = (0u64, 0u64);
    // The validators recorded together have identical histories (a batch is all or nothing).
    let histories: Vec<_> = exported
        .data
        .iter()
        .map(|d| {
            assert!(ATT_KEYS.contains(&d.pubkey), "unexpected validator");
            d.signed_attestations.clone()
        })
        .collect();
    assert!(
        histories.windows(2).all(|w| w[0] == w[1]),
        "a batched attestation write was torn across validators"
    );
    for data in exported.data.iter().filter(|d| d.pubkey == PK) {
        for (n, b) in data.signed_blocks.iter().enumerate() {
            assert_eq!(b.slot, n as u64, "blocks must be a gap-free prefix");
            assert_eq!(
                b.signing_root,
                Some(root_for(1, b.slot)),
                "torn block {}",
                b.slot
            );
        }
        for (n, a) in data.signed_attestations.iter().enumerate() {
            assert_eq!(
                a.source_epoch, n as u64,
                "attestations must be a gap-free prefix"
            );
            assert_eq!(a.target_epoch, a.source_epoch + 1, "torn attestation {n}");
            assert_eq!(
                a.signing_root,
                Some(root_for(2, a.source_epoch)),
                "torn attestation {n}"
            );
        }
        blocks = data.signed_blocks.len() as u64;
        atts = data.signed_attestations.len() as u64;
    }
    assert!(blocks >= acked_block.map_or(0, |b| b + 1));
    assert!(atts >= acked_att.map_or(0, |a| a + 1));
    assert!(
        atts <= blocks && blocks <= atts + 1,
        "blocks {blocks} / attestations {atts} out of step"
    );
    // Resume where the acknowledged history ends; unacked commits are re-signed as SameData.
    acked_att.map_or(0, |a| a + 1)
}

#[test]
fn crash_safety_under_sigkill() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("slashing.redb");
    let mut rng = rand::thread_rng();
    let (mut acked_block, mut acked_att) = (None, None);
    let mut start = 0;
    let rounds = 12;
    for round in 0..rounds {
        let (b, a) = run_round(&db_path, start, &mut rng);
        acked_block = acked_block.max(b);
        acked_att = acked_att.max(a);
        start = verify(&db_path, acked_block, acked_att);
        println!("round {round}: acked up to block {acked_block:?}, attestation {acked_att:?}");
    }
    assert!(
        acked_block.is_some(),
        "no round acknowledged anything; the test proved nothing"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "crash test took {:?}",
        started.elapsed()
    );
}
