//! Unit tests for every slashing protection rule.

use std::cell::Cell;

use proptest::prelude::*;

use super::interchange::{
    Interchange, InterchangeData, InterchangeMetadata, SignedAttestation, SignedBlock,
};
use super::*;

const PK: [u8; 48] = [0xa1; 48];
const PK2: [u8; 48] = [0xb2; 48];

thread_local! {
    /// Test-only fault injection: fail `import_interchange` after this many records.
    pub(super) static FAIL_IMPORT_AFTER: Cell<Option<usize>> = const { Cell::new(None) };
}

fn root(b: u8) -> Option<[u8; 32]> {
    Some([b; 32])
}

fn open() -> (tempfile::TempDir, SlashingDb) {
    let dir = tempfile::tempdir().unwrap();
    let db = SlashingDb::open(&dir.path().join("sub/dir/slashing.redb")).unwrap();
    (dir, db)
}

fn interchange(gvr: u8, data: Vec<InterchangeData>) -> Interchange {
    Interchange {
        metadata: InterchangeMetadata {
            interchange_format_version: 5,
            genesis_validators_root: [gvr; 32],
        },
        data,
    }
}

fn record(pubkey: [u8; 48], blocks: &[u64], atts: &[(u64, u64)]) -> InterchangeData {
    InterchangeData {
        pubkey,
        signed_blocks: blocks
            .iter()
            .map(|&slot| SignedBlock {
                slot,
                signing_root: None,
            })
            .collect(),
        signed_attestations: atts
            .iter()
            .map(|&(s, t)| SignedAttestation {
                source_epoch: s,
                target_epoch: t,
                signing_root: None,
            })
            .collect(),
    }
}

#[test]
fn double_block_proposal_refused_and_same_data_allowed() {
    let (_d, db) = open();
    assert_eq!(
        db.check_and_insert_block(&PK, 10, root(1)).unwrap(),
        Safety::Valid
    );
    assert_eq!(
        db.check_and_insert_block(&PK, 10, root(1)).unwrap(),
        Safety::SameData
    );
    assert_eq!(db.check_block(&PK, 10, root(1)).unwrap(), Safety::SameData);
    let err = db.check_and_insert_block(&PK, 10, root(2)).unwrap_err();
    assert!(
        matches!(err, SlashingError::DoubleBlockProposal { slot: 10 }),
        "{err}"
    );
    assert!(err.to_string().contains("slot 10"));
    // A zero or missing signing root never counts as the same data.
    assert!(db.check_block(&PK, 10, None).is_err());
    assert!(db.check_block(&PK, 10, Some([0; 32])).is_err());
    // Other validators are independent.
    assert_eq!(
        db.check_and_insert_block(&PK2, 10, root(2)).unwrap(),
        Safety::Valid
    );
}

#[test]
fn block_without_root_cannot_be_resigned() {
    let (_d, db) = open();
    assert_eq!(
        db.check_and_insert_block(&PK, 5, None).unwrap(),
        Safety::Valid
    );
    assert!(matches!(
        db.check_and_insert_block(&PK, 5, None),
        Err(SlashingError::DoubleBlockProposal { slot: 5 })
    ));
}

#[test]
fn block_lower_bound_is_lowest_recorded_slot() {
    let (_d, db) = open();
    db.check_and_insert_block(&PK, 10, root(1)).unwrap();
    db.check_and_insert_block(&PK, 20, root(2)).unwrap();
    for slot in [0, 9] {
        let err = db.check_block(&PK, slot, root(9)).unwrap_err();
        assert!(
            matches!(
                err,
                SlashingError::BelowWatermark {
                    bound: LowerBound::BlockSlot,
                    limit: 10,
                    ..
                }
            ),
            "slot {slot}: {err}"
        );
    }
    // Between recorded slots is not slashable.
    assert_eq!(db.check_block(&PK, 15, root(3)).unwrap(), Safety::Valid);
    assert_eq!(db.check_block(&PK, 21, root(3)).unwrap(), Safety::Valid);
}

#[test]
fn check_is_read_only() {
    let (_d, db) = open();
    assert_eq!(db.check_block(&PK, 1, root(1)).unwrap(), Safety::Valid);
    assert_eq!(db.check_block(&PK, 1, root(2)).unwrap(), Safety::Valid);
    assert_eq!(
        db.check_attestation(&PK, 1, 2, root(1)).unwrap(),
        Safety::Valid
    );
    assert_eq!(
        db.check_attestation(&PK, 1, 2, root(2)).unwrap(),
        Safety::Valid
    );
    assert!(db.export_interchange().is_err(), "no gvr yet");
    db.set_genesis_validators_root([0; 32]).unwrap();
    assert!(db.export_interchange().unwrap().data.is_empty());
}

