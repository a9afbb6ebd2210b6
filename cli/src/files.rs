//! The controller-driven file commands: `share`, `get`, `status`, `rm`.
//!
//! A share says what the file is (title, kind, tags, description, private); the kind is
//! detected from the file's first bytes and name unless `--kind` says it. A completed,
//! verified `get` is recorded in the downloader's history (feeding `trove me` and
//! recommendations); failing to record it does not fail the download.
//!
//! The controller decides where chunks go and signs the grants; the client sends each
//! byte once, to the first appliance of each chunk, and the appliances make the other
//! copies among themselves. Nothing the controller sends is trusted with bytes: the
//! manifest is checked against the file ID the user asked for, each grant against the
//! chunk it is used for, and every downloaded chunk against its ID.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use trove_common::api::{
    DESCRIPTION_BYTES_MAX, EventRequest, FileStatus, FileView, ShareRequest, ShareResponse, ShareView, TITLE_BYTES_MAX,
    Upload,
};
use trove_common::download::Holders;
use trove_common::limits::CHUNK_BYTES_DEFAULT;
use trove_common::{FileId, Grant, Manifest};

use crate::api::Api;
use crate::transfer::{self, Send, SendReport};

/// How long `share --wait` waits for every chunk to reach its copies.
const REPLICATION_WAIT: Duration = Duration::from_secs(120);
/// How often `share --wait` asks.
const REPLICATION_POLL: Duration = Duration::from_millis(250);

pub struct ShareOptions {
    pub name: Option<String>,
    pub title: Option<String>,
    /// Checked by [`crate::kind::parse`]; detected when absent.
    pub kind: Option<String>,
    /// Already normalized by [`crate::tags::normalize`].
    pub tags: Vec<String>,
    pub description: Option<String>,
    pub private: bool,
    pub wait: bool,
    pub json: bool,
    pub progress: bool,
}

pub async fn share(api: &Api, file: &Path, opts: ShareOptions) -> anyhow::Result<()> {
    check_bytes("--title", opts.title.as_deref(), TITLE_BYTES_MAX)?;
    check_bytes("--description", opts.description.as_deref(), DESCRIPTION_BYTES_MAX)?;
    let kind = match opts.kind {
        Some(kind) => kind,
        None => {
            let kind = detect_kind(file)?;
            eprintln!("{}: kind {kind} (detected; --kind to say otherwise)", file.display());
            kind.to_owned()
        }
    };
    let manifest = transfer::manifest_of_file(file, CHUNK_BYTES_DEFAULT, opts.progress)?;
    let name = match opts.name {
        Some(n) => n,
        None => file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .with_context(|| format!("{} has no file name: give --name", file.display()))?,
    };
    let request = ShareRequest {
        manifest: trove_common::hex::encode(&manifest.encode()),
        name,
        title: opts.title.filter(|t| !t.trim().is_empty()),
        kind: Some(kind.clone()),
        tags: opts.tags.clone(),
        description: opts.description.filter(|d| !d.trim().is_empty()),
        private: opts.private,
    };
    let resp: ShareResponse = api.post("/files", &request).await?.value;
    let file_id = manifest.file_id();
    if resp.file_id != file_id.to_string() {
        bail!(
            "the controller registered file {} but this file is {file_id}",
            resp.file_id
        );
    }
    let sent = if resp.uploads.is_empty() {
        if resp.new_file {
            eprintln!("{file_id}: the controller asks for no chunks; nothing to upload");
        } else {
            eprintln!("{file_id}: already stored; nothing to upload");
        }
        SendReport::default()
    } else {
        let sends = plan_sends(&manifest, &resp.uploads).await?;
        transfer::send_chunks(file, &manifest, sends, opts.progress).await?
    };
    if opts.wait {
        wait_replicated(api, file_id, opts.progress).await?;
    }
    if opts.json {
        println!(
            "{}",
            serde_json::json!({
                "file_id": file_id.to_string(),
                "kind": kind,
                "tags": opts.tags,
                "private": opts.private,
                "size": manifest.size(),
                "n_chunks": manifest.n_chunks(),
                "new_file": resp.new_file,
                "chunks_uploaded": sent.chunks_sent,
                "bytes_uploaded": sent.bytes_sent,
            })
        );
    } else {
        println!("{file_id}");
    }
    Ok(())
}

