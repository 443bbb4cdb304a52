//! `dvnode slashing import|export`: move EIP-3076 interchange files in and out of the node's
//! slashing protection database (`<data-dir>/slashing.redb`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{interchange::parse_hex, interchange::Interchange, SlashingDb};

/// File name of the slashing protection database inside the node's data directory.
pub const DB_FILE_NAME: &str = "slashing.redb";

/// The slashing protection database path for a data directory.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE_NAME)
}

/// Slashing protection interchange (EIP-3076, format v5) commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum SlashingCmd {
    /// Import an interchange file into the slashing protection database (all or nothing).
    Import {
        /// Node data directory; the database is `<data-dir>/slashing.redb`.
        #[arg(long)]
        data_dir: PathBuf,
        /// Interchange JSON file to import.
        file: PathBuf,
        /// Genesis validators root (0x-prefixed hex) the history must belong to. Defaults to the
        /// one stored in the database, else the file's (which is then stored).
        #[arg(long)]
        genesis_validators_root: Option<String>,
    },
    /// Export the slashing protection database as an interchange file (written atomically).
    Export {
        /// Node data directory; the database is `<data-dir>/slashing.redb`.
        #[arg(long)]
        data_dir: PathBuf,
        /// Interchange JSON file to write.
        file: PathBuf,
        /// Genesis validators root (0x-prefixed hex) to export for. Must match the database's;
        /// required if the database has none yet (it is then stored).
        #[arg(long)]
        genesis_validators_root: Option<String>,
    },
}

impl SlashingCmd {
    /// Runs the command, printing a one-line summary on success.
    pub fn run(self) -> Result<()> {
        match self {
            SlashingCmd::Import {
                data_dir,
                file,
                genesis_validators_root,
            } => {
                let gvr = parse_gvr_flag(genesis_validators_root.as_deref())?;
                let bytes =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                let interchange = Interchange::from_json_slice(&bytes)
                    .with_context(|| format!("parsing interchange file {}", file.display()))?;
                let db = open_db(&data_dir)?;
                if let Some(gvr) = gvr {
                    db.set_genesis_validators_root(gvr)
                        .context("--genesis-validators-root does not match the database")?;
                }
                let summary = db.import_interchange(&interchange).with_context(|| {
                    format!("importing {} into {}", file.display(), db.path().display())
                })?;
                println!(
                    "imported {} from {} into {} (nothing was imported if an error occurred)",
                    summary,
                    file.display(),
                    db.path().display()
                );
                Ok(())
            }
            SlashingCmd::Export {
                data_dir,
                file,
                genesis_validators_root,
            } => {
                let gvr = parse_gvr_flag(genesis_validators_root.as_deref())?;
                let db = open_db(&data_dir)?;
                if let Some(gvr) = gvr {
                    db.set_genesis_validators_root(gvr)
                        .context("--genesis-validators-root does not match the database")?;
                }
                let interchange = db.export_interchange().with_context(|| {
                    format!(
                        "exporting {} (pass --genesis-validators-root if none is stored)",
                        db.path().display()
                    )
                })?;
                let json = interchange.to_json_pretty()?;
                crate::util::write_file(&file, &json, 0o644)
                    .with_context(|| format!("writing {}", file.display()))?;
                let (blocks, atts) = interchange.data.iter().fold((0, 0), |(b, a), d| {
                    (b + d.signed_blocks.len(), a + d.signed_attestations.len())
                });
                println!(
                    "exported {} validator(s), {} signed block(s), {} signed attestation(s) to {}",
                    interchange.data.len(),
                    blocks,
                    atts,
                    file.display()
                );
                Ok(())
            }
        }
    }
}

fn parse_gvr_flag(flag: Option<&str>) -> Result<Option<[u8; 32]>> {
    flag.map(|s| {
        parse_hex::<32>(s)
            .map_err(anyhow::Error::msg)
            .context("invalid --genesis-validators-root")
    })
    .transpose()
}

