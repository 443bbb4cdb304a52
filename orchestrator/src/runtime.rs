//! Runtime: Docker network and containers of a plan, via bollard. Everything created
//! carries the label `dvlab.run=<name>`; teardown removes only what carries it.

use crate::plan::{ContainerPlan, Plan, Role, RUN_LABEL};
use anyhow::{anyhow, bail, Context, Result};
use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use std::collections::HashMap;
use std::path::Path;

/// Connects to the local Docker daemon and negotiates the API version (Docker 20.10 speaks
/// API 1.41).
pub async fn connect() -> Result<Docker> {
    let docker = Docker::connect_with_local_defaults()
        .context("cannot connect to Docker (is DOCKER_HOST valid?)")?;
    let docker = docker.negotiate_version().await.map_err(|e| {
        anyhow!("cannot reach the Docker daemon at /var/run/docker.sock ({e}); is dockerd running?")
    })?;
    docker
        .ping()
        .await
        .map_err(|e| anyhow!("Docker daemon does not answer ping: {e}"))?;
    Ok(docker)
}

/// A started container.
#[derive(Debug, Clone)]
pub struct Started {
    /// Container name.
    pub name: String,
    /// Spec name of a beacon node, if it is one.
    pub beacon_node: Option<String>,
    /// Host URL of the REST API for beacon nodes (`http://127.0.0.1:PORT`).
    pub api_url: Option<String>,
}

/// Creates the network and all containers of `plan` and starts them. On any failure the
/// run is torn down before the error is returned. `run_dir` anchors relative mounts.
pub async fn up(docker: &Docker, plan: &Plan, run_dir: &Path) -> Result<Vec<Started>> {
    if plan
        .containers
        .iter()
        .any(|c| matches!(c.role, Role::DvNode { .. }))
    {
        bail!(
            "DV clusters are not yet supported by `dvlab up`/`run`: dvnode has no `run` command \
             yet. `dvlab plan FILE` shows the planned cluster containers; use a spec without \
             `clusters` (e.g. devnets/baseline-only.yaml) to run keepers + baseline"
        );
    }
    let existing = list(docker, Some(&plan.run)).await?;
    if !existing.is_empty() {
        bail!(
            "run `{}` already has {} container(s); `dvlab down {}` first",
            plan.run,
            existing.len(),
            plan.run
        );
    }
    for image in plan.containers.iter().map(|c| c.image.as_str()) {
        if docker.inspect_image(image).await.is_err() {
            bail!("image `{image}` is missing; build it with `dvlab images build`");
        }
    }
    match up_inner(docker, plan, run_dir).await {
        Ok(s) => Ok(s),
        Err(e) => {
            let _ = down(docker, Some(&plan.run)).await;
            Err(e)
        }
    }
}

async fn up_inner(docker: &Docker, plan: &Plan, run_dir: &Path) -> Result<Vec<Started>> {
    docker
        .create_network(NetworkCreateRequest {
            name: plan.network.clone(),
            driver: Some("bridge".into()),
            labels: Some(HashMap::from([(RUN_LABEL.to_string(), plan.run.clone())])),
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating network {}", plan.network))?;
    let mut started = Vec::new();
    for c in &plan.containers {
        create_and_start(docker, plan, c, run_dir).await?;
        let (beacon_node, api_url) = match &c.role {
            Role::BeaconNode { name } => {
                let port = host_port(docker, &c.name, c.publish[0]).await?;
                (Some(name.clone()), Some(format!("http://127.0.0.1:{port}")))
            }
            _ => (None, None),
        };
        started.push(Started {
            name: c.name.clone(),
            beacon_node,
            api_url,
        });
    }
    Ok(started)
}

async fn create_and_start(
    docker: &Docker,
    plan: &Plan,
    c: &ContainerPlan,
    run_dir: &Path,
) -> Result<()> {
    let exposed: Vec<String> = c.publish.iter().map(|p| format!("{p}/tcp")).collect();
    let bindings: HashMap<String, Option<Vec<PortBinding>>> = c
        .publish
        .iter()
        .map(|p| {
            (
                format!("{p}/tcp"),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(String::new()),
                }]),
            )
        })
        .collect();
    let binds: Vec<String> = c
        .mounts
        .iter()
        .map(|(host, cont)| format!("{}:{cont}:ro", run_dir.join(host).display()))
        .collect();
    let body = ContainerCreateBody {
        image: Some(c.image.clone()),
        cmd: Some(c.cmd.clone()),
        env: Some(c.env.clone()),
        labels: Some(c.labels.clone().into_iter().collect()),
        exposed_ports: Some(exposed),
        host_config: Some(HostConfig {
            network_mode: Some(plan.network.clone()),
            port_bindings: Some(bindings),
            binds: Some(binds),
            ..Default::default()
        }),
        ..Default::default()
    };
    docker
        .create_container(
            Some(
                CreateContainerOptionsBuilder::default()
                    .name(&c.name)
                    .build(),
            ),
            body,
        )
        .await
        .with_context(|| format!("creating container {}", c.name))?;
    docker
        .start_container(&c.name, None)
        .await
        .with_context(|| format!("starting container {}", c.name))?;
    Ok(())
}