/// The kind of the file at `path`, from its first bytes and its name.
fn detect_kind(path: &Path) -> anyhow::Result<&'static str> {
    use std::io::Read;
    let mut head = Vec::with_capacity(crate::kind::SNIFF_BYTES);
    std::fs::File::open(path)
        .and_then(|f| f.take(crate::kind::SNIFF_BYTES as u64).read_to_end(&mut head))
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(crate::kind::detect(path, &head))
}

/// The controller refuses longer values; saying so before hashing a large file saves time.
fn check_bytes(flag: &str, value: Option<&str>, bytes_max: usize) -> anyhow::Result<()> {
    match value {
        Some(v) if v.len() > bytes_max => bail!("{flag} is {} bytes long; the most is {bytes_max}", v.len()),
        _ => Ok(()),
    }
}

/// Turns the controller's uploads into sends: one per chunk (the first upload named for
/// it), each grant decoded and checked to be for the chunk it is meant to carry.
async fn plan_sends(manifest: &Manifest, uploads: &[Upload]) -> anyhow::Result<Vec<Send>> {
    let mut addrs: HashMap<&str, SocketAddr> = HashMap::new();
    let mut seen = vec![false; manifest.n_chunks()];
    let mut sends = Vec::with_capacity(uploads.len());
    for up in uploads {
        let chunk_idx = usize::try_from(up.chunk_idx)
            .ok()
            .filter(|&i| i < manifest.n_chunks())
            .ok_or_else(|| {
                anyhow!(
                    "the controller asked for chunk {} of a file of {} chunks",
                    up.chunk_idx,
                    manifest.n_chunks()
                )
            })?;
        if std::mem::replace(&mut seen[chunk_idx], true) {
            tracing::warn!(chunk_idx, node = %up.node_id, "the controller named this chunk twice; sending it once");
            continue;
        }
        let grant: Grant = postcard::from_bytes(&hex_bytes(&up.grant)?)
            .with_context(|| format!("the controller's grant for chunk {chunk_idx} is malformed"))?;
        if grant.chunk != manifest.chunk(chunk_idx) {
            bail!("the controller's grant for chunk {chunk_idx} is for another chunk");
        }
        let addr = match addrs.get(up.addr.as_str()) {
            Some(a) => *a,
            None => {
                let a = resolve(&up.addr).await?;
                addrs.insert(&up.addr, a);
                a
            }
        };
        sends.push(Send { chunk_idx, addr, grant });
    }
    Ok(sends)
}

async fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(a) = addr.parse() {
        return Ok(a);
    }
    tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("resolving appliance address {addr:?}"))?
        .next()
        .ok_or_else(|| anyhow!("appliance address {addr:?} resolves to nothing"))
}

/// Polls the file's status until every chunk has its target number of online copies.
async fn wait_replicated(api: &Api, file_id: FileId, progress: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let pb = transfer::bar(0, progress, "copies");
    pb.set_style(
        indicatif::ProgressStyle::with_template("{msg:8} [{bar:30}] {pos}/{len} chunks at target")
            .expect("valid template")
            .progress_chars("=> "),
    );
    loop {
        let status: FileStatus = api.get(&format!("/files/{file_id}/status")).await?.value;
        pb.set_length(status.n_chunks);
        pb.set_position(status.chunks_at_target);
        if status.chunks_at_target >= status.n_chunks {
            pb.finish_and_clear();
            return Ok(());
        }
        if started.elapsed() >= REPLICATION_WAIT {
            pb.finish_and_clear();
            bail!(
                "only {} of {} chunks reached {} copies within {} s",
                status.chunks_at_target,
                status.n_chunks,
                status.replicas_target,
                REPLICATION_WAIT.as_secs()
            );
        }
        tokio::time::sleep(REPLICATION_POLL).await;
    }
}

pub struct GetOptions {
    pub out: Option<PathBuf>,
    pub limit_rate: Option<u64>,
    pub json: bool,
    pub progress: bool,
}

