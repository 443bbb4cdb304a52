//! A supervisor for the local processes of an end-to-end run.
//!
//! Every process is started in its own process group (so the wrappers and helpers a client
//! starts go with it) with stdout and stderr appended to `<log_dir>/<name>.log`, and with
//! `PR_SET_PDEATHSIG` so it dies if the harness itself is killed. Dropping the [`Supervisor`]
//! (normal exit, error, panic unwind, or a caught Ctrl-C/SIGTERM that returns from `main`)
//! sends SIGTERM to every group, waits a grace period, then SIGKILLs what is left.

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io,
    os::unix::process::{CommandExt, ExitStatusExt},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};

/// How long [`Supervisor::shutdown`] waits after SIGTERM before it SIGKILLs.
pub const GRACE_PERIOD: Duration = Duration::from_secs(5);

struct Managed {
    child: Child,
    /// Set once the harness stopped the process on purpose (kill or shutdown).
    stopped: bool,
}

/// Starts, tracks and stops named child processes (one process group each).
pub struct Supervisor {
    log_dir: PathBuf,
    procs: Mutex<BTreeMap<String, Managed>>,
}

/// `ExitStatus` as text: `exit code N` or `signal N`.
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => status.to_string(),
    }
}

/// Sends `sig` to the process group `pgid`. A group that is already gone is not an error.
fn kill_group(pgid: u32, sig: libc::c_int) -> io::Result<()> {
    let pgid = libc::pid_t::try_from(pgid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: killpg has no memory-safety preconditions; pgid is a group we created.
    let rc = unsafe { libc::killpg(pgid, sig) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}

impl Supervisor {
    /// A supervisor writing process logs under `log_dir` (created if missing).
    pub fn new(log_dir: impl Into<PathBuf>) -> Result<Self> {
        let log_dir = log_dir.into();
        fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating log directory {}", log_dir.display()))?;
        Ok(Self {
            log_dir,
            procs: Mutex::new(BTreeMap::new()),
        })
    }

    /// The log file of process `name`.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.log_dir.join(format!("{name}.log"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Managed>> {
        // A panic while holding the lock leaves the map usable; recover it so shutdown works.
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts `cmd` as process `name` (a name may be reused once its previous process was
    /// killed). Returns its pid, which is also its process group id.
    ///
    /// Spawn from the thread that runs `main` (the top-level future of the runtime): the
    /// parent-death signal is tied to the spawning thread.
    pub fn spawn(&self, name: &str, mut cmd: Command) -> Result<u32> {
        let mut procs = self.lock();
        if let Some(m) = procs.get_mut(name) {
            if !m.stopped && m.child.try_wait()?.is_none() {
                bail!("process {name} is already running (pid {})", m.child.id());
            }
        }
        let log = self.log_path(name);
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening log file {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({program})"))?;
        let pid = child.id();
        tracing::info!(name, pid, log = %log.display(), "started");
        procs.insert(
            name.to_string(),
            Managed {
                child,
                stopped: false,
            },
        );
        Ok(pid)
    }

    /// The pid of process `name` if it is running.
    pub fn pid(&self, name: &str) -> Option<u32> {
        let mut procs = self.lock();
        let m = procs.get_mut(name)?;
        match m.child.try_wait() {
            Ok(None) => Some(m.child.id()),
            _ => None,
        }
    }

    /// Names of the running processes whose name starts with `prefix`, with their pids.
    pub fn running(&self, prefix: &str) -> Vec<(String, u32)> {
        let mut procs = self.lock();
        procs
            .iter_mut()
            .filter(|(n, _)| n.starts_with(prefix))
            .filter_map(|(n, m)| match m.child.try_wait() {
                Ok(None) => Some((n.clone(), m.child.id())),
                _ => None,
            })
            .collect()
    }

    /// SIGKILLs the process group of `name` and reaps the process.
    pub fn kill(&self, name: &str) -> Result<()> {
        let mut procs = self.lock();
        let m = procs
            .get_mut(name)
            .ok_or_else(|| anyhow!("no process named {name}"))?;
        m.stopped = true;
        kill_group(m.child.id(), libc::SIGKILL)
            .with_context(|| format!("SIGKILL to process group of {name}"))?;
        let status = m.child.wait()?;
        tracing::info!(name, status = %describe(status), "killed");
        Ok(())
    }

    /// Fails naming every process that exited although the harness did not stop it.
    pub fn check_alive(&self) -> Result<()> {
        let mut procs = self.lock();
        let mut dead = Vec::new();
        for (name, m) in procs.iter_mut() {
            if m.stopped {
                continue;
            }
            if let Some(status) = m.child.try_wait()? {
                dead.push(format!("{name} ({})", describe(status)));
            }
        }
        if dead.is_empty() {
            Ok(())
        } else {
            bail!(
                "process(es) exited unexpectedly: {}; see logs in {}",
                dead.join(", "),
                self.log_dir.display()
            )
        }
    }

    /// Stops everything: SIGTERM to every group, up to [`GRACE_PERIOD`] to exit, then
    /// SIGKILL. Idempotent.
    pub fn shutdown(&self) {
        let mut procs = self.lock();
        let mut any = false;
        for m in procs.values_mut() {
            if !matches!(m.child.try_wait(), Ok(None)) {
                continue;
            }
            any = true;
            m.stopped = true;
            if let Err(e) = kill_group(m.child.id(), libc::SIGTERM) {
                tracing::warn!(pid = m.child.id(), error = %e, "SIGTERM failed");
            }
        }
        if !any {
            return;
        }
        let deadline = Instant::now() + GRACE_PERIOD;
        loop {
            let all_done = procs
                .values_mut()
                .all(|m| !matches!(m.child.try_wait(), Ok(None)));
            if all_done || Instant::now() >= deadline {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        for (name, m) in procs.iter_mut() {
            // SIGKILL the group even if its leader exited: helpers may linger in it.
            let _ = kill_group(m.child.id(), libc::SIGKILL);
            if let Ok(status) = m.child.wait() {
                tracing::debug!(name, status = %describe(status), "stopped");
            }
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Peak resident set size (`VmHWM`, KiB) of a running process, from `/proc/<pid>/status`.
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    let path = Path::new("/proc").join(pid.to_string()).join("status");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse_vm_hwm(&text).ok_or_else(|| anyhow!("no VmHWM line in {}", path.display()))
}

/// The `VmHWM:  1234 kB` value of a `/proc/<pid>/status` text, in KiB.
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Creates (truncating) a file, with the path in the error.
pub fn create_file(path: &Path) -> Result<File> {
    File::create(path).with_context(|| format!("creating {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_parses() {
        let s = "Name:\tdvnode\nVmPeak:\t  100 kB\nVmHWM:\t   52344 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(parse_vm_hwm(s), Some(52344));
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
    }

    #[test]
    fn kill_stops_whole_group_and_drop_stops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new(dir.path()).unwrap();
        // The shell's background child is in the same group and must die with it.
        let mut cmd = Command::new("bash");
        cmd.args(["-c", "sleep 300 & echo child=$!; wait"]);
        let pid = sup.spawn("grp", cmd).unwrap();
        let mut other = Command::new("sleep");
        other.arg("300");
        let other_pid = sup.spawn("other", other).unwrap();
        // Wait for the child pid to appear in the log.
        let log = sup.log_path("grp");
        let deadline = Instant::now() + Duration::from_secs(10);
        let child_pid: i32 = loop {
            let text = fs::read_to_string(&log).unwrap_or_default();
            if let Some(p) = text.trim().strip_prefix("child=") {
                break p.parse().unwrap();
            }
            assert!(Instant::now() < deadline, "child never reported its pid");
            thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(sup.pid("grp"), Some(pid));
        sup.kill("grp").unwrap();
        assert_eq!(sup.pid("grp"), None);
        let gone = |p: i32| {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                // A zombie (reparented to init, not yet reaped) counts as gone.
                let stat = fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                if stat.is_empty() || stat.contains(") Z ") {
                    return true;
                }
                if Instant::now() > deadline {
                    return false;
                }
                thread::sleep(Duration::from_millis(20));
            }
        };
        assert!(gone(child_pid), "background child survived the group kill");
        sup.check_alive().unwrap();
        drop(sup);
        assert!(
            gone(other_pid as i32),
            "drop did not stop the other process"
        );
    }

    #[test]
    fn unexpected_exit_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new(dir.path()).unwrap();
        let mut cmd = Command::new("bash");
        cmd.args(["-c", "exit 3"]);
        sup.spawn("quitter", cmd).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while sup.pid("quitter").is_some() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let err = sup.check_alive().unwrap_err().to_string();
        assert!(err.contains("quitter (exit code 3)"), "{err}");
    }
}
