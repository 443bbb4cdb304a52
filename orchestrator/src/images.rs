//! `dvlab images build`: the Debian base image (debootstrap + `docker import`), the Lodestar
//! image (base + an installed Lodestar directory) and the dvnode image (base + the release
//! binary). Each image carries a `dvlab.hash` label over its inputs; an image whose label
//! matches is not rebuilt.

use anyhow::{anyhow, bail, Context, Result};
use bollard::query_parameters::{BuildImageOptionsBuilder, CreateImageOptionsBuilder};
use bollard::{body_stream, Docker};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Label holding the content hash of an image's inputs.
pub const HASH_LABEL: &str = "dvlab.hash";
/// Base image tag.
pub const BASE_IMAGE: &str = "dvlab/base:bookworm";
/// Lodestar version the shared installer pins.
pub const LODESTAR_VERSION: &str = "1.5.1";

/// Where the inputs of the images are.
#[derive(Debug, Clone)]
pub struct ImageInputs {
    /// Debian mirror for debootstrap.
    pub mirror: String,
    /// Directory with `clients/lodestar-1.5.1/install.sh` (the project's `shared/`).
    pub shared_dir: PathBuf,
    /// Where Lodestar is (or gets) installed.
    pub lodestar_dir: PathBuf,
    /// Release `dvnode` binary; the dvnode image is skipped when it does not exist.
    pub dvnode_binary: PathBuf,
    /// Cache directory for the debootstrap root file system.
    pub cache_dir: PathBuf,
}

/// Packages the base image gets on top of minbase: `iproute2`/`iptables` for the fault
/// sidecars, `faketime` (libfaketime) for clock skew, `iputils-ping` for probing the lab.
const BASE_PACKAGES: &str = "iproute2,iptables,procps,ca-certificates,faketime,iputils-ping";

fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .expect("valid template"),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    pb.set_message(msg.to_string());
    pb
}

async fn image_hash(docker: &Docker, tag: &str) -> Option<String> {
    docker
        .inspect_image(tag)
        .await
        .ok()?
        .config?
        .labels?
        .get(HASH_LABEL)
        .cloned()
}

fn hex_sha(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// Hash of the base image recipe.
pub fn base_hash(mirror: &str) -> String {
    hex_sha(&[
        b"debootstrap --variant=minbase bookworm",
        BASE_PACKAGES.as_bytes(),
        mirror.as_bytes(),
    ])
}

/// Builds every image that is missing or out of date.
pub async fn build_all(docker: &Docker, inputs: &ImageInputs) -> Result<()> {
    let base = build_base(docker, inputs).await?;
    build_lodestar(docker, inputs, &base).await?;
    let netem = netem_binary(inputs);
    if netem.exists() {
        build_netem(docker, &netem).await?;
    } else {
        println!(
            "skipping {}: {} not found (run `cargo build --release -p dvlab-netem`)",
            crate::plan::NETEM_IMAGE,
            netem.display()
        );
    }
    match prometheus_binary(inputs) {
        Ok(bin) => build_prometheus(docker, inputs, &base, &bin).await?,
        Err(e) => println!(
            "skipping {}: {e:#} (devnets then need `prometheus: false`)",
            crate::plan::PROMETHEUS_IMAGE
        ),
    }
    if inputs.dvnode_binary.exists() {
        build_dvnode(docker, inputs, &base).await?;
    } else {
        println!(
            "skipping dvlab/dvnode: {} not found (run `cargo build --release -p dvnode`)",
            inputs.dvnode_binary.display()
        );
    }
    Ok(())
}

/// Builds the Debian base image when missing or out of date; returns its recipe hash.
pub async fn build_base(docker: &Docker, inputs: &ImageInputs) -> Result<String> {
    let hash = base_hash(&inputs.mirror);
    if image_hash(docker, BASE_IMAGE).await.as_deref() == Some(hash.as_str()) {
        println!("{BASE_IMAGE}: up to date");
        return Ok(hash);
    }
    let rootfs = inputs.cache_dir.join(format!("rootfs-{}", &hash[..16]));
    if !rootfs.join("etc/debian_version").exists() {
        let _ = std::fs::remove_dir_all(&rootfs);
        std::fs::create_dir_all(&inputs.cache_dir)?;
        let pb = spinner("debootstrap bookworm (minbase)");
        let out = tokio::process::Command::new("debootstrap")
            .args([
                "--variant=minbase",
                &format!("--include={BASE_PACKAGES}"),
                "bookworm",
            ])
            .arg(&rootfs)
            .arg(&inputs.mirror)
            .output()
            .await
            .map_err(|e| anyhow!("cannot run debootstrap ({e}); install it with apt-get"))?;
        pb.finish_and_clear();
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&rootfs);
            let log = String::from_utf8_lossy(&out.stdout);
            let tail: Vec<_> = log.lines().rev().take(10).collect();
            bail!(
                "debootstrap failed ({}):\n{}",
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    let pb = spinner("docker import base");
    let tar_path = inputs.cache_dir.join("base.tar");
    {
        let f = std::fs::File::create(&tar_path)?;
        let mut b = tar::Builder::new(f);
        b.follow_symlinks(false);
        b.append_dir_all(".", &rootfs)
            .with_context(|| format!("packing {}", rootfs.display()))?;
        b.finish()?;
    }
    let opts = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo("dvlab/base")
        .tag("bookworm")
        .changes(vec![format!("LABEL {HASH_LABEL}={hash}")])
        .build();
    let mut s = docker.create_image(
        Some(opts),
        Some(body_stream(file_stream(&tar_path).await?)),
        None,
    );
    while let Some(item) = s.next().await {
        let info = item.context("docker import of the base image")?;
        if let Some(e) = info.error_detail.and_then(|d| d.message) {
            bail!("docker import failed: {e}");
        }
    }
    let _ = std::fs::remove_file(&tar_path);
    pb.finish_and_clear();
    println!("{BASE_IMAGE}: built");
    Ok(hash)
}

/// Streams a file in 1 MiB chunks (build contexts are hundreds of MB).
async fn file_stream(
    path: &Path,
) -> Result<impl futures::Stream<Item = bytes::Bytes> + Send + 'static> {
    let f = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(chunks(f))
}

fn chunks(f: tokio::fs::File) -> impl futures::Stream<Item = bytes::Bytes> + Send + 'static {
    futures::stream::unfold(f, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 20];
        match f.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((bytes::Bytes::from(buf), f))
            }
        }
    })
}

