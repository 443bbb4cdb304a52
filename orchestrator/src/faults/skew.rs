//! Clock skew: libfaketime preloaded into the containers a `clock_skew` fault targets, reading
//! its offset from a bind-mounted file that the executor rewrites mid-run.

use crate::plan::{ContainerPlan, Mount, Plan};
use crate::spec::{DevnetSpec, FaultKind};
use anyhow::{anyhow, Context, Result};
use std::collections::BTreeSet;
use std::path::Path;

/// libfaketime's preload library in the Debian base image.
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// Directory inside a skewed container holding the offset file (bind mount, read-only).
pub const CLOCK_DIR: &str = "/dvlab-clock";
/// Name of the offset file in [`CLOCK_DIR`] and in the host clock directory.
pub const CLOCK_FILE: &str = "offset";

/// Host directory (relative to the run directory) holding the clock offset file of `short`.
pub fn clock_dir(short: &str) -> String {
    format!("faults/clock/{short}")
}

/// Environment that preloads libfaketime reading its offset from [`CLOCK_DIR`]/[`CLOCK_FILE`].
/// The monotonic clock stays real (timers keep working); the offset is re-read at most once a
/// second.
pub fn faketime_env() -> Vec<String> {
    vec![
        format!("LD_PRELOAD={FAKETIME_LIB}"),
        format!("FAKETIME_TIMESTAMP_FILE={CLOCK_DIR}/{CLOCK_FILE}"),
        "FAKETIME_CACHE_DURATION=1".into(),
        "FAKETIME_DONT_FAKE_MONOTONIC=1".into(),
    ]
}

/// Writes a libfaketime offset file atomically (write + rename in the same directory).
pub fn write_offset(dir: &Path, offset_secs: f64) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{CLOCK_FILE}.tmp"));
    // libfaketime reads "+N" / "-N" (seconds, fractions allowed) as a relative offset.
    let text = if offset_secs == 0.0 {
        "+0\n".to_string()
    } else {
        format!("{offset_secs:+.3}\n")
    };
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(CLOCK_FILE))
        .with_context(|| format!("replacing the offset file in {}", dir.display()))?;
    Ok(())
}

/// The plan hook: containers targeted by a `clock_skew` fault start with libfaketime
/// preloaded and the (read-only) bind mount of their offset directory; the offset files are
/// created in `run_dir` with `+0`. Call after [`Plan::new`] and before the containers start.
pub fn prepare_containers(spec: &DevnetSpec, plan: &mut Plan, run_dir: &Path) -> Result<()> {
    let skewed: BTreeSet<&str> = spec
        .faults
        .iter()
        .filter(|f| f.kind == FaultKind::ClockSkew)
        .filter_map(|f| f.target.as_deref())
        .collect();
    for short in skewed {
        let name = format!("dvlab-{}-{short}", plan.run);
        let c: &mut ContainerPlan = plan
            .containers
            .iter_mut()
            .find(|c| c.name == name)
            .ok_or_else(|| anyhow!("clock_skew target `{short}` is not a planned container"))?;
        c.env.extend(faketime_env());
        c.mounts.push(Mount {
            host: clock_dir(short),
            container: CLOCK_DIR.into(),
            writable: false,
            secret: false,
        });
        write_offset(&run_dir.join(clock_dir(short)), 0.0)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::test_support::spec_with;

    #[test]
    fn prepare_adds_faketime_to_skewed_containers_only() {
        let spec = spec_with(
            "  - {at: 30s, kind: clock_skew, target: dv0-2, offset: +3s, for: 1 epoch}\n",
            1,
        );
        let mut plan = Plan::new(&spec, 0);
        let dir = tempfile::tempdir().unwrap();
        prepare_containers(&spec, &mut plan, dir.path()).unwrap();
        let c = plan
            .containers
            .iter()
            .find(|c| c.name == "dvlab-basic-dv0-2")
            .unwrap();
        assert!(c
            .env
            .iter()
            .any(|e| e.starts_with("LD_PRELOAD=") && e.contains("libfaketime")));
        assert!(c
            .env
            .contains(&"FAKETIME_DONT_FAKE_MONOTONIC=1".to_string()));
        assert_eq!(
            c.mounts.last().unwrap(),
            &Mount {
                host: "faults/clock/dv0-2".to_string(),
                container: CLOCK_DIR.to_string(),
                writable: false,
                secret: false,
            }
        );
        let n = plan
            .containers
            .iter()
            .filter(|c| c.env.iter().any(|e| e.starts_with("LD_PRELOAD")))
            .count();
        assert_eq!(n, 1);
        let text = std::fs::read_to_string(dir.path().join("faults/clock/dv0-2/offset")).unwrap();
        assert_eq!(text, "+0\n");
        write_offset(&dir.path().join("faults/clock/dv0-2"), -2.5).unwrap();
        let text = std::fs::read_to_string(dir.path().join("faults/clock/dv0-2/offset")).unwrap();
        assert_eq!(text, "-2.500\n");
    }
}