pub async fn get(api: &Api, id: &str, opts: GetOptions) -> anyhow::Result<()> {
    let file_id = parse_file_id(id)?;
    let view: FileView = api.get(&format!("/files/{file_id}")).await?.value;
    let manifest = Manifest::decode(&hex_bytes(&view.manifest)?, file_id)
        .with_context(|| format!("the controller's manifest is not that of {file_id}"))?;
    let holders = holders_of(&manifest, &view.holders).await?;
    let out = match opts.out {
        Some(out) => out,
        None => {
            let out = default_out(&view.name, file_id);
            if out.exists() {
                bail!("{} already exists: choose another place with -o", out.display());
            }
            out
        }
    };
    transfer::download_and_report(&manifest, holders, &out, opts.limit_rate, opts.json, opts.progress).await?;
    let event = EventRequest {
        kind: "download".into(),
    };
    if let Err(e) = api
        .post_no_answer(&format!("/files/{file_id}/events"), Some(&event))
        .await
    {
        eprintln!(
            "trove: warning: {file_id} is downloaded and verified, but the controller did not record it in your history: {e:#}"
        );
    }
    Ok(())
}

/// The controller's per-chunk holder addresses as the downloader's sources and indices.
/// An address that does not resolve is left out (its chunks may have other holders).
async fn holders_of(manifest: &Manifest, holders: &[Vec<String>]) -> anyhow::Result<Holders> {
    if holders.len() != manifest.n_chunks() {
        bail!(
            "the controller listed holders for {} chunks of a file of {}",
            holders.len(),
            manifest.n_chunks()
        );
    }
    let mut index: HashMap<&str, Option<u16>> = HashMap::new();
    let mut sources: Vec<SocketAddr> = Vec::new();
    let mut per_chunk = Vec::with_capacity(holders.len());
    for chunk_holders in holders {
        let mut mine = Vec::with_capacity(chunk_holders.len());
        for addr in chunk_holders {
            let idx = match index.get(addr.as_str()) {
                Some(idx) => *idx,
                None => {
                    let idx = match resolve(addr).await {
                        Ok(a) => match sources.iter().position(|s| *s == a) {
                            Some(i) => Some(i as u16),
                            None => {
                                let i = u16::try_from(sources.len()).context("too many holders")?;
                                sources.push(a);
                                Some(i)
                            }
                        },
                        Err(e) => {
                            tracing::warn!("skipping holder {addr}: {e:#}");
                            None
                        }
                    };
                    index.insert(addr, idx);
                    idx
                }
            };
            if let Some(i) = idx
                && !mine.contains(&i)
            {
                mine.push(i);
            }
        }
        mine.sort_unstable();
        per_chunk.push(mine);
    }
    Ok(Holders {
        sources,
        holders: per_chunk,
    })
}

/// Where `get` writes by default: the file's name, in the current directory. Only the last
/// component of the name counts, so a name like `../../x` cannot write outside it.
fn default_out(name: &str, file_id: FileId) -> PathBuf {
    match Path::new(name).file_name() {
        Some(n) if !n.is_empty() => PathBuf::from(n),
        _ => PathBuf::from(file_id.to_string()),
    }
}