#[test]
fn double_vote_refused_and_same_data_allowed() {
    let (_d, db) = open();
    assert_eq!(
        db.check_and_insert_attestation(&PK, 2, 3, root(1)).unwrap(),
        Safety::Valid
    );
    assert_eq!(
        db.check_and_insert_attestation(&PK, 2, 3, root(1)).unwrap(),
        Safety::SameData
    );
    let err = db
        .check_and_insert_attestation(&PK, 2, 3, root(2))
        .unwrap_err();
    assert!(
        matches!(
            err,
            SlashingError::DoubleVote {
                source_epoch: 2,
                target_epoch: 3,
                existing_source_epoch: 2
            }
        ),
        "{err}"
    );
    // Same target, different source: double vote even with the same root.
    assert!(matches!(
        db.check_attestation(&PK, 1, 3, root(1)),
        Err(SlashingError::DoubleVote {
            existing_source_epoch: 2,
            ..
        })
    ));
    // Unknown roots never count as same data.
    assert!(db.check_attestation(&PK, 2, 3, None).is_err());
    assert!(db.check_attestation(&PK, 2, 3, Some([0; 32])).is_err());
    assert_eq!(
        db.check_and_insert_attestation(&PK2, 2, 3, root(2))
            .unwrap(),
        Safety::Valid
    );
}

