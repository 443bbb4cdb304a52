//! Runs rendered manifests on a cluster through the Kubernetes API (`kube`): server-side apply
//! of every object, waiting for the beacon nodes and dvnodes to be ready, and deleting a run
//! (its namespace, and with it every labelled object; Chaos Mesh heals a fault when its object
//! goes).

use super::Rendered;
use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Field manager of dvlab's server-side applies.
pub const FIELD_MANAGER: &str = "dvlab";

/// A client for kubeconfig context `context` (default: the current context; in a pod, the
/// in-cluster configuration).
pub async fn connect(context: Option<&str>) -> Result<kube::Client> {
    let config = match context {
        Some(c) => {
            let kubeconfig = Kubeconfig::read().context("reading the kubeconfig")?;
            kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &KubeConfigOptions {
                    context: Some(c.to_string()),
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("kubeconfig context `{c}`"))?
        }
        None => kube::Config::infer()
            .await
            .context("no Kubernetes configuration (kubeconfig or in-cluster)")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// The API resource of a rendered object, and whether it is namespaced.
pub fn resource_of(api_version: &str, kind: &str) -> Result<(ApiResource, bool)> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let (plural, namespaced) = match kind {
        "Namespace" => ("namespaces", false),
        "Secret" => ("secrets", true),
        "ConfigMap" => ("configmaps", true),
        "Service" => ("services", true),
        "ServiceAccount" => ("serviceaccounts", true),
        "StatefulSet" => ("statefulsets", true),
        "Job" => ("jobs", true),
        "Role" => ("roles", true),
        "RoleBinding" => ("rolebindings", true),
        "NetworkChaos" | "PodChaos" | "TimeChaos" => {
            return Ok((super::timer::resource(kind)?, true));
        }
        _ => bail!("dvlab does not apply objects of kind {kind}"),
    };
    Ok((
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural),
        namespaced,
    ))
}

/// Server-side applies `objects` in order; returns how many.
pub async fn apply(client: &kube::Client, objects: &[Value]) -> Result<usize> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for o in objects {
        let obj: DynamicObject = serde_json::from_value(o.clone())?;
        let types = obj
            .types
            .clone()
            .ok_or_else(|| anyhow!("object without apiVersion/kind"))?;
        let name = obj
            .metadata
            .name
            .clone()
            .ok_or_else(|| anyhow!("{} without a name", types.kind))?;
        let (ar, namespaced) = resource_of(&types.api_version, &types.kind)?;
        let api: Api<DynamicObject> = if namespaced {
            let ns = obj
                .metadata
                .namespace
                .as_deref()
                .ok_or_else(|| anyhow!("{} {name} without a namespace", types.kind))?;
            Api::namespaced_with(client.clone(), ns, &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        api.patch(&name, &params, &Patch::Apply(&obj))
            .await
            .with_context(|| format!("applying {} {name}", types.kind))?;
    }
    Ok(objects.len())
}

/// Applies every file of a render (not the fault objects themselves: the fault timer Job
/// creates them at their start).
pub async fn apply_rendered(client: &kube::Client, r: &Rendered) -> Result<usize> {
    let mut n = 0;
    for (_, objects) in &r.files {
        n += apply(client, objects).await?;
    }
    Ok(n)
}

/// Waits until every StatefulSet of the run (label `dvlab.run=<run>`) in `namespace` has its
/// replica ready, or fails after `timeout` naming those that are not.
pub async fn wait_ready(
    client: &kube::Client,
    namespace: &str,
    run: &str,
    timeout: Duration,
) -> Result<()> {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default().labels(&super::run_selector(run));
    let deadline = Instant::now() + timeout;
    loop {
        let list = api
            .list(&lp)
            .await
            .context("listing the run's StatefulSets")?;
        if list.items.is_empty() {
            bail!("run `{run}` has no StatefulSets in namespace {namespace}");
        }
        let waiting: Vec<String> = list
            .items
            .iter()
            .filter(|s| {
                s.status
                    .as_ref()
                    .and_then(|st| st.ready_replicas)
                    .unwrap_or(0)
                    < s.spec.as_ref().and_then(|sp| sp.replicas).unwrap_or(1)
            })
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "not ready within {timeout:?}: {} (see `kubectl -n {namespace} describe statefulset`)",
                waiting.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Deletes the run's namespace (and so everything in it) when it carries the run's label;
/// returns whether there was one.
pub async fn delete_run(client: &kube::Client, namespace: &str, run: &str) -> Result<bool> {
    let api: Api<Namespace> = Api::all(client.clone());
    let Some(ns) = api
        .get_opt(namespace)
        .await
        .with_context(|| format!("reading namespace {namespace}"))?
    else {
        return Ok(false);
    };
    let label = ns
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(crate::plan::RUN_LABEL));
    if label.map(String::as_str) != Some(run) {
        bail!(
            "namespace {namespace} is not labelled {}; not deleting it",
            super::run_selector(run)
        );
    }
    api.delete(namespace, &DeleteParams::foreground())
        .await
        .with_context(|| format!("deleting namespace {namespace}"))?;
    Ok(true)
}
