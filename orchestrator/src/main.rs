//! `dvlab` command line.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use dvlab::analyse::AggregationKind;
use dvlab::images::ImageInputs;
use dvlab::pipeline::{self, Outcome};
use dvlab::report::Report;
use dvlab::spec::DevnetSpec;
use dvlab::{images, plan, runtime};
use dvnode::clock::{unix_now, SlotClock};
use std::io::Write;
use std::path::PathBuf;

/// dvlab — YAML devnets of real Ethereum clients in Docker, watched, analysed and reported.
#[derive(Parser, Debug)]
#[command(name = "dvlab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build the images (Debian base, Lodestar, dvnode); cached by content hash.
    Images {
        #[command(subcommand)]
        cmd: ImagesCmd,
    },
    /// Validate a devnet file and print its plan as JSON.
    Plan {
        /// Devnet YAML.
        file: PathBuf,
    },
    /// Start a devnet and print each beacon node's REST URL. With faults in the file, stays
    /// in the foreground executing the fault timeline (logged to `OUT/<name>/faults.jsonl`)
    /// and heals every fault when it ends or on Ctrl-C; the devnet stays up.
    Up {
        /// Devnet YAML.
        file: PathBuf,
        /// Directory for key material and dvnode output (`OUT/<name>/`).
        #[arg(long, default_value = "reports")]
        out: PathBuf,
    },
    /// List dvlab containers.
    Status,
    /// Print a container's logs (`bn0`, `baseline` or a full container name).
    Logs {
        /// Container.
        name: String,
        /// Keep streaming.
        #[arg(short, long)]
        follow: bool,
    },
    /// Remove the containers and networks dvlab labelled (of one run, or all).
    Down {
        /// Run name.
        name: Option<String>,
    },
    /// Up → timeline → collect → analyse → report → down. Exit 0: assertions hold; 1: an
    /// assertion failed; 2: the run failed.
    Run {
        /// Devnet YAML.
        #[arg(default_value = "devnets/basic.yaml")]
        file: PathBuf,
        /// Output directory (default `reports/<name>`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Leave the devnet running afterwards.
        #[arg(long)]
        keep: bool,
        /// Sets every DV cluster's `signer` (e.g. the chaos library with remote-signer clusters).
        #[arg(long, value_parser = ["middleware", "remote"])]
        signer: Option<String>,
        /// Where the devnet runs: local Docker, or a Kubernetes cluster with Chaos Mesh (the
        /// manifests of `dvlab k8s render`, applied, collected and deleted through its API).
        #[arg(long, value_parser = ["docker", "kubernetes"], default_value = "docker")]
        backend: String,
        /// Kubernetes: kubeconfig context (default: the current one).
        #[arg(long)]
        context: Option<String>,
        /// Kubernetes: the rendering's options.
        #[command(flatten)]
        k8s: K8sOptions,
    },
    /// Report on validators of any chain a beacon node serves: missed duties, inclusion,
    /// distance, head/target votes, proposals, sync participation, against a comparison group;
    /// the same report.json / report.html / plots / raw CSV as a run (no fault section).
    /// SPEC: an index range `100..164`, a file of indices or 0x public keys, or a
    /// cluster-lock.json. Exit 0: assertions hold; 1: an assertion failed; 2: bad input or
    /// the beacon node failed.
    Analyze {
        /// Beacon node REST URL.
        #[arg(long)]
        beacon_node: String,
        /// The validators analysed (the `dv_*` metrics).
        #[arg(long, value_name = "SPEC")]
        validators: String,
        /// A comparison group (the `baseline_*` metrics).
        #[arg(long, value_name = "SPEC")]
        compare: Option<String>,
        /// Epochs `A..B` (B excluded) or `A..=B`; with --follow, optional.
        #[arg(long)]
        epochs: Option<String>,
        /// Output directory.
        #[arg(long, default_value = "reports/analyze")]
        out: PathBuf,
        /// Keep collecting from the head (or the range's start) until Ctrl-C, re-rendering
        /// the report every epoch.
        #[arg(long)]
        follow: bool,
        /// An assertion `metric=expr`, e.g. `dv_inclusion_rate=>=0.95` (repeatable).
        #[arg(long = "assert", value_name = "METRIC=EXPR")]
        assertions: Vec<String>,
        /// dvnode duty logs (`<node>/duty-log.jsonl` or `<node>.jsonl`): the tracker's reason
        /// for each missed duty.
        #[arg(long, value_name = "DIR")]
        duty_log: Option<PathBuf>,
    },
    /// Re-render report.json, plots and report.html from a run directory's raw data.
    Report {
        /// Run directory.
        dir: PathBuf,
    },
    /// Kubernetes: plain manifests of a devnet, faults as Chaos Mesh objects.
    K8s {
        #[command(subcommand)]
        cmd: K8sCmd,
    },
}

