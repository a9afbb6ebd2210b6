//! `trove`: the Trove command-line client.
//!
//! The user-facing commands talk to the controller: `signup`, `login` and `logout` keep a
//! token per controller in the credentials file; `share` registers a file (with its title,
//! kind and tags) and sends each byte once to the appliances it names, `get` downloads a file
//! from every online holder, `search` and `recommend` find files, `me` shows my shares and
//! history; `nodes`, `status`, `repair` show the fleet, `rm` and `enroll` change it.
//!
//! Which controller: `--controller`, else `TROVE_CONTROLLER`, else the one last logged into,
//! else [`CONTROLLER_DEFAULT`]. Which token: `--token`, else `TROVE_TOKEN`, else the stored
//! login for that controller.
//!
//! The low-level commands of the data plane need no controller: hash a file, put its chunks
//! onto given appliances with locally signed grants, fetch it back from given appliances
//! (parallel, verified, resumable), and read an appliance's stats.
//!
//! Module map: `api` (HTTP client of the JSON API), `transfer` (hashing, the put pipeline,
//! the download driver), `files` (share, get, status, rm), `fleet` (nodes, enroll, repair),
//! `people` (accounts, tokens, users, me), `search` (search, recommend), `credentials` (the
//! stored logins), `kind` (what a file is), `tags`, `dates` (`--since`, UTC dates), `table`.

mod api;
mod credentials;
mod dates;
mod files;
mod fleet;
mod kind;
mod people;
mod search;
mod table;
mod tags;
mod transfer;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use trove_common::Manifest;
use trove_common::download::Holders;
use trove_common::grant::SigningKey;
use trove_common::limits::CHUNK_BYTES_DEFAULT;
use trove_common::net;

use crate::api::Api;
use crate::credentials::Credentials;
use crate::transfer::{Send, download_and_report, manifest_of_file, send_chunks};

