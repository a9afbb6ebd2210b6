//! `--local-nodes N`: appliances on this machine, for a one-command Trove.
//!
//! Each runs the real `troved` (found beside this executable) as a child process with its
//! data under `DATA/nodes/nodeN`, joined with a token made here on its first start.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::app::App;

pub struct LocalNodes {
    children: Vec<Child>,
}

pub async fn start(app: &App, data: &Path, n: u32) -> anyhow::Result<LocalNodes> {
    let mut children = Vec::new();
    if n == 0 {
        return Ok(LocalNodes { children });
    }
    let troved = troved_path()?;
    for i in 1..=n {
        let dir = data.join("nodes").join(format!("node{i}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut cmd = Command::new(&troved);
        cmd.arg("--data")
            .arg(&dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .kill_on_drop(true);
        if !dir.join("join.token").exists() {
            let e = crate::api::make_enrollment(app, Some(&format!("local-{i}"))).await?;
            cmd.arg("--join").arg(e.token);
        }
        let log = std::fs::File::create(dir.join("troved.log"))?;
        cmd.stdout(log.try_clone()?).stderr(log);
        let child = cmd.spawn().with_context(|| format!("starting {}", troved.display()))?;
        tracing::info!(node = i, dir = %dir.display(), "started a local appliance");
        children.push(child);
    }
    println!(
        "Started {n} local appliances under {} (logs: troved.log in each)",
        data.join("nodes").display()
    );
    Ok(LocalNodes { children })
}

impl LocalNodes {
    /// SIGTERM, so each node says goodbye on MQTT; then wait a little for them.
    pub async fn stop(mut self) {
        for c in &self.children {
            if let Some(pid) = c.id() {
                // SAFETY: plain kill(2) on our own child's pid.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
        }
        for c in &mut self.children {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), c.wait()).await;
        }
    }
}

fn troved_path() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let beside = exe.with_file_name("troved");
    if beside.exists() {
        return Ok(beside);
    }
    anyhow::bail!(
        "troved not found beside {} (build it: cargo build --release --bins)",
        exe.display()
    )
}