/// What `dvlab k8s render` and `dvlab k8s up` render.
#[derive(clap::Args, Debug)]
struct RenderArgs {
    /// Devnet YAML.
    file: PathBuf,
    /// Output directory of the manifests.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    k8s: K8sOptions,
}

/// Options of a Kubernetes rendering (`dvlab k8s render|up`, `dvlab run --backend kubernetes`).
#[derive(clap::Args, Debug, Clone)]
struct K8sOptions {
    /// Namespace (default `dvlab-<name>`).
    #[arg(long)]
    namespace: Option<String>,
    /// Registry the images were pushed to (`R/dvlab/dvnode:latest`).
    #[arg(long)]
    image_registry: Option<String>,
    /// Seconds from now to genesis (default: the file's `genesis_delay`; give the cluster time
    /// to pull images and schedule pods).
    #[arg(long)]
    genesis_delay: Option<u64>,
}

impl K8sOptions {
    fn render_options(self) -> dvlab::k8s::RenderOptions {
        dvlab::k8s::RenderOptions {
            namespace: self.namespace,
            image_registry: self.image_registry,
            genesis_delay: self.genesis_delay,
        }
    }
}

impl RenderArgs {
    fn render(&self) -> Result<dvlab::k8s::Rendered> {
        let spec = DevnetSpec::load(&self.file)?;
        let text = std::fs::read_to_string(&self.file)?;
        let opts = self.k8s.clone().render_options();
        let path = self.file.display().to_string();
        let r = dvlab::k8s::render(&spec, &path, &text, unix_now().as_secs(), &opts)?;
        dvlab::k8s::write(&r, &self.out)?;
        let objects: usize = r.files.iter().map(|(_, o)| o.len()).sum();
        println!(
            "{}: {objects} objects in namespace {} ({} Chaos Mesh objects for {} faults), genesis at {} ({} s from now)",
            self.out.display(),
            r.namespace,
            r.chaos.len(),
            r.timeline.faults.len(),
            r.plan.genesis_time,
            r.plan.genesis_time.saturating_sub(unix_now().as_secs()),
        );
        Ok(r)
    }
}