/// Hash of an installed Lodestar: its lock file, package.json and the node binary size.
fn lodestar_hash(dir: &Path, base: &str) -> Result<String> {
    let lock = std::fs::read(dir.join("app/pnpm-lock.yaml"))
        .with_context(|| format!("{} is not a Lodestar install", dir.display()))?;
    let pkg = std::fs::read(dir.join("app/package.json"))?;
    let node = std::fs::metadata(dir.join("node/bin/node"))?.len();
    Ok(hex_sha(&[
        base.as_bytes(),
        &lock,
        &pkg,
        &node.to_le_bytes(),
        LODESTAR_DOCKERFILE.as_bytes(),
    ]))
}

const LODESTAR_DOCKERFILE: &str = "FROM dvlab/base:bookworm\n\
COPY lodestar /opt/lodestar\n\
WORKDIR /data\n\
ENTRYPOINT [\"/opt/lodestar/bin/lodestar\"]\n";

const DVNODE_DOCKERFILE: &str = "FROM dvlab/base:bookworm\n\
COPY dvnode /usr/local/bin/dvnode\n\
WORKDIR /data\n\
ENTRYPOINT [\"/usr/local/bin/dvnode\"]\n";

const NETEM_DOCKERFILE: &str = "FROM dvlab/base:bookworm\n\
COPY dvlab-netem /usr/local/bin/dvlab-netem\n\
CMD [\"sleep\", \"infinity\"]\n";

/// The `dvlab-netem` binary: next to the dvnode binary (both come from `target/release`).
pub fn netem_binary(inputs: &ImageInputs) -> PathBuf {
    inputs.dvnode_binary.with_file_name("dvlab-netem")
}

