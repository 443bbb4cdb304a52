//! The input of `dvlab analyze` (a report on validators of any chain a beacon node serves):
//! which validators (`--validators` / `--compare` SPEC), which epochs (`--epochs A..B`) and
//! which assertions (`--assert metric=expr`). Pure parsing; resolving public keys to indices
//! needs the beacon node and is done by `collect`.
//!
//! A SPEC is one of
//! - an index range `100..164` (half-open, as in Rust; `100..=163` is the same),
//! - a `cluster-lock.json` (dvnode's or Charon's: the `distributed_public_key` of each entry of
//!   `distributed_validators`),
//! - a text file of validator indices and/or `0x` BLS public keys, separated by white space or
//!   commas, `#` starting a comment.

use super::schema::{Comparison, Metric};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;

/// Validators named by a SPEC, before public keys are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorSpec {
    /// Where it came from (the argument as given), for messages.
    pub source: String,
    /// Name of the group in the report: a lock's cluster name, else empty (the caller names it).
    pub name: String,
    /// Validator indices named directly.
    pub indices: BTreeSet<u64>,
    /// Public keys (lower-case `0x` + 96 hex) to resolve through the beacon node, each with
    /// where it was named (`FILE:LINE` or `FILE: distributed_validators[i]`).
    pub pubkeys: Vec<(String, String)>,
}

/// Parses an index range `A..B` or `A..=B`; `None` when `s` is not range-shaped.
fn parse_range(s: &str, what: &str) -> Option<Result<Range<u64>>> {
    let (a, b, inclusive) = if let Some((a, b)) = s.split_once("..=") {
        (a, b, true)
    } else {
        let (a, b) = s.split_once("..")?;
        (a, b, false)
    };
    let num = |t: &str| -> Result<u64> {
        t.trim()
            .parse()
            .map_err(|_| anyhow!("`{t}` in {what} `{s}` is not a non-negative integer"))
    };
    Some((|| {
        let (a, b) = (num(a)?, num(b)?);
        let end = if inclusive { b.checked_add(1) } else { Some(b) }
            .ok_or_else(|| anyhow!("{what} `{s}` is too large"))?;
        if end <= a {
            bail!(
                "{what} `{s}` is empty (write A..B with B > A; B is excluded, A..=B includes it)"
            );
        }
        Ok(a..end)
    })())
}

/// Checks a BLS public key in hex and returns it lower-case with `0x`.
fn pubkey(token: &str, at: &str) -> Result<String> {
    let hex_part = token
        .strip_prefix("0x")
        .or_else(|| token.strip_prefix("0X"))
        .ok_or_else(|| {
            anyhow!("{at}: `{token}` is neither a validator index nor a 0x public key")
        })?;
    if hex_part.len() != 96 || hex::decode(hex_part).is_err() {
        bail!(
            "{at}: `{token}` is not a BLS public key (0x and 96 hex characters, got {} characters)",
            hex_part.len()
        );
    }
    Ok(format!("0x{}", hex_part.to_ascii_lowercase()))
}