#[derive(Subcommand, Debug)]
enum K8sCmd {
    /// Write the devnet as manifests for `kubectl apply -f DIR` (before the genesis time it
    /// prints): Namespace, key Secrets, headless Services, StatefulSets, the fault timer
    /// Job creating one Chaos Mesh object per fault at its start, and for `keys: dkg` the
    /// ceremony and genesis once-Jobs.
    Render(RenderArgs),
    /// Render, apply with the Kubernetes API (server-side apply) and wait until every beacon
    /// node and dvnode is ready.
    Up {
        #[command(flatten)]
        render: RenderArgs,
        /// kubeconfig context (default: the current one).
        #[arg(long)]
        context: Option<String>,
    },
    /// Delete a run's namespace (only if labelled `dvlab.run=NAME`), and with it every object
    /// of the run; Chaos Mesh heals the faults of deleted objects.
    Down {
        /// Run name.
        name: String,
        /// Namespace (default `dvlab-<name>`).
        #[arg(long)]
        namespace: Option<String>,
        /// kubeconfig context (default: the current one).
        #[arg(long)]
        context: Option<String>,
    },
    /// In-cluster fault timer (the `dvlab-faults` Job): creates each Chaos Mesh object of DIR at
    /// its start and logs `faults.jsonl` lines to stdout.
    FaultTimer {
        /// Directory of Chaos Mesh objects (`*.yaml`).
        #[arg(long)]
        dir: PathBuf,
        /// Namespace to create them in.
        #[arg(long)]
        namespace: String,
        /// Genesis UNIX time (for slot numbers).
        #[arg(long)]
        genesis_time: u64,
        /// Seconds per slot.
        #[arg(long)]
        seconds_per_slot: u64,
    },
    /// In-cluster step of a `keys: dkg` ceremony's Jobs: writes files as Secrets and public
    /// ConfigMaps in the namespace (each created once; the pod's service account may create).
    Publish {
        /// Namespace.
        #[arg(long)]
        namespace: String,
        /// Run name (`dvlab.run` label).
        #[arg(long)]
        run: String,
        /// `dvlab.role` label.
        #[arg(long)]
        role: String,
        /// NAME=DIR: a Secret of every file under DIR.
        #[arg(long, value_parser = dvlab::k8s::dkg::name_value)]
        secret: Vec<(String, String)>,
        /// NAME=DIR: a validator client's Secret of DIR's share keystores re-encrypted under
        /// one password (`keystores/`, `password.txt`).
        #[arg(long, value_parser = dvlab::k8s::dkg::name_value)]
        vc_secret: Vec<(String, String)>,
        /// NAME=FILE,FILE: a ConfigMap of public files (keys: their file names).
        #[arg(long, value_parser = dvlab::k8s::dkg::name_value)]
        config_map: Vec<(String, String)>,
    },
    /// In-cluster genesis step of `keys: dkg` (the `dvlab-genesis` Job): waits for every
    /// ceremony's public outputs, checks them and writes the genesis state (gzip) into the
    /// ConfigMap `dvlab-genesis`.
    Genesis {
        /// Namespace.
        #[arg(long)]
        namespace: String,
        /// Run name.
        #[arg(long)]
        run: String,
        /// Preset (`minimal` or `mainnet`).
        #[arg(long)]
        preset: String,
        /// Genesis UNIX time.
        #[arg(long)]
        genesis_time: u64,
        /// Genesis validators.
        #[arg(long)]
        genesis_validators: u64,
        /// CLUSTER=START..END=CONFIGMAP,…: a ceremony's genesis indices and its operators'
        /// public ConfigMaps in node order.
        #[arg(long, required = true)]
        cluster: Vec<dvlab::k8s::dkg::CeremonyOutputs>,
    },
}

#[derive(Subcommand, Debug)]
enum ImagesCmd {
    /// Build missing or outdated images.
    Build {
        /// The project's shared directory holding `clients/lodestar-1.5.1/install.sh`.
        #[arg(long, default_value = "../shared")]
        shared: PathBuf,
        /// Lodestar install directory (installed there when missing).
        #[arg(
            long,
            default_value = "/var/cache/dvlab/lodestar-1.5.1",
            env = "DVLAB_LODESTAR_DIR"
        )]
        lodestar_dir: PathBuf,
        /// Release dvnode binary.
        #[arg(long, default_value = "target/release/dvnode")]
        dvnode: PathBuf,
        /// Debian mirror.
        #[arg(long, default_value = "http://deb.debian.org/debian")]
        mirror: String,
        /// Cache directory (debootstrap root fs, build contexts).
        #[arg(long, default_value = "/var/cache/dvlab")]
        cache: PathBuf,
        /// Also build `dvlab/dvlab` from this dvlab binary (the Kubernetes fault timer's image).
        #[arg(long)]
        dvlab: Option<PathBuf>,
    },
}