/// Builds the fault sidecar image ([`crate::plan::NETEM_IMAGE`]): the base image plus the
/// `dvlab-netem` NFQUEUE delayer. Skipped when up to date; needs the base image.
pub async fn build_netem(docker: &Docker, binary: &Path) -> Result<()> {
    let tag = crate::plan::NETEM_IMAGE;
    let base = image_hash(docker, BASE_IMAGE)
        .await
        .ok_or_else(|| anyhow!("{BASE_IMAGE} is missing; run `dvlab images build`"))?;
    let bin = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let hash = hex_sha(&[base.as_bytes(), &bin, NETEM_DOCKERFILE.as_bytes()]);
    if image_hash(docker, tag).await.as_deref() == Some(hash.as_str()) {
        println!("{tag}: up to date");
        return Ok(());
    }
    let ctx = std::env::temp_dir().join(format!("dvlab-netem-context-{}.tar", std::process::id()));
    {
        let f = std::fs::File::create(&ctx)?;
        let mut b = tar::Builder::new(f);
        append_bytes(&mut b, "Dockerfile", NETEM_DOCKERFILE.as_bytes())?;
        let mut h = tar::Header::new_gnu();
        h.set_size(bin.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        b.append_data(&mut h, "dvlab-netem", bin.as_slice())?;
        b.finish()?;
    }
    let res = build_from_context(docker, tag, &hash, &ctx).await;
    let _ = std::fs::remove_file(&ctx);
    res?;
    println!("{tag}: built");
    Ok(())
}

/// Installs Lodestar with the shared installer when `dir` has none.
fn ensure_lodestar(inputs: &ImageInputs) -> Result<()> {
    if inputs.lodestar_dir.join("bin/lodestar").exists() {
        return Ok(());
    }
    let script = inputs
        .shared_dir
        .join(format!("clients/lodestar-{LODESTAR_VERSION}/install.sh"));
    if !script.exists() {
        bail!(
            "Lodestar is not installed at {} and the installer {} does not exist (set --shared)",
            inputs.lodestar_dir.display(),
            script.display()
        );
    }
    let pb = spinner("installing Lodestar (npm registry)");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&inputs.lodestar_dir)
        .output()
        .context("running the Lodestar installer")?;
    pb.finish_and_clear();
    if !out.status.success() {
        bail!(
            "Lodestar installer failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    Ok(())
}

async fn build_lodestar(docker: &Docker, inputs: &ImageInputs, base: &str) -> Result<()> {
    let tag = format!("dvlab/lodestar:{LODESTAR_VERSION}");
    ensure_lodestar(inputs)?;
    let hash = lodestar_hash(&inputs.lodestar_dir, base)?;
    if image_hash(docker, &tag).await.as_deref() == Some(hash.as_str()) {
        println!("{tag}: up to date");
        return Ok(());
    }
    let ctx = inputs.cache_dir.join("lodestar-context.tar");
    let pb = spinner("packing Lodestar build context");
    {
        let f = std::fs::File::create(&ctx)?;
        let mut b = tar::Builder::new(f);
        b.follow_symlinks(false);
        append_bytes(&mut b, "Dockerfile", LODESTAR_DOCKERFILE.as_bytes())?;
        for sub in ["bin", "node", "app"] {
            b.append_dir_all(format!("lodestar/{sub}"), inputs.lodestar_dir.join(sub))
                .with_context(|| format!("packing {}", inputs.lodestar_dir.display()))?;
        }
        b.finish()?;
    }
    pb.finish_and_clear();
    build_from_context(docker, &tag, &hash, &ctx).await?;
    let _ = std::fs::remove_file(&ctx);
    println!("{tag}: built");
    Ok(())
}

async fn build_dvnode(docker: &Docker, inputs: &ImageInputs, base: &str) -> Result<()> {
    build_binary_image(
        docker,
        inputs,
        base,
        crate::plan::DVNODE_IMAGE,
        "dvnode",
        &inputs.dvnode_binary,
        DVNODE_DOCKERFILE,
    )
    .await
}

/// `dvlab/dvlab`: the base image plus the `dvlab` binary `bin`, for the Kubernetes fault timer
/// (`dvlab k8s fault-timer`). Built only on request: Docker runs do not need it.
pub async fn build_dvlab(docker: &Docker, inputs: &ImageInputs, bin: &Path) -> Result<()> {
    let base = build_base(docker, inputs).await?;
    build_binary_image(
        docker,
        inputs,
        &base,
        crate::k8s::DVLAB_IMAGE,
        "dvlab",
        bin,
        DVLAB_DOCKERFILE,
    )
    .await
}

const PROMETHEUS_DOCKERFILE: &str = "FROM dvlab/base:bookworm\n\
COPY prometheus /usr/local/bin/prometheus\n\
WORKDIR /prometheus\n\
ENTRYPOINT [\"/usr/local/bin/prometheus\"]\n";

/// Debian package the Prometheus image takes its binary from.
const PROMETHEUS_PACKAGE: &str = "prometheus";

/// Debian's `prometheus` binary, unpacked under the cache directory: the package of the
/// host's apt sources (bookworm: 2.42) is fetched once with `apt-get download` and unpacked
/// with `dpkg-deb -x`, without installing it (no service starts on the host).
pub fn prometheus_binary(inputs: &ImageInputs) -> Result<PathBuf> {
    let root = inputs.cache_dir.join("prometheus-deb");
    let bin = root.join("usr/bin/prometheus");
    if bin.exists() {
        return Ok(bin);
    }
    let dl = inputs.cache_dir.join("prometheus-download");
    let _ = std::fs::remove_dir_all(&dl);
    std::fs::create_dir_all(&dl).with_context(|| format!("creating {}", dl.display()))?;
    let run = |cmd: &mut Command, what: &str| -> Result<()> {
        let out = cmd
            .output()
            .with_context(|| format!("cannot run {what} (a Debian host is needed)"))?;
        if !out.status.success() {
            bail!(
                "{what} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    };
    let pb = spinner("apt-get download prometheus");
    let res = run(
        Command::new("apt-get")
            .args(["download", PROMETHEUS_PACKAGE])
            .current_dir(&dl),
        "`apt-get download prometheus` (after `apt-get update`)",
    );
    pb.finish_and_clear();
    res?;
    let deb = std::fs::read_dir(&dl)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| anyhow!("apt-get download left no .deb in {}", dl.display()))?;
    let tmp = inputs.cache_dir.join("prometheus-deb.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp),
        "dpkg-deb -x",
    )?;
    std::fs::rename(&tmp, &root)?;
    let _ = std::fs::remove_dir_all(&dl);
    if !bin.exists() {
        bail!("{} has no usr/bin/prometheus", deb.display());
    }
    Ok(bin)
}

/// `dvlab/prometheus`: the base image plus Debian's `prometheus` binary `bin` (the HTTP API
/// and the scraper; the web UI's JavaScript libraries are separate Debian packages).
async fn build_prometheus(
    docker: &Docker,
    inputs: &ImageInputs,
    base: &str,
    bin: &Path,
) -> Result<()> {
    build_binary_image(
        docker,
        inputs,
        base,
        crate::plan::PROMETHEUS_IMAGE,
        "prometheus",
        bin,
        PROMETHEUS_DOCKERFILE,
    )
    .await
}

const DVLAB_DOCKERFILE: &str = "FROM dvlab/base:bookworm\n\
COPY dvlab /usr/local/bin/dvlab\n\
ENTRYPOINT [\"/usr/local/bin/dvlab\"]\n";

/// An image of the base image plus one binary at `/usr/local/bin/NAME`, rebuilt when the
/// binary, the base or the Dockerfile changed.
async fn build_binary_image(
    docker: &Docker,
    inputs: &ImageInputs,
    base: &str,
    tag: &str,
    name: &str,
    binary: &Path,
    dockerfile: &str,
) -> Result<()> {
    let bin = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let hash = hex_sha(&[base.as_bytes(), &bin, dockerfile.as_bytes()]);
    if image_hash(docker, tag).await.as_deref() == Some(hash.as_str()) {
        println!("{tag}: up to date");
        return Ok(());
    }
    std::fs::create_dir_all(&inputs.cache_dir)?;
    let ctx = inputs.cache_dir.join(format!("{name}-context.tar"));
    {
        let f = std::fs::File::create(&ctx)?;
        let mut b = tar::Builder::new(f);
        append_bytes(&mut b, "Dockerfile", dockerfile.as_bytes())?;
        let mut h = tar::Header::new_gnu();
        h.set_size(bin.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        b.append_data(&mut h, name, bin.as_slice())?;
        b.finish()?;
    }
    build_from_context(docker, tag, &hash, &ctx).await?;
    let _ = std::fs::remove_file(&ctx);
    println!("{tag}: built");
    Ok(())
}

fn append_bytes<W: std::io::Write>(b: &mut tar::Builder<W>, name: &str, data: &[u8]) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, data)?;
    Ok(())
}

async fn build_from_context(docker: &Docker, tag: &str, hash: &str, ctx: &Path) -> Result<()> {
    let size = std::fs::metadata(ctx)?.len();
    let pb = ProgressBar::new(100);
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg} {wide_bar}")
            .expect("valid template"),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    pb.set_message(format!("docker build {tag} ({} MB context)", size >> 20));
    let labels = HashMap::from([(HASH_LABEL.to_string(), hash.to_string())]);
    let opts = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .labels(&labels)
        .build();
    let mut s = docker.build_image(opts, None, Some(body_stream(file_stream(ctx).await?)));
    let mut steps = 0u64;
    while let Some(item) = s.next().await {
        let info = item.with_context(|| format!("building {tag}"))?;
        if let Some(e) = info.error_detail.and_then(|d| d.message) {
            pb.finish_and_clear();
            bail!("building {tag} failed: {e}");
        }
        if info
            .stream
            .as_deref()
            .is_some_and(|s| s.starts_with("Step "))
        {
            steps += 1;
            pb.set_position((steps * 25).min(100));
        }
    }
    pb.finish_and_clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_hash_depends_on_mirror() {
        assert_eq!(base_hash("http://a"), base_hash("http://a"));
        assert_ne!(base_hash("http://a"), base_hash("http://b"));
        assert_eq!(base_hash("http://a").len(), 64);
    }
}
