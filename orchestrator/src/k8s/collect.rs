//! What `dvlab run --backend kubernetes` needs from a running cluster to collect as in Docker:
//! local URLs of the beacon nodes' REST APIs and the dvnodes' metrics (a port-forward through
//! the API per connection), the liveness of the run's pods (phases, container states and
//! restart counts, intended-down pods exempt), the dvnodes' duty logs (`cat` by exec) and the
//! fault timer's `faults.jsonl` (the `dvlab-faults` Job's pod log).

use super::FAULTS_NAME;
use crate::plan::{ContainerPlan, Plan, Role, DUTY_LOG_FILE, DVNODE_OUT_DIR, ROLE_LABEL};
use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, ListParams, LogParams};
use std::collections::HashMap;
use std::path::Path;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The pod of a planned container: its StatefulSet's only replica.
pub fn pod_name(c: &ContainerPlan) -> String {
    format!("{}-0", c.name)
}

/// A local listener forwarding every connection to a pod's port through the API; aborts its
/// task when dropped.
pub struct Forward {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    task: JoinHandle<()>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards `127.0.0.1:<ephemeral>` to `port` of pod `pod`: one port-forward stream per
/// accepted connection, so a pod the StatefulSet replaced is reached by the next connection.
pub async fn forward(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    port: u16,
) -> Result<Forward> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a local port-forward listener")?;
    let url = format!("http://{}", listener.local_addr()?);
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = pod.to_string();
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let api = api.clone();
            let pod = pod.clone();
            tokio::spawn(async move {
                // A pod that is down (a crash fault) refuses the stream: the collector sees a
                // closed connection, as from a stopped container in Docker.
                let Ok(mut pf) = api.portforward(&pod, &[port]).await else {
                    return;
                };
                if let Some(mut upstream) = pf.take_stream(port) {
                    let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
                }
                let _ = pf.join().await;
            });
        }
    });
    Ok(Forward { url, task })
}

/// The run's pods on a cluster, for the collection loop.
pub struct Cluster {
    /// API client.
    pub client: kube::Client,
    /// The run's namespace.
    pub namespace: String,
    /// Restart counts seen at the previous check (pod/container → count).
    restarts: HashMap<String, i32>,
}