fn print_report(r: &Report, out: &std::path::Path) {
    for (name, g) in &r.analysis.groups {
        println!(
            "{name:>10}: {}/{} included ({}), distance p50 {} p99 {}, proposals {}/{}",
            g.attestations_included,
            g.attestation_duties,
            g.inclusion_rate.map_or("–".into(), |v| format!("{:.3}", v)),
            g.inclusion_distance
                .p50
                .map_or("–".into(), |v| format!("{v}")),
            g.inclusion_distance
                .p99
                .map_or("–".into(), |v| format!("{v:.1}")),
            g.proposals_included,
            g.proposals_expected
        );
    }
    for line in &r.fault_lines {
        println!("fault: {line}");
    }
    for (name, w) in &r.analysis.outside_faults {
        if !r.analysis.faults.is_empty() {
            let aggregation = match (
                w.aggregation.of(AggregationKind::Aggregation),
                w.aggregation.of(AggregationKind::SyncContribution),
            ) {
                (Some((ad, asub)), Some((cd, csub))) => {
                    format!(", aggregations {asub}/{ad}, sync contributions {csub}/{cd}")
                }
                _ => String::new(),
            };
            println!(
                "{name:>10}: outside faults {}/{} included ({}){aggregation}",
                w.tally.included,
                w.tally.duties,
                w.tally
                    .inclusion_rate
                    .map_or("–".into(), |v| format!("{v:.3}"))
            );
        }
    }
    for a in &r.assertions {
        let verdict = match (&a.not_evaluated, a.passed) {
            (Some(_), _) => "NOT EVALUATED",
            (None, true) => "PASS",
            (None, false) => "FAIL",
        };
        let mut why = String::new();
        if let Some(n) = &a.not_evaluated {
            why.push_str(&format!("; {n}"));
        }
        if let Some(from) = &a.implied_from {
            why.push_str(&format!("; implied, threshold of {from}"));
        }
        println!(
            "{verdict} {} {} (value {}{why})",
            a.name,
            a.expr,
            a.value.map_or("none".into(), |v| format!("{v}"))
        );
    }
    println!("report: {}", out.join("report.html").display());
}