#[test]
fn surrounding_vote_refused() {
    let (_d, db) = open();
    db.check_and_insert_attestation(&PK, 3, 4, root(1)).unwrap();
    db.check_and_insert_attestation(&PK, 4, 6, root(1)).unwrap();
    db.check_and_insert_attestation(&PK, 6, 9, root(1)).unwrap();
    // (5, 10) surrounds (6, 9).
    let err = db.check_attestation(&PK, 5, 10, root(2)).unwrap_err();
    assert!(
        matches!(
            err,
            SlashingError::SurroundingVote {
                source_epoch: 5,
                target_epoch: 10,
                existing_source_epoch: 6,
                existing_target_epoch: 9
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("would surround"));
    // (6, 10) and (9, 10) surround nothing.
    assert_eq!(
        db.check_attestation(&PK, 6, 10, root(2)).unwrap(),
        Safety::Valid
    );
    assert_eq!(
        db.check_attestation(&PK, 9, 10, root(2)).unwrap(),
        Safety::Valid
    );
}

#[test]
fn surrounded_vote_refused() {
    let (_d, db) = open();
    db.check_and_insert_attestation(&PK, 2, 3, root(1)).unwrap();
    db.check_and_insert_attestation(&PK, 3, 10, root(1))
        .unwrap();
    // (4, 8) is surrounded by (3, 10).
    let err = db
        .check_and_insert_attestation(&PK, 4, 8, root(2))
        .unwrap_err();
    assert!(
        matches!(
            err,
            SlashingError::SurroundedVote {
                source_epoch: 4,
                target_epoch: 8,
                existing_source_epoch: 3,
                existing_target_epoch: 10
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("surrounded by"));
    // (3, 8) shares the source: not surrounded, and above the lower bounds.
    assert_eq!(
        db.check_and_insert_attestation(&PK, 3, 8, root(2)).unwrap(),
        Safety::Valid
    );
}

#[test]
fn source_exceeding_target_refused() {
    let (_d, db) = open();
    assert!(matches!(
        db.check_and_insert_attestation(&PK, 5, 4, root(1)),
        Err(SlashingError::SourceExceedsTarget {
            source_epoch: 5,
            target_epoch: 4
        })
    ));
    assert_eq!(
        db.check_and_insert_attestation(&PK, 4, 4, root(1)).unwrap(),
        Safety::Valid
    );
}

#[test]
fn attestation_lower_bounds() {
    let (_d, db) = open();
    db.check_and_insert_attestation(&PK, 5, 10, root(1))
        .unwrap();
    // Neither is slashable against (5, 10), but both are below the lowest recorded vote.
    assert!(matches!(
        db.check_attestation(&PK, 1, 9, root(2)),
        Err(SlashingError::BelowWatermark {
            bound: LowerBound::AttestationSource,
            value: 1,
            limit: 5
        })
    ));
    assert!(matches!(
        db.check_attestation(&PK, 5, 9, root(2)),
        Err(SlashingError::BelowWatermark {
            bound: LowerBound::AttestationTarget,
            value: 9,
            limit: 10
        })
    ));
    assert!(matches!(
        db.check_attestation(&PK, 4, 11, root(2)),
        Err(SlashingError::SurroundingVote {
            existing_source_epoch: 5,
            existing_target_epoch: 10,
            ..
        })
    ));
    assert_eq!(
        db.check_attestation(&PK, 5, 11, root(2)).unwrap(),
        Safety::Valid
    );
}

#[test]
fn import_sets_watermarks() {
    let (_d, db) = open();
    let summary = db
        .import_interchange(&interchange(
            1,
            vec![
                record(PK, &[15, 17, 16], &[(5, 15), (3, 4)]),
                record(PK2, &[], &[]),
            ],
        ))
        .unwrap();
    assert_eq!(
        summary,
        ImportSummary {
            validators: 2,
            blocks: 3,
            attestations: 2
        }
    );
    assert_eq!(db.genesis_validators_root().unwrap(), Some([1; 32]));

    for slot in [0, 16, 17] {
        assert!(
            matches!(
                db.check_block(&PK, slot, root(1)),
                Err(SlashingError::BelowWatermark {
                    bound: LowerBound::BlockSlot,
                    limit: 17,
                    ..
                })
            ),
            "slot {slot}"
        );
    }
    assert_eq!(db.check_block(&PK, 18, root(1)).unwrap(), Safety::Valid);
    assert!(matches!(
        db.check_attestation(&PK, 4, 16, root(1)),
        Err(SlashingError::BelowWatermark {
            bound: LowerBound::AttestationSource,
            limit: 5,
            ..
        })
    ));
    assert!(matches!(
        db.check_attestation(&PK, 5, 15, root(1)),
        Err(SlashingError::BelowWatermark {
            bound: LowerBound::AttestationTarget,
            limit: 15,
            ..
        })
    ));
    assert_eq!(
        db.check_attestation(&PK, 5, 16, root(1)).unwrap(),
        Safety::Valid
    );
    // PK2 had no history: no watermarks.
    assert_eq!(db.check_block(&PK2, 0, root(1)).unwrap(), Safety::Valid);

    // Export reproduces the watermarks; re-importing it elsewhere is as strict.
    let exported = db.export_interchange().unwrap();
    assert_eq!(exported.data.len(), 2);
    let (_d2, db2) = open();
    db2.import_interchange(&exported).unwrap();
    assert!(db2.check_block(&PK, 17, root(1)).is_err());
    assert!(db2.check_attestation(&PK, 5, 15, root(1)).is_err());
    assert!(db2.check_attestation(&PK, 4, 16, root(1)).is_err());
    assert_eq!(
        db2.check_attestation(&PK, 5, 16, root(1)).unwrap(),
        Safety::Valid
    );
}

#[test]
fn import_merges_with_recorded_history() {
    let (_d, db) = open();
    db.check_and_insert_block(&PK, 30, root(3)).unwrap();
    db.check_and_insert_attestation(&PK, 8, 9, root(3)).unwrap();
    // An older interchange raises the watermark to the highest recorded message.
    db.import_interchange(&interchange(0, vec![record(PK, &[20], &[(1, 2)])]))
        .unwrap();
    assert!(matches!(
        db.check_block(&PK, 29, root(1)),
        Err(SlashingError::BelowWatermark { limit: 30, .. })
    ));
    assert!(db.check_attestation(&PK, 8, 9, root(4)).is_err());
    // Re-signing what was recorded locally is still fine.
    assert_eq!(db.check_block(&PK, 30, root(3)).unwrap(), Safety::SameData);
    assert_eq!(
        db.check_attestation(&PK, 8, 9, root(3)).unwrap(),
        Safety::SameData
    );
    assert_eq!(
        db.check_attestation(&PK, 8, 10, root(4)).unwrap(),
        Safety::Valid
    );
    assert_eq!(db.check_block(&PK, 31, root(4)).unwrap(), Safety::Valid);
}

#[test]
fn gvr_set_once_and_mismatch_refused() {
    let (_d, db) = open();
    assert_eq!(db.genesis_validators_root().unwrap(), None);
    db.set_genesis_validators_root([7; 32]).unwrap();
    db.set_genesis_validators_root([7; 32]).unwrap();
    let err = db.set_genesis_validators_root([8; 32]).unwrap_err();
    assert!(matches!(
        err,
        SlashingError::GenesisValidatorsRootMismatch { .. }
    ));
    assert!(
        err.to_string()
            .contains(&format!("0x{}", hex::encode([7u8; 32]))),
        "{err}"
    );

    let err = db
        .import_interchange(&interchange(8, vec![record(PK, &[5], &[])]))
        .unwrap_err();
    assert!(
        matches!(err, SlashingError::GenesisValidatorsRootMismatch { .. }),
        "{err}"
    );
    assert_eq!(
        db.check_block(&PK, 5, root(1)).unwrap(),
        Safety::Valid,
        "nothing imported"
    );
    assert_eq!(db.genesis_validators_root().unwrap(), Some([7; 32]));
}

#[test]
fn import_refuses_unsupported_version() {
    let (_d, db) = open();
    let mut ic = interchange(0, vec![record(PK, &[5], &[])]);
    ic.metadata.interchange_format_version = 4;
    let err = db.import_interchange(&ic).unwrap_err();
    assert!(
        err.to_string().contains("interchange_format_version 4"),
        "{err}"
    );
    assert_eq!(db.genesis_validators_root().unwrap(), None);
}

#[test]
fn failed_import_rolls_back_everything() {
    let (_d, db) = open();
    let ic = interchange(
        3,
        vec![record(PK, &[100], &[(10, 11)]), record(PK2, &[100], &[])],
    );
    FAIL_IMPORT_AFTER.with(|f| f.set(Some(1)));
    let err = db.import_interchange(&ic).unwrap_err();
    FAIL_IMPORT_AFTER.with(|f| f.set(None));
    assert!(err.to_string().contains("injected"), "{err}");
    // Neither the first record's watermarks nor the genesis validators root were kept.
    assert_eq!(db.genesis_validators_root().unwrap(), None);
    assert_eq!(db.check_block(&PK, 50, root(1)).unwrap(), Safety::Valid);
    assert_eq!(
        db.check_attestation(&PK, 1, 2, root(1)).unwrap(),
        Safety::Valid
    );

    db.import_interchange(&ic).unwrap();
    assert!(db.check_block(&PK, 50, root(1)).is_err());
    assert!(db.check_block(&PK2, 100, root(1)).is_err());
}

#[test]
fn batch_insert_is_all_or_nothing() {
    let (_d, db) = open();
    let att = |s, t| SignedAttestation {
        source_epoch: s,
        target_epoch: t,
        signing_root: root(1),
    };
    let err = db
        .check_and_insert_attestations(&PK, &[att(1, 2), att(2, 3), att(0, 4)])
        .unwrap_err();
    assert!(
        matches!(err, SlashingError::SurroundingVote { .. }),
        "{err}"
    );
    assert_eq!(
        db.check_attestation(&PK, 1, 2, root(2)).unwrap(),
        Safety::Valid,
        "rolled back"
    );
    let res = db
        .check_and_insert_attestations(&PK, &[att(1, 2), att(2, 3), att(2, 3)])
        .unwrap();
    assert_eq!(res, vec![Safety::Valid, Safety::Valid, Safety::SameData]);

    let blk = |slot| SignedBlock {
        slot,
        signing_root: root(1),
    };
    assert!(db
        .check_and_insert_blocks(&PK, &[blk(5), blk(6), blk(4)])
        .is_err());
    assert_eq!(db.check_block(&PK, 5, root(2)).unwrap(), Safety::Valid);
    assert_eq!(
        db.check_and_insert_blocks(&PK, &[blk(5), blk(6)])
            .unwrap()
            .len(),
        2
    );
    assert!(db.check_block(&PK, 6, root(2)).is_err());
}

#[test]
fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slashing.redb");
    {
        let db = SlashingDb::open(&path).unwrap();
        db.set_genesis_validators_root([9; 32]).unwrap();
        db.check_and_insert_block(&PK, 7, root(1)).unwrap();
        db.check_and_insert_attestation(&PK, 1, 2, root(1)).unwrap();
    }
    let db = SlashingDb::open(&path).unwrap();
    assert_eq!(db.genesis_validators_root().unwrap(), Some([9; 32]));
    assert!(db.check_block(&PK, 7, root(2)).is_err());
    assert!(db.check_attestation(&PK, 1, 2, root(2)).is_err());
}

#[test]
fn open_reports_path_of_unusable_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.redb");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = SlashingDb::open(&path).unwrap_err();
    assert!(matches!(err, SlashingError::Open { .. }), "{err}");
    assert!(err.to_string().contains("garbage.redb"), "{err}");
}

#[test]
fn concurrent_conflicting_inserts_admit_exactly_one() {
    let (_d, db) = open();
    let db = std::sync::Arc::new(db);
    let handles: Vec<_> = (0..8u8)
        .map(|i| {
            let db = db.clone();
            std::thread::spawn(move || db.check_and_insert_attestation(&PK, 1, 2, root(i + 1)))
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let valid = results
        .iter()
        .filter(|r| matches!(r, Ok(Safety::Valid)))
        .count();
    let double = results
        .iter()
        .filter(|r| matches!(r, Err(SlashingError::DoubleVote { .. })))
        .count();
    assert_eq!((valid, double), (1, 7), "{results:?}");
}

/// Brute-force reference of the EIP-3076 attestation rules over a full history.
fn reference_check(
    history: &[(u64, u64, Option<[u8; 32]>)],
    s: u64,
    t: u64,
    r: Option<[u8; 32]>,
) -> Result<Safety, ()> {
    let r = normalize_root(r);
    if s > t {
        return Err(());
    }
    if let Some(&(es, _, er)) = history.iter().find(|a| a.1 == t) {
        return if es == s && er.is_some() && er == r {
            Ok(Safety::SameData)
        } else {
            Err(())
        };
    }
    if history
        .iter()
        .any(|&(es, et, _)| (es < s && et > t) || (es > s && et < t))
    {
        return Err(());
    }
    let min_source = history.iter().map(|a| a.0).min();
    let min_target = history.iter().map(|a| a.1).min();
    if min_source.is_some_and(|m| s < m) || min_target.is_some_and(|m| t <= m) {
        return Err(());
    }
    Ok(Safety::Valid)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The O(log n) neighbour-based surround check agrees with a brute-force scan.
    #[test]
    fn attestation_checks_match_brute_force(
        ops in prop::collection::vec((0u64..24, 0u64..24, 0u8..3), 1..40)
    ) {
        let (_d, db) = open();
        let mut history = Vec::new();
        for (s, t, r) in ops {
            let r = Some([r; 32]);
            let expected = reference_check(&history, s, t, r);
            let got = db.check_and_insert_attestation(&PK, s, t, r);
            match (&expected, &got) {
                (Ok(e), Ok(g)) => prop_assert_eq!(e, g),
                (Err(()), Err(e)) => prop_assert!(e.is_refusal(), "{}", e),
                _ => prop_assert!(false, "({}, {}) expected {:?}, got {:?}", s, t, expected, got),
            }
            if expected == Ok(Safety::Valid) {
                history.push((s, t, normalize_root(r)));
            }
        }
    }
}

#[test]
fn many_validators_in_one_transaction_each_checked_on_its_own() {
    let (_d, db) = open();
    let (a, b, c) = ([0xa1; 48], [0xb2; 48], [0xc3; 48]);
    let att = |s, t, r| SignedAttestation {
        source_epoch: s,
        target_epoch: t,
        signing_root: root(r),
    };
    db.check_and_insert_attestation(&b, 1, 2, root(1)).unwrap();
    // b's double vote is refused in its slot; a and c are recorded; c repeats itself.
    let res = db
        .check_and_insert_attestations_of_many(&[
            (a, att(1, 2, 1)),
            (b, att(1, 2, 2)),
            (c, att(1, 2, 1)),
            (c, att(1, 2, 1)),
        ])
        .unwrap();
    assert_eq!(res[0].as_ref().unwrap(), &Safety::Valid);
    assert!(
        matches!(res[1], Err(SlashingError::DoubleVote { .. })),
        "{res:?}"
    );
    assert_eq!(res[2].as_ref().unwrap(), &Safety::Valid);
    assert_eq!(res[3].as_ref().unwrap(), &Safety::SameData);
    for pk in [a, c] {
        assert!(matches!(
            db.check_attestation(&pk, 1, 2, root(2)),
            Err(SlashingError::DoubleVote { .. })
        ));
    }
    assert_eq!(
        db.check_attestation(&b, 1, 2, root(1)).unwrap(),
        Safety::SameData,
        "the refused record wrote nothing"
    );
    // Everything refused: nothing to commit, nothing written.
    let res = db
        .check_and_insert_attestations_of_many(&[(a, att(0, 3, 1))])
        .unwrap();
    assert!(matches!(res[0], Err(SlashingError::SurroundingVote { .. })));
    assert_eq!(
        db.check_attestation(&a, 2, 3, root(1)).unwrap(),
        Safety::Valid
    );
}