fn open_db(data_dir: &Path) -> Result<SlashingDb> {
    Ok(SlashingDb::open(&db_path(data_dir))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slashing::Safety;

    const PK: &str = "0xb845089a1457f811bfc000588fbb4e713669be8ce060ea6be3c6ece09afc3794106c91ca73acda5e5457122d58723bed";

    fn interchange_json(gvr_last_byte: u8) -> String {
        format!(
            r#"{{"metadata": {{"interchange_format_version": "5",
                "genesis_validators_root": "0x{}{:02x}"}},
              "data": [{{"pubkey": "{PK}",
                "signed_blocks": [{{"slot": "100"}}],
                "signed_attestations": [{{"source_epoch": "5", "target_epoch": "6"}}]}}]}}"#,
            "00".repeat(31),
            gvr_last_byte
        )
    }

    #[derive(clap::Parser)]
    struct TestCli {
        #[command(subcommand)]
        cmd: SlashingCmd,
    }

    #[test]
    fn parses_command_line() {
        use clap::{CommandFactory, Parser};
        TestCli::command().debug_assert();
        let cli = TestCli::try_parse_from([
            "dvnode",
            "import",
            "--data-dir",
            "/data",
            "in.json",
            "--genesis-validators-root",
            "0x01",
        ])
        .unwrap();
        match cli.cmd {
            SlashingCmd::Import {
                data_dir,
                file,
                genesis_validators_root,
            } => {
                assert_eq!(data_dir, PathBuf::from("/data"));
                assert_eq!(file, PathBuf::from("in.json"));
                assert_eq!(genesis_validators_root.as_deref(), Some("0x01"));
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli =
            TestCli::try_parse_from(["dvnode", "export", "--data-dir", "/d", "out.json"]).unwrap();
        assert!(matches!(
            cli.cmd,
            SlashingCmd::Export {
                genesis_validators_root: None,
                ..
            }
        ));
        assert!(
            TestCli::try_parse_from(["dvnode", "export", "out.json"]).is_err(),
            "data dir required"
        );
    }

    #[test]
    fn import_then_export_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("node0");
        let file = dir.path().join("in.json");
        std::fs::write(&file, interchange_json(7)).unwrap();
        SlashingCmd::Import {
            data_dir: data_dir.clone(),
            file,
            genesis_validators_root: None,
        }
        .run()
        .unwrap();

        let out = dir.path().join("out.json");
        SlashingCmd::Export {
            data_dir: data_dir.clone(),
            file: out.clone(),
            genesis_validators_root: None,
        }
        .run()
        .unwrap();
        let exported = Interchange::from_json_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(exported.metadata.genesis_validators_root[31], 7);
        assert_eq!(exported.data.len(), 1);
        assert_eq!(exported.data[0].signed_blocks[0].slot, 100);
        assert_eq!(exported.data[0].signed_attestations[0].target_epoch, 6);

        let db = SlashingDb::open(&db_path(&data_dir)).unwrap();
        let pk = parse_hex::<48>(PK).unwrap();
        assert!(db.check_block(&pk, 100, None).is_err());
        assert_eq!(db.check_block(&pk, 101, None).unwrap(), Safety::Valid);
    }

    #[test]
    fn import_refuses_wrong_gvr_flag_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        let file = dir.path().join("in.json");
        std::fs::write(&file, interchange_json(1)).unwrap();
        let flag = Some(format!("0x{}02", "00".repeat(31)));
        let err = SlashingCmd::Import {
            data_dir: data_dir.clone(),
            file: file.clone(),
            genesis_validators_root: flag,
        }
        .run()
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("genesis validators root mismatch"),
            "{err:#}"
        );
        // The flag was stored; the file's history was not imported.
        let db = SlashingDb::open(&db_path(&data_dir)).unwrap();
        assert_eq!(db.genesis_validators_root().unwrap().unwrap()[31], 2);
        let pk = parse_hex::<48>(PK).unwrap();
        assert_eq!(db.check_block(&pk, 100, None).unwrap(), Safety::Valid);
        drop(db);

        let err = SlashingCmd::Import {
            data_dir,
            file,
            genesis_validators_root: Some("0x12".into()),
        }
        .run()
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("invalid --genesis-validators-root"),
            "{err:#}"
        );
    }

    #[test]
    fn export_without_gvr_explains() {
        let dir = tempfile::tempdir().unwrap();
        let err = SlashingCmd::Export {
            data_dir: dir.path().to_path_buf(),
            file: dir.path().join("out.json"),
            genesis_validators_root: None,
        }
        .run()
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("--genesis-validators-root"),
            "{err:#}"
        );
        assert!(!dir.path().join("out.json").exists());
    }

    #[test]
    fn import_reports_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.json");
        std::fs::write(&file, "{\"metadata\": 1}").unwrap();
        let err = SlashingCmd::Import {
            data_dir: dir.path().to_path_buf(),
            file: file.clone(),
            genesis_validators_root: None,
        }
        .run()
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("bad.json") && msg.contains("invalid interchange"),
            "{msg}"
        );
    }
}