impl Cluster {
    /// The run in `namespace`.
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Cluster {
            client,
            namespace: namespace.to_string(),
            restarts: HashMap::new(),
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Fails, naming the container with its last log lines, when a workload of `plan` (every
    /// container but Prometheus, which is not rendered) is not running or restarted since the
    /// previous check, unless its full name is in `exempt` (a crash, stop or pause fault
    /// intends it down — the Kubernetes counterpart of Docker's `check_alive`). The kubelet
    /// restarts a process that died, so a restart is what Docker sees as an exited container.
    pub async fn check_alive(&mut self, plan: &Plan, exempt: &[String]) -> Result<()> {
        let api = self.pods();
        let list = api
            .list(&ListParams::default().labels(&super::run_selector(&plan.run)))
            .await
            .context("listing the run's pods")?;
        let by_name: HashMap<&str, &Pod> = list
            .items
            .iter()
            .filter_map(|p| Some((p.metadata.name.as_deref()?, p)))
            .collect();
        // Every restart count is recorded before the first failure is reported, so that the
        // next check compares with this one.
        let mut failure: Option<(String, &str, String, String, bool)> = None;
        for c in plan
            .containers
            .iter()
            .filter(|c| c.role != Role::Prometheus)
        {
            let pod_name = pod_name(c);
            let container = super::objects::container_name(c);
            let status = by_name.get(pod_name.as_str()).and_then(|p| {
                p.status
                    .as_ref()?
                    .container_statuses
                    .as_ref()?
                    .iter()
                    .find(|s| s.name == container)
            });
            let restarts = status.map_or(0, |s| s.restart_count);
            let before = self
                .restarts
                .insert(format!("{pod_name}/{container}"), restarts)
                .unwrap_or(0);
            if exempt.contains(&c.name) || failure.is_some() {
                continue;
            }
            let running = status
                .and_then(|s| s.state.as_ref())
                .is_some_and(|s| s.running.is_some());
            let why = match status {
                None => "has no running pod".to_string(),
                Some(_) if !running => "is not running".to_string(),
                Some(_) if restarts > before => {
                    format!(
                        "restarted ({} time(s) since the last check)",
                        restarts - before
                    )
                }
                Some(_) => continue,
            };
            let detail = status
                .and_then(|s| s.last_state.as_ref().or(s.state.as_ref()))
                .and_then(|s| s.terminated.as_ref())
                .map(|t| {
                    format!(
                        " (exit code {}{})",
                        t.exit_code,
                        t.reason
                            .as_ref()
                            .map(|r| format!(", {r}"))
                            .unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            failure = Some((pod_name, container, why, detail, restarts > 0));
        }
        if let Some((pod_name, container, why, detail, previous)) = failure {
            let logs = api
                .logs(
                    &pod_name,
                    &LogParams {
                        container: Some(container.to_string()),
                        tail_lines: Some(15),
                        previous,
                        ..Default::default()
                    },
                )
                .await
                .unwrap_or_default();
            bail!(
                "container {container} of pod {pod_name} {why}{detail}; last log lines:\n{}",
                logs.trim_end()
            );
        }
        Ok(())
    }

    /// Copies every dvnode's duty log into `OUT/nodes/<container>/` (where a Docker run's
    /// bind mount puts it) by `cat` in its pod, and the fault timer's log to
    /// `OUT/faults.jsonl`. A node whose log cannot be read is a warning (the collection
    /// warns again when the file is missing), as in Docker.
    pub async fn fetch_outputs(&self, plan: &Plan, out: &Path) -> Result<()> {
        for c in plan
            .containers
            .iter()
            .filter(|c| matches!(c.role, Role::DvNode { .. }))
        {
            let dir = out.join("nodes").join(&c.name);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            match self
                .read_file(c, &format!("{DVNODE_OUT_DIR}/{DUTY_LOG_FILE}"))
                .await
            {
                Ok(text) => std::fs::write(dir.join(DUTY_LOG_FILE), text)?,
                Err(e) => eprintln!("warning: duty log of {}: {e:#}", c.name),
            }
        }
        if let Some(log) = self.fault_log().await? {
            std::fs::write(out.join("faults.jsonl"), log)?;
        }
        Ok(())
    }

    /// The text of `path` in the pod of `c` (`cat` by exec).
    async fn read_file(&self, c: &ContainerPlan, path: &str) -> Result<String> {
        let pod = pod_name(c);
        let mut p = self
            .pods()
            .exec(
                &pod,
                ["cat", path],
                &AttachParams::default()
                    .container(super::objects::container_name(c))
                    .stderr(false),
            )
            .await
            .with_context(|| format!("exec `cat {path}` in pod {pod}"))?;
        let mut text = String::new();
        if let Some(mut stdout) = p.stdout() {
            stdout.read_to_string(&mut text).await?;
        }
        let status = match p.take_status() {
            Some(s) => s.await,
            None => None,
        };
        p.join().await.ok();
        if let Some(s) = status.filter(|s| s.status.as_deref() == Some("Failure")) {
            bail!(
                "`cat {path}` in pod {pod} failed: {}",
                s.message.unwrap_or_default()
            );
        }
        Ok(text)
    }

    /// The log of the fault timer Job's pod (its `faults.jsonl` lines), if the run has faults.
    pub async fn fault_log(&self) -> Result<Option<String>> {
        let api = self.pods();
        let list = api
            .list(&ListParams::default().labels(&format!("{ROLE_LABEL}=fault-timer")))
            .await
            .context("listing the fault timer's pods")?;
        // The newest pod holds the log (a retried Job starts a new pod).
        let Some(pod) = list
            .items
            .iter()
            .max_by_key(|p| p.metadata.creation_timestamp.clone())
            .and_then(|p| p.metadata.name.clone())
        else {
            return Ok(None);
        };
        let log = api
            .logs(
                &pod,
                &LogParams {
                    container: Some("fault-timer".into()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| anyhow!("reading the log of {FAULTS_NAME} pod {pod}: {e}"))?;
        Ok(Some(log))
    }
}