pub async fn status(api: &Api, id: &str, json: bool) -> anyhow::Result<()> {
    let file_id = parse_file_id(id)?;
    if json {
        let answer = api.get::<FileStatus>(&format!("/files/{file_id}/status")).await?;
        println!("{}", answer.text.trim());
        return Ok(());
    }
    // Who shares it comes with the file's view, not its status: ask both at once. The
    // status is what this command is for, so a failed view only leaves the shares out.
    let (status_path, view_path) = (format!("/files/{file_id}/status"), format!("/files/{file_id}"));
    let (answer, view) = tokio::join!(api.get::<FileStatus>(&status_path), api.get::<FileView>(&view_path));
    let s = answer?.value;
    println!("file        {}", s.file_id);
    println!("name        {}", s.name);
    if let Ok(view) = view {
        for (i, share) in view.value.shares.iter().enumerate() {
            println!("{:12}{}", if i == 0 { "shared by" } else { "" }, share_line(share));
        }
    }
    println!(
        "size        {} ({} bytes) in {} chunks",
        crate::human_bytes(s.size),
        s.size,
        s.n_chunks
    );
    println!(
        "replicas    {} of {} chunks on {} online appliances",
        s.chunks_at_target, s.n_chunks, s.replicas_target
    );
    let offline_copies: usize = s.chunks.iter().map(|c| c.offline.len()).sum();
    if offline_copies > 0 {
        println!("offline     {offline_copies} copies on appliances that are offline now");
    }
    println!(
        "available   {} (online copies of the scarcest chunk){}",
        s.availability,
        if s.availability == 0 && s.n_chunks > 0 {
            ": cannot be downloaded now"
        } else {
            ""
        }
    );
    Ok(())
}

/// `alice: "Holiday 2026" (video; beach, family) private`.
fn share_line(s: &ShareView) -> String {
    let mut line = format!("{}: {:?} ({}", s.owner, crate::table::one_line(&s.title), s.kind);
    if !s.tags.is_empty() {
        line.push_str("; ");
        line.push_str(&s.tags.join(", "));
    }
    line.push(')');
    if s.private {
        line.push_str(" private");
    }
    line
}

pub async fn rm(api: &Api, id: &str) -> anyhow::Result<()> {
    let file_id = parse_file_id(id)?;
    api.delete(&format!("/files/{file_id}")).await?;
    eprintln!("{file_id}: removed");
    Ok(())
}

fn parse_file_id(id: &str) -> anyhow::Result<FileId> {
    id.parse()
        .map_err(|e| anyhow!("{id:?} is not a file ID (64 hex digits, as `trove hash` prints): {e}"))
}

/// Decodes hex of any even length (manifests and grants travel as hex in the API).
fn hex_bytes(s: &str) -> anyhow::Result<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        bail!("odd number of hex digits in the controller's answer");
    }
    s.as_bytes()
        .chunks_exact(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| anyhow!("not hex in the controller's answer"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_output_stays_in_the_current_directory() {
        let id: FileId = "00".repeat(32).parse().unwrap();
        let check = |name: &str, expected: &str| assert_eq!(default_out(name, id), PathBuf::from(expected), "{name:?}");
        check("movie.mp4", "movie.mp4");
        check("../../etc/passwd", "passwd");
        check("/abs/name.txt", "name.txt");
        check("..", &id.to_string());
        check("", &id.to_string());
    }

    #[test]
    fn share_lines_say_who_what_and_how() {
        let mut s = ShareView {
            owner: "alice".into(),
            title: "Holiday \"2026\"".into(),
            kind: "video".into(),
            tags: vec!["beach".into(), "family".into()],
            description: String::new(),
            private: false,
            created_at: 0,
        };
        assert_eq!(share_line(&s), r#"alice: "Holiday \"2026\"" (video; beach, family)"#);
        s.tags.clear();
        s.private = true;
        assert_eq!(share_line(&s), r#"alice: "Holiday \"2026\"" (video) private"#);
    }

    #[test]
    fn hex_decodes_any_even_length() {
        assert_eq!(hex_bytes("00ABff").unwrap(), vec![0, 0xab, 0xff]);
        assert_eq!(hex_bytes("").unwrap(), Vec::<u8>::new());
        assert!(hex_bytes("abc").is_err());
        assert!(hex_bytes("zz").is_err());
    }

    #[tokio::test]
    async fn holders_map_addresses_to_shared_source_indices() {
        let m = Manifest::of_bytes(&[7u8; 3 << 14], 1 << 14).unwrap();
        let h = holders_of(
            &m,
            &[
                vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
                vec!["127.0.0.1:2".into(), "127.0.0.1:2".into()],
                vec![],
            ],
        )
        .await
        .unwrap();
        assert_eq!(h.sources.len(), 2);
        assert_eq!(h.holders, vec![vec![0, 1], vec![1], vec![]]);
        assert!(holders_of(&m, &[vec![]]).await.is_err());
    }
}