#[derive(Parser)]
#[command(version, about = "Trove: share files across your LAN's appliances")]
struct Cli {
    /// The controller's URL [default: the one last logged into, else http://127.0.0.1:8080].
    #[arg(long, global = true, env = "TROVE_CONTROLLER")]
    controller: Option<String>,
    /// API token, sent as `Authorization: Bearer` [default: the stored login's].
    #[arg(long, global = true, env = "TROVE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// The controller used when neither a flag, the environment nor a stored login names one.
const CONTROLLER_DEFAULT: &str = "http://127.0.0.1:8080";

#[derive(Subcommand)]
enum Command {
    /// Make an account on the controller and log in (the token is kept for later commands).
    Signup {
        name: String,
        /// The name people see (default: NAME).
        #[arg(long)]
        display_name: Option<String>,
        /// Read the password from the first line of standard input instead of the terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Log in: keeps a token for this controller in ~/.config/trove/credentials.toml
    /// (or under $XDG_CONFIG_HOME).
    Login {
        name: String,
        /// Read the password from the first line of standard input instead of the terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Revoke this login's token at the controller and forget it here.
    Logout,
    /// Print who the token belongs to.
    Whoami,
    /// Show a profile (default: mine), or change mine.
    Profile {
        /// Whose (default: me).
        name: Option<String>,
        #[arg(long, value_name = "NAME")]
        set_display_name: Option<String>,
        #[arg(long, value_name = "TEXT")]
        set_bio: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Change my password (asks for the current one; empty when none is set yet).
    Passwd {
        /// Read two lines from standard input: the current password, then the new one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List my API tokens, or make or revoke one.
    Tokens {
        #[command(subcommand)]
        action: Option<TokensCommand>,
        #[arg(long)]
        json: bool,
    },
    /// List the accounts, or disable or enable one. Admin only.
    Users {
        #[command(subcommand)]
        action: Option<UsersCommand>,
        #[arg(long)]
        json: bool,
    },
    /// My shares (with how many people got each), my downloads and views, my space.
    Me {
        #[arg(long)]
        json: bool,
    },
    /// Find files by text, kind, tags, owner, size and date; best first, unavailable marked.
    Search {
        /// Words to look for in titles, names, tags and descriptions.
        text: Vec<String>,
        #[arg(long, ignore_case = true, value_parser = kind_parser())]
        kind: Option<String>,
        /// Repeat for several: files with every one.
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// Shared by this user.
        #[arg(long, value_name = "USER")]
        owner: Option<String>,
        /// e.g. 10MiB.
        #[arg(long, value_parser = parse_size)]
        min_size: Option<u64>,
        /// e.g. 2GiB.
        #[arg(long, value_parser = parse_size)]
        max_size: Option<u64>,
        /// Shared since: 2026-11-01 (UTC midnight), Unix seconds, or an age like 24h, 7d, 2w.
        #[arg(long, value_parser = parse_since)]
        since: Option<i64>,
        /// Which page of results, from 1.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        page: Option<u32>,
        /// Results per page (the controller caps it).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        per_page: Option<u32>,
        /// The controller's results as JSON (relevance, availability and score per hit).
        #[arg(long)]
        json: bool,
    },
    /// Files you may like, from what you and others downloaded and watched.
    Recommend {
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Share a file: register it with the controller and send its chunks to the appliances
    /// it names (each byte once). Prints the FileId.
    Share {
        file: PathBuf,
        /// The file name recorded with it (default: the file's name).
        #[arg(long)]
        name: Option<String>,
        /// What people see and search for (default: the name).
        #[arg(long)]
        title: Option<String>,
        /// Default: detected from the file's first bytes and its extension.
        #[arg(long, ignore_case = true, value_parser = kind_parser())]
        kind: Option<String>,
        /// Repeat for several; lowercased, inner spaces become `-`.
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        /// Only you see it: in search, listings and downloads.
        #[arg(long)]
        private: bool,
        /// Then wait until every chunk has its full number of copies.
        #[arg(long)]
        wait: bool,
        /// Print a JSON report instead of the FileId.
        #[arg(long)]
        json: bool,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Download a file by ID from every online appliance that holds it, verified and
    /// resumable.
    Get {
        id: String,
        /// Where to write it (default: the file's name in the current directory).
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// Cap on the download rate, e.g. 8MiB (per second).
        #[arg(long, value_parser = parse_size)]
        limit_rate: Option<u64>,
        /// Print a JSON report on stdout at the end.
        #[arg(long)]
        json: bool,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// List the appliances: state, address, chunks held, space.
    Nodes {
        #[arg(long)]
        json: bool,
    },
    /// Show a file's replication: chunks at their target number of copies, availability.
    Status {
        id: String,
        /// The controller's full status, per chunk.
        #[arg(long)]
        json: bool,
    },
    /// Remove a file (its chunks are freed unless another file shares them).
    Rm { id: String },
    /// Make a join token for a new appliance (`troved --join TOKEN`). Admin only.
    Enroll {
        /// A name for the fleet view.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show repair progress: chunks under or over their target, orders in flight.
    Repair {
        #[arg(long)]
        json: bool,
    },
    /// Print the FileId of files (the same as `b3sum`).
    Hash { files: Vec<PathBuf> },
    /// Make a grant-signing key pair: writes the secret, prints the public key.
    Keygen {
        #[arg(long)]
        secret_out: PathBuf,
    },
    /// Put a file's chunks onto appliances, signing grants with a local key.
    Put {
        file: PathBuf,
        /// Secret key file (hex) whose public key the appliances trust.
        #[arg(long)]
        key: PathBuf,
        /// Appliance address; repeat for each. Chunk i goes to nodes i, i+1, ... (mod n).
        #[arg(long = "node", required = true)]
        nodes: Vec<SocketAddr>,
        /// Copies of each chunk (at most one per node).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
        replicas: u16,
        /// Where to write the manifest (default: FILE.manifest).
        #[arg(long)]
        manifest_out: Option<PathBuf>,
        #[arg(long, default_value_t = CHUNK_BYTES_DEFAULT)]
        chunk_bytes: u32,
        /// How long the signed grants stay valid.
        #[arg(long, default_value_t = 3600)]
        grant_ttl_secs: u64,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Download a file described by a manifest from appliances, verified and resumable.
    Fetch {
        manifest: PathBuf,
        /// Appliance address to fetch from; repeat for each. Each is asked what it holds.
        #[arg(long = "node", required = true)]
        nodes: Vec<SocketAddr>,
        /// Where to write the file (OUT.trove-part and OUT.trove-state meanwhile).
        #[arg(short, long)]
        out: PathBuf,
        /// Cap on the download rate, e.g. 8MiB (per second).
        #[arg(long, value_parser = parse_size)]
        limit_rate: Option<u64>,
        /// Print a JSON report on stdout at the end.
        #[arg(long)]
        json: bool,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Show an appliance's counters and capacity.
    Stats {
        #[arg(long)]
        node: SocketAddr,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Make a token (printed once): for scripts, other machines, TROVE_TOKEN.
    New {
        /// What it is for, shown in the list.
        #[arg(long)]
        label: Option<String>,
    },
    /// Revoke a token by the ID `trove tokens` shows.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Stop an account from logging in or using its tokens.
    Disable { name: String },
    /// Let a disabled account back in.
    Enable { name: String },
}

fn parse_size(s: &str) -> Result<u64, String> {
    trove_common::units::parse_bytes(s).map_err(|e| e.to_string())
}

/// `--kind`: one of [`trove_common::api::KINDS`], any case (listed in `--help` and in the
/// error for anything else), passed on in lowercase.
fn kind_parser() -> impl clap::builder::TypedValueParser<Value = String> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(trove_common::api::KINDS).map(|k| k.to_lowercase())
}

fn parse_since(s: &str) -> Result<i64, String> {
    dates::parse_since(s, dates::now_s())
}

/// Which controller and token a command uses, and where the token came from.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    controller: String,
    token: Option<String>,
    token_source: &'static str,
}

/// Flags (and their environment variables) first, then the stored logins, then the default.
fn target(controller: Option<&str>, token: Option<&str>, creds: &Credentials) -> Target {
    let controller = controller
        .map(credentials::normalize_url)
        .filter(|c| !c.is_empty())
        .or_else(|| creds.controller.clone())
        .unwrap_or_else(|| CONTROLLER_DEFAULT.to_owned());
    let flag_token = token.map(str::trim).filter(|t| !t.is_empty());
    let (token, token_source) = match (flag_token, creds.login_for(&controller)) {
        (Some(t), _) => (Some(t.to_owned()), "--token or TROVE_TOKEN"),
        (None, Some(login)) => (Some(login.token.clone()), "the stored login"),
        (None, None) => (None, "nowhere"),
    };
    Target {
        controller,
        token,
        token_source,
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    // A refused login is a wrong password, not a missing login: no hint to log in there.
    let logging_in = matches!(cli.command, Command::Signup { .. } | Command::Login { .. });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trove: {e:#}");
            if !logging_in && api::refused_with(&e) == Some(reqwest::StatusCode::UNAUTHORIZED) {
                eprintln!("trove: log in with `trove login NAME`, or give a token with --token or TROVE_TOKEN");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // The credentials file is read only by commands that talk to the controller, so a
    // damaged one does not stop `hash` or `fetch`.
    let creds_path = || credentials::path();
    let target = || -> anyhow::Result<Target> {
        // With both named there is nothing to look up (and no HOME needed).
        let creds = match (&cli.controller, &cli.token) {
            (Some(_), Some(_)) => Credentials::default(),
            _ => match creds_path() {
                Ok(path) => credentials::load(&path)?,
                Err(_) => Credentials::default(),
            },
        };
        Ok(target(cli.controller.as_deref(), cli.token.as_deref(), &creds))
    };
    let api = || -> anyhow::Result<Api> {
        let t = target()?;
        Api::new(&t.controller, t.token)
    };
    // Signing up and logging in must not send someone else's token along.
    let anonymous_api = || -> anyhow::Result<Api> { Api::new(&target()?.controller, None) };
    match cli.command {
        Command::Signup {
            name,
            display_name,
            password_stdin,
        } => {
            let passwords = people::Passwords::choose(password_stdin)?;
            people::signup(&anonymous_api()?, &creds_path()?, name, display_name, passwords).await
        }
        Command::Login { name, password_stdin } => {
            let passwords = people::Passwords::choose(password_stdin)?;
            people::login(&anonymous_api()?, &creds_path()?, name, passwords).await
        }
        Command::Logout => {
            let t = target()?;
            let api = Api::new(&t.controller, t.token.clone())?;
            people::logout(&api, &creds_path()?, t.token.as_deref()).await
        }
        Command::Whoami => {
            let t = target()?;
            if t.token.is_none() {
                bail!("not logged in to {}: `trove login NAME`, or give --token", t.controller);
            }
            people::whoami(&Api::new(&t.controller, t.token)?, t.token_source).await
        }
        Command::Profile {
            name,
            set_display_name,
            set_bio,
            json,
        } => {
            let change = people::ProfileChange {
                display_name: set_display_name,
                bio: set_bio,
            };
            people::profile(&api()?, name, change, json).await
        }
        Command::Passwd { password_stdin } => {
            let passwords = people::Passwords::choose(password_stdin)?;
            people::passwd(&api()?, passwords).await
        }
        Command::Tokens { action, json } => {
            let action = match action {
                None => people::TokensAction::List { json },
                Some(TokensCommand::New { label }) => people::TokensAction::New { label },
                Some(TokensCommand::Revoke { id }) => people::TokensAction::Revoke { id },
            };
            let t = target()?;
            let api = Api::new(&t.controller, t.token.clone())?;
            people::tokens(&api, creds_path().ok().as_deref(), t.token.as_deref(), action).await
        }
        Command::Users { action, json } => {
            let action = match action {
                None => people::UsersAction::List { json },
                Some(UsersCommand::Disable { name }) => people::UsersAction::Disable { name },
                Some(UsersCommand::Enable { name }) => people::UsersAction::Enable { name },
            };
            people::users(&api()?, action).await
        }
        Command::Me { json } => people::me(&api()?, json).await,
        Command::Search {
            text,
            kind,
            tags,
            owner,
            min_size,
            max_size,
            since,
            page,
            per_page,
            json,
        } => {
            let query = search::Query {
                text: Some(text.join(" ")),
                kind,
                tags: tags::normalize(&tags).map_err(anyhow::Error::msg)?,
                owner,
                min_size,
                max_size,
                since,
                page,
                per_page,
            };
            search::search(&api()?, &query, json).await
        }
        Command::Recommend { limit, json } => search::recommend(&api()?, limit, json).await,
        Command::Share {
            file,
            name,
            title,
            kind,
            tags,
            description,
            private,
            wait,
            json,
            no_progress,
        } => {
            let opts = files::ShareOptions {
                name,
                title,
                kind,
                tags: tags::normalize(&tags).map_err(anyhow::Error::msg)?,
                description,
                private,
                wait,
                json,
                progress: !no_progress,
            };
            files::share(&api()?, &file, opts).await
        }
        Command::Get {
            id,
            out,
            limit_rate,
            json,
            no_progress,
        } => {
            let opts = files::GetOptions {
                out,
                limit_rate,
                json,
                progress: !no_progress,
            };
            files::get(&api()?, &id, opts).await
        }
        Command::Nodes { json } => fleet::nodes(&api()?, json).await,
        Command::Status { id, json } => files::status(&api()?, &id, json).await,
        Command::Rm { id } => files::rm(&api()?, &id).await,
        Command::Enroll { name, json } => fleet::enroll(&api()?, name, json).await,
        Command::Repair { json } => fleet::repair(&api()?, json).await,
        Command::Hash { files } => {
            if files.is_empty() {
                bail!("name at least one file");
            }
            for f in files {
                let m = manifest_of_file(&f, CHUNK_BYTES_DEFAULT, false)?;
                println!("{}  {}", m.file_id(), f.display());
            }
            Ok(())
        }
        Command::Keygen { secret_out } => {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            let key = SigningKey::from_secret(&secret);
            write_secret(&secret_out, &key)?;
            println!("{}", key.public());
            Ok(())
        }
        Command::Put {
            file,
            key,
            nodes,
            replicas,
            manifest_out,
            chunk_bytes,
            grant_ttl_secs,
            no_progress,
        } => {
            let key = read_secret(&key)?;
            let manifest = manifest_of_file(&file, chunk_bytes, !no_progress)?;
            let manifest_out = manifest_out.unwrap_or_else(|| {
                let mut p = file.as_os_str().to_owned();
                p.push(".manifest");
                PathBuf::from(p)
            });
            std::fs::write(&manifest_out, manifest.encode())
                .with_context(|| format!("writing {}", manifest_out.display()))?;
            put(&file, &manifest, &key, &nodes, replicas, grant_ttl_secs, !no_progress).await?;
            println!("{}", manifest.file_id());
            Ok(())
        }
        Command::Fetch {
            manifest,
            nodes,
            out,
            limit_rate,
            json,
            no_progress,
        } => {
            let bytes = std::fs::read(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
            let manifest = Manifest::decode_self_checked(&bytes)
                .with_context(|| format!("{} is not a valid manifest", manifest.display()))?;
            let holders = Holders::discover(&manifest, nodes).await;
            download_and_report(&manifest, holders, &out, limit_rate, json, !no_progress).await
        }
        Command::Stats { node, json } => {
            let stats = net::connect(node)
                .await
                .with_context(|| format!("connecting to {node}"))?
                .stats()
                .await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "node_id": stats.node_id.to_string(),
                        "version": stats.version,
                        "chunks": stats.chunks,
                        "used_bytes": stats.used_bytes,
                        "capacity_bytes": stats.capacity_bytes,
                        "disk_free_bytes": stats.disk_free_bytes,
                        "quarantined": stats.quarantined,
                        "uptime_s": stats.uptime_s,
                        "bytes_served": stats.bytes_served,
                        "bytes_stored": stats.bytes_stored,
                    })
                );
            } else {
                println!("node        {}", stats.node_id);
                println!("version     {}", stats.version);
                println!("chunks      {} ({} quarantined)", stats.chunks, stats.quarantined);
                println!("used        {} of {} bytes", stats.used_bytes, stats.capacity_bytes);
                println!("disk free   {} bytes", stats.disk_free_bytes);
                println!(
                    "served      {} bytes; stored {} bytes",
                    stats.bytes_served, stats.bytes_stored
                );
                println!("uptime      {} s", stats.uptime_s);
            }
            Ok(())
        }
    }
}

fn write_secret(path: &Path, key: &SigningKey) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    writeln!(f, "{}", trove_common::hex::encode(&key.secret()))?;
    Ok(())
}

fn read_secret(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading key {}", path.display()))?;
    let secret = trove_common::hex::decode::<32>(text.trim())
        .with_context(|| format!("{} is not a hex secret key", path.display()))?;
    Ok(SigningKey::from_secret(&secret))
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `trove put`: chunk i goes to nodes i, i+1, ... (mod n), `replicas` of them, each with
/// a grant signed by the local key.
async fn put(
    file: &Path,
    manifest: &Manifest,
    key: &SigningKey,
    nodes: &[SocketAddr],
    replicas: u16,
    grant_ttl_secs: u64,
    progress: bool,
) -> anyhow::Result<()> {
    let replicas = usize::from(replicas).min(nodes.len());
    let expires = now_s() + grant_ttl_secs;
    let mut sends = Vec::with_capacity(manifest.n_chunks() * replicas);
    for (chunk_idx, chunk) in manifest.chunks().enumerate() {
        let grant = key.grant(chunk, expires);
        for k in 0..replicas {
            sends.push(Send {
                chunk_idx,
                addr: nodes[(chunk_idx + k) % nodes.len()],
                grant: grant.clone(),
            });
        }
    }
    send_chunks(file, manifest, sends, progress).await.map(|_| ())
}

/// `n` bytes for people: `1.5 GiB`.
pub use trove_common::units::format_bytes as human_bytes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("1k"), Ok(1000));
        assert!(parse_size("1 parsec").is_err());
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }

    #[test]
    fn flags_then_stored_login_then_default() {
        let mut creds = Credentials::default();
        let check = |creds: &Credentials, controller: Option<&str>, token: Option<&str>, want: (&str, Option<&str>)| {
            let t = target(controller, token, creds);
            assert_eq!(
                (t.controller.as_str(), t.token.as_deref()),
                want,
                "{controller:?} {token:?}"
            );
        };
        check(&creds, None, None, (CONTROLLER_DEFAULT, None));
        check(&creds, Some("http://c:1/"), Some(" t "), ("http://c:1", Some("t")));

        creds.remember(credentials::Login {
            controller: "http://home:8080".into(),
            user: "alice".into(),
            token: "stored".into(),
        });
        // The stored controller and its token, unless a flag names others.
        check(&creds, None, None, ("http://home:8080", Some("stored")));
        check(
            &creds,
            Some("http://home:8080/"),
            None,
            ("http://home:8080", Some("stored")),
        );
        check(&creds, None, Some("flag"), ("http://home:8080", Some("flag")));
        // A stored token never goes to another controller.
        check(&creds, Some("http://other:8080"), None, ("http://other:8080", None));
        check(&creds, Some("http://other:8080"), Some(""), ("http://other:8080", None));
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn share_and_search_flags_are_checked() {
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("trove").chain(args.iter().copied()));
        assert!(parse(&["share", "f", "--kind", "video", "--tag", "a", "--tag", "b"]).is_ok());
        let e = parse(&["share", "f", "--kind", "movie"]).err().unwrap().to_string();
        assert!(e.contains("movie") && e.contains("document"), "{e}");
        match parse(&["search", "--kind", "Video"]).map(|c| c.command) {
            Ok(Command::Search { kind, .. }) => assert_eq!(kind.as_deref(), Some("video")),
            _ => panic!("--kind Video"),
        }
        assert!(parse(&["search", "two", "words", "--since", "7d", "--min-size", "10MiB"]).is_ok());
        let e = parse(&["search", "--since", "last tuesday"]).err().unwrap().to_string();
        assert!(e.contains("24h"), "{e}");
        assert!(parse(&["search", "--page", "0"]).is_err());
        assert!(parse(&["tokens", "revoke", "abc"]).is_ok());
        assert!(parse(&["users", "--json"]).is_ok());
    }
}