async fn main_inner(cli: Cli) -> Result<i32> {
    match cli.command {
        Cmd::Images {
            cmd:
                ImagesCmd::Build {
                    shared,
                    lodestar_dir,
                    dvnode,
                    mirror,
                    cache,
                    dvlab,
                },
        } => {
            let docker = runtime::connect().await?;
            let inputs = ImageInputs {
                mirror,
                shared_dir: shared,
                lodestar_dir,
                dvnode_binary: dvnode,
                cache_dir: cache,
            };
            images::build_all(&docker, &inputs).await?;
            if let Some(bin) = dvlab {
                images::build_dvlab(&docker, &inputs, &bin).await?;
            }
            Ok(0)
        }
        Cmd::Plan { file } => {
            let spec = DevnetSpec::load(&file)?;
            let plan = plan::Plan::new(&spec, unix_now().as_secs());
            let mut out = std::io::stdout().lock();
            let written = serde_json::to_writer_pretty(&mut out, &plan)
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(out));
            match written {
                // A reader that stopped early (`dvlab plan FILE | head`) is not an error.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                r => r.context("writing the plan to stdout")?,
            }
            Ok(0)
        }
        Cmd::Up { file, out } => {
            let spec = DevnetSpec::load(&file)?;
            let docker = runtime::connect().await?;
            let run_dir = out.join(&spec.name);
            let d = pipeline::up(&docker, &spec, &run_dir).await?;
            println!(
                "run `{}` up; genesis at {}",
                d.plan.run, d.plan.genesis_time
            );
            println!(
                "key material (removed by `dvlab down`): {}",
                runtime::state::state_dir(&d.plan.run).display()
            );
            for bn in d.beacon_nodes {
                println!("{}: {}", bn.name, bn.api_url);
            }
            for n in d.dvnodes {
                println!(
                    "{}: cluster {} node {}, metrics {}",
                    n.name,
                    n.cluster,
                    n.index,
                    n.metrics_url.as_deref().unwrap_or("–")
                );
            }
            if let Some(url) = &d.prometheus {
                println!("prometheus: {url}");
            }
            if !d.timeline.faults.is_empty() {
                println!(
                    "executing {} fault(s); Ctrl-C heals them and leaves the devnet up",
                    d.timeline.faults.len()
                );
                let mut fr = pipeline::start_faults(&docker, &d.plan, &d.timeline, &run_dir)?;
                let done = tokio::select! {
                    r = &mut fr.task => Some(r),
                    () = pipeline::interrupted() => None,
                };
                fr.heal().await?;
                if let Some(r) = done {
                    r??;
                }
                println!("fault timeline done and healed");
            }
            Ok(0)
        }
        Cmd::Status => {
            let docker = runtime::connect().await?;
            let list = runtime::list(&docker, None).await?;
            if list.is_empty() {
                println!("no dvlab containers");
            }
            let proms = runtime::prometheus_urls(&list);
            for c in list {
                println!(
                    "{:<28} {:<12} {:<12} {:<10} {} {}",
                    c.name,
                    c.run,
                    c.role,
                    c.state,
                    c.status,
                    c.ports.join(",")
                );
            }
            for (run, url) in &proms {
                if proms.len() == 1 {
                    println!("prometheus: {url}");
                } else {
                    println!("prometheus: {url} (run {run})");
                }
            }
            Ok(0)
        }
        Cmd::Logs { name, follow } => {
            let docker = runtime::connect().await?;
            let full = runtime::resolve(&docker, &name).await?;
            runtime::print_logs(&docker, &full, follow).await?;
            Ok(0)
        }
        Cmd::Down { name } => {
            let docker = runtime::connect().await?;
            let n = runtime::down(&docker, name.as_deref()).await?;
            println!("removed {n} container(s)");
            Ok(0)
        }
        Cmd::Run {
            file,
            out,
            keep,
            signer,
            backend,
            context,
            k8s,
        } => {
            let mut spec = DevnetSpec::load(&file)?;
            if let Some(s) = signer {
                let s = match s.as_str() {
                    "remote" => dvlab::spec::Signer::Remote,
                    _ => dvlab::spec::Signer::Middleware,
                };
                spec.clusters.iter_mut().for_each(|c| c.signer = s);
            }
            let out = out.unwrap_or_else(|| PathBuf::from("reports").join(&spec.name));
            let outcome = if backend == "kubernetes" {
                let text = std::fs::read_to_string(&file)?;
                let client = dvlab::k8s::runner::connect(context.as_deref()).await?;
                let req = pipeline::KubernetesRun {
                    spec: &spec,
                    path: &file.display().to_string(),
                    text: &text,
                    options: k8s.render_options(),
                    keep,
                };
                pipeline::run_kubernetes(client, req, &out, pipeline::interrupted()).await?
            } else {
                let docker = runtime::connect().await?;
                pipeline::run(&docker, &spec, &out, keep).await?
            };
            match outcome {
                Outcome::Interrupted => {
                    eprintln!("interrupted");
                    Ok(2)
                }
                Outcome::Done(r) => {
                    print_report(&r, &out);
                    Ok(if r.passed() { 0 } else { 1 })
                }
            }
        }
        Cmd::K8s {
            cmd: K8sCmd::Render(args),
        } => {
            args.render()?;
            println!(
                "apply before genesis: kubectl apply -f {}",
                args.out.display()
            );
            Ok(0)
        }
        Cmd::K8s {
            cmd: K8sCmd::Up { render, context },
        } => {
            let r = render.render()?;
            let client = dvlab::k8s::runner::connect(context.as_deref()).await?;
            let n = dvlab::k8s::runner::apply_rendered(&client, &r).await?;
            println!("applied {n} objects; waiting for the pods");
            dvlab::k8s::dkg::wait_once_jobs(
                &client,
                &r.namespace,
                &r.plan.run,
                &r.once_jobs,
                r.plan.genesis_time,
                std::time::Duration::from_secs(2),
            )
            .await?;
            let wait = r.plan.genesis_time.saturating_sub(unix_now().as_secs()) + 300;
            dvlab::k8s::runner::wait_ready(
                &client,
                &r.namespace,
                &r.plan.run,
                std::time::Duration::from_secs(wait),
            )
            .await?;
            println!("run `{}` ready in namespace {}", r.plan.run, r.namespace);
            Ok(0)
        }
        Cmd::K8s {
            cmd:
                K8sCmd::Down {
                    name,
                    namespace,
                    context,
                },
        } => {
            let ns = namespace.unwrap_or_else(|| format!("dvlab-{name}"));
            let client = dvlab::k8s::runner::connect(context.as_deref()).await?;
            if dvlab::k8s::runner::delete_run(&client, &ns, &name).await? {
                println!("deleting namespace {ns}");
            } else {
                println!("no namespace {ns}");
            }
            Ok(0)
        }
        Cmd::K8s {
            cmd:
                K8sCmd::FaultTimer {
                    dir,
                    namespace,
                    genesis_time,
                    seconds_per_slot,
                },
        } => {
            let objects = dvlab::k8s::timer::read_dir(&dir)?;
            let client = dvlab::k8s::runner::connect(None).await?;
            let clock = SlotClock::new(genesis_time, seconds_per_slot, 1);
            let mut out = std::io::stdout();
            dvlab::k8s::timer::run(client, &namespace, clock, objects, &mut out).await?;
            Ok(0)
        }
        Cmd::K8s {
            cmd:
                K8sCmd::Publish {
                    namespace,
                    run,
                    role,
                    secret,
                    vc_secret,
                    config_map,
                },
        } => {
            let p = dvlab::k8s::dkg::Publish {
                namespace,
                run,
                role,
                secrets: secret.into_iter().map(|(n, d)| (n, d.into())).collect(),
                vc_secrets: vc_secret.into_iter().map(|(n, d)| (n, d.into())).collect(),
                config_maps: config_map
                    .into_iter()
                    .map(|(n, f)| (n, f.split(',').map(PathBuf::from).collect()))
                    .collect(),
            };
            let client = dvlab::k8s::runner::connect(None).await?;
            for w in dvlab::k8s::dkg::publish(&client, &p).await? {
                println!("created {w}");
            }
            Ok(0)
        }
        Cmd::K8s {
            cmd:
                K8sCmd::Genesis {
                    namespace,
                    run,
                    preset,
                    genesis_time,
                    genesis_validators,
                    cluster,
                },
        } => {
            let g = dvlab::k8s::dkg::GenesisJob {
                namespace,
                run,
                preset,
                genesis_time,
                genesis_validators,
                clusters: cluster,
                poll: std::time::Duration::from_secs(2),
            };
            let client = dvlab::k8s::runner::connect(None).await?;
            let size = dvlab::k8s::dkg::genesis(&client, &g).await?;
            println!(
                "genesis state of {} validators ({size} bytes) in ConfigMap {}",
                g.genesis_validators,
                dvlab::k8s::dkg::GENESIS_NAME
            );
            Ok(0)
        }
        Cmd::Analyze {
            beacon_node,
            validators,
            compare,
            epochs,
            out,
            follow,
            assertions,
            duty_log,
        } => {
            use dvlab::spec::analyze::{parse_assertions, EpochRange, ValidatorSpec};
            let req = pipeline::AnalyzeRequest {
                beacon_node,
                validators: ValidatorSpec::parse(&validators)?,
                compare: compare.as_deref().map(ValidatorSpec::parse).transpose()?,
                epochs: epochs.as_deref().map(EpochRange::parse).transpose()?,
                follow,
                assertions: parse_assertions(&assertions)?,
                duty_log,
            };
            match pipeline::analyze(&req, &out).await? {
                Outcome::Interrupted => {
                    eprintln!("interrupted before an epoch was complete: no report");
                    Ok(2)
                }
                Outcome::Done(r) => {
                    print_report(&r, &out);
                    Ok(if r.passed() { 0 } else { 1 })
                }
            }
        }
        Cmd::Report { dir } => {
            let r = pipeline::rerender(&dir)?;
            print_report(&r, &dir);
            Ok(if r.passed() { 0 } else { 1 })
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = match rt.block_on(main_inner(cli)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    };
    std::process::exit(code);
}