impl ValidatorSpec {
    /// Parses a SPEC argument: a range, else a file (a JSON lock or a list).
    pub fn parse(arg: &str) -> Result<ValidatorSpec> {
        let mut spec = ValidatorSpec {
            source: arg.to_string(),
            name: String::new(),
            indices: BTreeSet::new(),
            pubkeys: Vec::new(),
        };
        let path = Path::new(arg);
        if !path.exists() {
            if let Some(r) = parse_range(arg, "validator range") {
                spec.indices.extend(r?);
                return Ok(spec);
            }
            bail!("validators `{arg}`: no such file, and not an index range such as 100..164");
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read validators file {arg}"))?;
        if text.trim_start().starts_with('{') {
            spec.read_lock(&text)?;
        } else {
            spec.read_list(&text)?;
        }
        if spec.indices.is_empty() && spec.pubkeys.is_empty() {
            bail!("validators file {arg} names no validator");
        }
        Ok(spec)
    }

    /// A cluster lock: dvnode's (`name`, `distributed_validators` at the top level) or
    /// Charon's (`cluster_definition.name`).
    fn read_lock(&mut self, text: &str) -> Result<()> {
        let src = &self.source;
        let v: Value = serde_json::from_str(text)
            .map_err(|e| anyhow!("{src}: not valid JSON (line {}): {e}", e.line()))?;
        let dvs = v
            .get("distributed_validators")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                anyhow!("{src}: a JSON validators file must be a cluster lock with a `distributed_validators` list")
            })?;
        self.name = v
            .get("name")
            .or_else(|| v.get("cluster_definition").and_then(|d| d.get("name")))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        for (i, dv) in dvs.iter().enumerate() {
            let at = format!("{src}: distributed_validators[{i}].distributed_public_key");
            let key = dv
                .get("distributed_public_key")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("{at} is missing or not a string"))?;
            let key = pubkey(key, &at)?;
            self.pubkeys.push((key, at));
        }
        Ok(())
    }

    /// A list of indices and public keys.
    fn read_list(&mut self, text: &str) -> Result<()> {
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default();
            for token in line
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|t| !t.is_empty())
            {
                let at = format!("{}:{}", self.source, n + 1);
                match token.parse::<u64>() {
                    Ok(i) => {
                        self.indices.insert(i);
                    }
                    Err(_) => {
                        let key = pubkey(token, &at)?;
                        self.pubkeys.push((key, at));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Epochs to analyse, `first..end` (half-open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochRange {
    /// First analysed epoch.
    pub first: u64,
    /// First epoch after the analysed ones.
    pub end: u64,
}

impl EpochRange {
    /// Parses `A..B` (B excluded) or `A..=B`.
    pub fn parse(s: &str) -> Result<EpochRange> {
        let r = parse_range(s, "epoch range").unwrap_or_else(|| {
            Err(anyhow!(
                "epoch range `{s}` must be A..B (B excluded) or A..=B, e.g. 100..110"
            ))
        })?;
        Ok(EpochRange {
            first: r.start,
            end: r.end,
        })
    }

    /// First analysed slot.
    pub fn first_slot(&self, slots_per_epoch: u64) -> u64 {
        self.first * slots_per_epoch
    }

    /// Last analysed slot (duties), inclusive.
    pub fn last_slot(&self, slots_per_epoch: u64) -> u64 {
        self.end * slots_per_epoch - 1
    }

    /// Last slot whose block can still include an attestation of the range: attestations
    /// are includable for one epoch after their slot.
    pub fn last_inclusion_slot(&self, slots_per_epoch: u64) -> u64 {
        self.last_slot(slots_per_epoch) + slots_per_epoch
    }

    /// Checks the range against the last complete slot of the chain (`head_slot`): every
    /// analysed slot and the epoch of inclusions after it must be behind it. The error says
    /// what to do.
    pub fn check_head(&self, slots_per_epoch: u64, head_slot: u64) -> Result<()> {
        let need = self.last_inclusion_slot(slots_per_epoch);
        if need > head_slot {
            let ready = ((head_slot + 1) / slots_per_epoch).saturating_sub(1);
            bail!(
                "epochs {}..{} reach beyond the head: their attestations can be included until \
                 slot {need}, the chain's last complete slot is {head_slot} (epoch {}); epochs \
                 before {ready} can be analysed now, or use --follow to collect as the chain grows",
                self.first,
                self.end,
                head_slot / slots_per_epoch,
            );
        }
        Ok(())
    }
}

/// Parses `--assert metric=expr` arguments (e.g. `dv_inclusion_rate=>=0.95`) into the
/// assertions map the report evaluates; an unknown metric or a bad expression is an error
/// listing the metrics.
pub fn parse_assertions(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in args {
        let (name, expr) = a.split_once('=').ok_or_else(|| {
            anyhow!("--assert `{a}` must be metric=expr, e.g. dv_inclusion_rate=>=0.95")
        })?;
        let name = name.trim();
        if Metric::parse(name).is_none() {
            let all: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
            bail!(
                "--assert `{a}`: unknown metric `{name}` (one of: {})",
                all.join(", ")
            );
        }
        Comparison::parse(expr).map_err(|e| anyhow!("--assert `{a}`: {e}"))?;
        out.insert(name.to_string(), expr.trim().to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "0xA99A76ED7796F7BE22D5B7E85DEEB7C5677E88E511E0B337618F8C4EB61349B4BF2D153F649F7B53359FE8B94A38E44C";

    fn key_b() -> String {
        format!("0x{}", "b1".repeat(48))
    }

    #[test]
    fn ranges_parse_and_bad_ones_are_named() {
        let s = ValidatorSpec::parse("100..164").unwrap();
        assert_eq!(s.indices.len(), 64);
        assert_eq!(s.indices.first(), Some(&100));
        assert_eq!(s.indices.last(), Some(&163));
        assert_eq!(ValidatorSpec::parse("3..=5").unwrap().indices.len(), 3);
        let e = ValidatorSpec::parse("164..100").unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let e = ValidatorSpec::parse("1..x").unwrap_err().to_string();
        assert!(e.contains("`x`"), "{e}");
        let e = ValidatorSpec::parse("/no/such/file")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such file"), "{e}");
    }

    #[test]
    fn list_files_mix_indices_and_pubkeys_with_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.txt");
        std::fs::write(
            &p,
            format!("# ours\n5, 7 9\n{KEY_A}  # a key\n\n{}\n", key_b()),
        )
        .unwrap();
        let s = ValidatorSpec::parse(p.to_str().unwrap()).unwrap();
        assert_eq!(s.indices.iter().copied().collect::<Vec<_>>(), [5, 7, 9]);
        assert_eq!(s.pubkeys.len(), 2);
        assert_eq!(s.pubkeys[0].0, KEY_A.to_ascii_lowercase());
        assert!(s.pubkeys[1].1.ends_with("v.txt:5"), "{}", s.pubkeys[1].1);
        std::fs::write(&p, "5\n0x1234\n").unwrap();
        let e = ValidatorSpec::parse(p.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("v.txt:2") && e.contains("not a BLS public key"),
            "{e}"
        );
        std::fs::write(&p, "5\nseven\n").unwrap();
        let e = ValidatorSpec::parse(p.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("v.txt:2") && e.contains("`seven`"), "{e}");
        std::fs::write(&p, "# nothing\n").unwrap();
        let e = ValidatorSpec::parse(p.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("names no validator"), "{e}");
    }

    #[test]
    fn cluster_locks_of_dvnode_and_charon() {
        let dir = tempfile::tempdir().unwrap();
        // A lock in dvnode's format.
        use dvnode::cluster::lock::{ClusterLock, DistributedValidator, LockContent};
        let keys = vec![KEY_A.to_ascii_lowercase(), key_b()];
        let content = LockContent {
            version: "v1".into(),
            name: "dv0".into(),
            uuid: "u".into(),
            threshold: 3,
            fork_version: "0x00000000".into(),
            genesis_validators_root: format!("0x{}", "00".repeat(32)),
            operators: vec![],
            distributed_validators: keys
                .iter()
                .map(|k| DistributedValidator {
                    distributed_public_key: k.clone(),
                    public_shares: vec![],
                })
                .collect(),
            definition_hash: None,
        };
        let lock_json =
            serde_json::to_string_pretty(&ClusterLock::from_signatures(content, vec![])).unwrap();
        let p = dir.path().join("cluster-lock.json");
        std::fs::write(&p, &lock_json).unwrap();
        let s = ValidatorSpec::parse(p.to_str().unwrap()).unwrap();
        assert_eq!(s.name, "dv0");
        assert_eq!(
            s.pubkeys.iter().map(|k| k.0.clone()).collect::<Vec<_>>(),
            keys
        );
        assert!(s.indices.is_empty());
        // Charon's shape: the name inside cluster_definition.
        let charon = format!(
            r#"{{"cluster_definition": {{"name": "prod"}}, "distributed_validators": [{{"distributed_public_key": "{KEY_A}", "public_shares": []}}], "lock_hash": "0x00"}}"#
        );
        std::fs::write(&p, charon).unwrap();
        let s = ValidatorSpec::parse(p.to_str().unwrap()).unwrap();
        assert_eq!((s.name.as_str(), s.pubkeys.len()), ("prod", 1));
        std::fs::write(
            &p,
            r#"{"distributed_validators": [{"distributed_public_key": "0x12"}]}"#,
        )
        .unwrap();
        let e = ValidatorSpec::parse(p.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("distributed_validators[0].distributed_public_key"),
            "{e}"
        );
        std::fs::write(&p, r#"{"validators": []}"#).unwrap();
        let e = ValidatorSpec::parse(p.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("cluster lock"), "{e}");
        std::fs::write(&p, "{\n\"a\": ,}").unwrap();
        let e = ValidatorSpec::parse(p.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn epoch_ranges_and_the_head() {
        let r = EpochRange::parse("2..5").unwrap();
        assert_eq!((r.first, r.end), (2, 5));
        assert_eq!((r.first_slot(8), r.last_slot(8)), (16, 39));
        assert_eq!(r.last_inclusion_slot(8), 47);
        assert_eq!(EpochRange::parse("2..=4").unwrap(), r);
        assert!(EpochRange::parse("5..5").is_err());
        assert!(EpochRange::parse("5")
            .unwrap_err()
            .to_string()
            .contains("A..B"));
        assert!(r.check_head(8, 47).is_ok());
        let e = r.check_head(8, 46).unwrap_err().to_string();
        assert!(
            e.contains("beyond the head") && e.contains("--follow"),
            "{e}"
        );
        assert!(e.contains("slot 47") && e.contains("slot is 46"), "{e}");
        assert!(e.contains("before 4 can"), "{e}");
        // Before the first epoch is complete nothing can be analysed, without underflow.
        assert!(r
            .check_head(8, 3)
            .unwrap_err()
            .to_string()
            .contains("before 0"));
    }

    #[test]
    fn assertions_name_known_metrics() {
        let a = parse_assertions(&["dv_inclusion_rate=>= 0.95".into()]).unwrap();
        assert_eq!(a["dv_inclusion_rate"], ">= 0.95");
        let e = parse_assertions(&["dv_rate=>=1".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown metric `dv_rate`") && e.contains("dv_inclusion_rate"),
            "{e}"
        );
        let e = parse_assertions(&["dv_inclusion_rate=0.9".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("must start with"), "{e}");
        assert!(parse_assertions(&["dv_inclusion_rate".into()]).is_err());
    }
}