async fn host_port(docker: &Docker, name: &str, port: u16) -> Result<u16> {
    let info = docker.inspect_container(name, None).await?;
    let key = format!("{port}/tcp");
    info.network_settings
        .and_then(|n| n.ports)
        .and_then(|p| p.get(&key).cloned().flatten())
        .and_then(|b| b.into_iter().find_map(|b| b.host_port))
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow!("container {name} has no published port for {key}"))
}

/// A container dvlab labelled.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Name without the leading `/`.
    pub name: String,
    /// Run it belongs to.
    pub run: String,
    /// Role label.
    pub role: String,
    /// `running`, `exited`, …
    pub state: String,
    /// Docker's human status.
    pub status: String,
    /// Published ports `127.0.0.1:HOST->CONTAINER`.
    pub ports: Vec<String>,
}

fn label_filter(run: Option<&str>) -> HashMap<String, Vec<String>> {
    let v = match run {
        Some(r) => format!("{RUN_LABEL}={r}"),
        None => RUN_LABEL.to_string(),
    };
    HashMap::from([("label".to_string(), vec![v])])
}

/// Lists containers labelled by dvlab (of one run, or all).
pub async fn list(docker: &Docker, run: Option<&str>) -> Result<Vec<Listed>> {
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&label_filter(run))
        .build();
    let mut out: Vec<Listed> = docker
        .list_containers(Some(opts))
        .await?
        .into_iter()
        .map(|c| {
            let labels = c.labels.unwrap_or_default();
            Listed {
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                run: labels.get(RUN_LABEL).cloned().unwrap_or_default(),
                role: labels
                    .get(crate::plan::ROLE_LABEL)
                    .cloned()
                    .unwrap_or_default(),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                status: c.status.unwrap_or_default(),
                ports: c
                    .ports
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|p| {
                        Some(format!("{}:{}->{}", p.ip?, p.public_port?, p.private_port))
                    })
                    .collect(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Removes the containers and networks labelled for `run` (or for every run). Returns the
/// number of containers removed.
pub async fn down(docker: &Docker, run: Option<&str>) -> Result<usize> {
    let containers = list(docker, run).await?;
    let opts = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    let mut errors = Vec::new();
    for c in &containers {
        if let Err(e) = docker.remove_container(&c.name, Some(opts.clone())).await {
            errors.push(format!("{}: {e}", c.name));
        }
    }
    let nets = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&label_filter(run))
                .build(),
        ))
        .await?;
    for n in nets {
        if let Some(name) = n.name {
            if let Err(e) = docker.remove_network(&name).await {
                errors.push(format!("network {name}: {e}"));
            }
        }
    }
    if !errors.is_empty() {
        bail!("teardown incomplete: {}", errors.join("; "));
    }
    Ok(containers.len())
}

/// Last `lines` lines of a container's output.
pub async fn tail_logs(docker: &Docker, name: &str, lines: usize) -> Result<String> {
    let opts = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&lines.to_string())
        .build();
    let mut s = docker.logs(name, Some(opts));
    let mut out = String::new();
    while let Some(chunk) = s.next().await {
        out.push_str(&chunk?.to_string());
    }
    Ok(out)
}

/// Streams a container's logs to stdout; `follow` keeps streaming.
pub async fn print_logs(docker: &Docker, name: &str, follow: bool) -> Result<()> {
    let opts = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .follow(follow)
        .build();
    let mut s = docker.logs(name, Some(opts));
    while let Some(chunk) = s.next().await {
        print!("{}", chunk.with_context(|| format!("logs of {name}"))?);
    }
    Ok(())
}

/// Resolves a short name (`bn0`, `baseline`) or full container name within the labelled
/// containers.
pub async fn resolve(docker: &Docker, name: &str) -> Result<String> {
    let all = list(docker, None).await?;
    if let Some(c) = all.iter().find(|c| c.name == name) {
        return Ok(c.name.clone());
    }
    let matches: Vec<_> = all
        .iter()
        .filter(|c| c.name == format!("dvlab-{}-{name}", c.run))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.name.clone()),
        [] => bail!(
            "no dvlab container named `{name}`; running: {}",
            all.iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => bail!("`{name}` is ambiguous across runs; use the full container name"),
    }
}

/// Fails with the cause when a container of the run is no longer running: names the
/// container, its exit code and its last log lines.
pub async fn check_alive(docker: &Docker, run: &str) -> Result<()> {
    for c in list(docker, Some(run)).await? {
        if c.state != "running" {
            let info = docker.inspect_container(&c.name, None).await.ok();
            let code = info
                .and_then(|i| i.state)
                .and_then(|s| s.exit_code)
                .map_or_else(|| "?".into(), |c| c.to_string());
            let logs = tail_logs(docker, &c.name, 15).await.unwrap_or_default();
            bail!(
                "container {} stopped ({}, exit code {code}); last log lines:\n{}",
                c.name,
                c.status,
                logs.trim_end()
            );
        }
    }
    Ok(())
}
