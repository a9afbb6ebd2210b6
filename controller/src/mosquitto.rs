//! Credentials and topic rights for an external Mosquitto (`--mosquitto-auth DIR`), so that
//! each appliance logs in with its own credentials and may publish only under its own
//! prefix, as the embedded broker's logins and the message MACs already ensure by other
//! means (SPEC, "Control plane").
//!
//! The controller keeps two files in DIR for Mosquitto's `password_file` and `acl_file`:
//! - [`PASSWORD_FILE`]: the controller's user (`--mqtt-username`/`--mqtt-password`) and one
//!   line per enrolled appliance (its node ID, and the password its join token gives it);
//! - [`ACL_FILE`]: everything under `trove/v1/` for the controller; for every other user,
//!   `pattern` lines that name its own topics through `%u`, its username.
//!
//! They are rewritten whenever the enrolled appliances change (checked every
//! [`CHECK_INTERVAL`]: enrollments may come from the API, the pages or `trove-controller
//! enroll` in another process). Mosquitto reads them on start and on SIGHUP; a systemd path
//! unit (`hardware/systemd/trove-mosquitto-reload.path`) reloads it when they change.
//!
//! Passwords are stored in Mosquitto's `$6$` form, SHA-512 over password and salt: the
//! passwords are random 256-bit secrets, so a slow hash would protect nothing more.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha512};
use trove_common::NodeId;
use trove_common::control::{self, NodeSecret};

use crate::app::App;

pub const PASSWORD_FILE: &str = "trove.passwd";
pub const ACL_FILE: &str = "trove.acl";
/// How often the enrolled appliances are compared with what the files say.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);
const SALT_BYTES: usize = 12;

/// What appliances publish, each under `trove/v1/node/<its ID>/`.
const NODE_PUBLISHES: [&str; 5] = ["state", "info", "have", "events", "transfers"];

/// A Mosquitto username we can put in these files: no separators of either file, no MQTT
/// wildcards (Mosquitto refuses those in ACL checks anyway), nothing invisible.
pub fn check_username(user: &str) -> anyhow::Result<()> {
    let bad = |c: char| c.is_whitespace() || c.is_control() || matches!(c, ':' | '#' | '+' | '/' | '%');
    if user.is_empty() || user.chars().any(bad) {
        anyhow::bail!(
            "MQTT username {user:?} cannot go into Mosquitto's password and ACL files (no spaces, ':', '#', '+', '/' or '%')"
        );
    }
    Ok(())
}

/// One line of a Mosquitto password file, in the `$6$` form `mosquitto_passwd -H sha512`
/// writes: base64(SHA-512(password ‖ salt)).
pub fn password_line(user: &str, password: &str, salt: &[u8; SALT_BYTES]) -> String {
    let mut h = Sha512::new();
    h.update(password.as_bytes());
    h.update(salt);
    format!("{user}:$6${}${}", BASE64.encode(salt), BASE64.encode(h.finalize()))
}

/// The ACL file: the controller may do anything under the topic root; an appliance may
/// publish its own topics and read its own commands and the controller's state.
pub fn acl_file(controller_user: &str) -> String {
    let root = control::TOPIC_ROOT;
    let mut s = format!(
        "# Written by trove-controller (--mosquitto-auth): rewritten when appliances are enrolled.\n\
         user {controller_user}\n\
         topic readwrite {root}/#\n\n\
         # Any other user is an appliance; its username is its node ID.\n"
    );
    for leaf in NODE_PUBLISHES {
        s.push_str(&format!("pattern write {root}/node/%u/{leaf}\n"));
    }
    s.push_str(&format!("pattern read {root}/node/%u/cmd\n"));
    s.push_str(&format!("pattern read {}\n", control::controller_state_topic()));
    s
}

/// The password file for the controller's user and these appliances, with a fresh salt per
/// line from `salt`.
pub fn password_file(
    controller: (&str, &str),
    nodes: &BTreeMap<NodeId, [u8; 32]>,
    mut salt: impl FnMut() -> [u8; SALT_BYTES],
) -> String {
    let mut s = password_line(controller.0, controller.1, &salt());
    s.push('\n');
    for (node, secret) in nodes {
        s.push_str(&password_line(
            &node.to_string(),
            &NodeSecret(*secret).password(),
            &salt(),
        ));
        s.push('\n');
    }
    s
}

/// Keeps the two files in `dir` in step with the enrolled appliances, for as long as the
/// controller runs. The first write happens before this returns, so Mosquitto can be
/// (re)loaded as soon as the controller has started.
pub async fn keep_files(
    app: Arc<App>,
    dir: PathBuf,
    controller_user: String,
    controller_password: String,
) -> anyhow::Result<()> {
    check_username(&controller_user)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    write(&dir, ACL_FILE, &acl_file(&controller_user), 0o644)?;
    let mut written = app.db.node_secrets().await?;
    write_passwords(&dir, &controller_user, &controller_password, &written)?;
    tracing::info!(dir = %dir.display(), appliances = written.len(), "Mosquitto password and ACL files written");
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(CHECK_INTERVAL).await;
            let now = match app.db.node_secrets().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "Mosquitto files: reading the enrolled appliances failed");
                    continue;
                }
            };
            if now == written {
                continue;
            }
            match write_passwords(&dir, &controller_user, &controller_password, &now) {
                Ok(()) => {
                    tracing::info!(
                        appliances = now.len(),
                        "Mosquitto password file rewritten; Mosquitto must reload it"
                    );
                    written = now;
                }
                Err(e) => tracing::error!(error = %format!("{e:#}"), "Mosquitto files: writing failed"),
            }
        }
    });
    Ok(())
}

fn write_passwords(dir: &Path, user: &str, password: &str, nodes: &BTreeMap<NodeId, [u8; 32]>) -> anyhow::Result<()> {
    let text = password_file((user, password), nodes, || {
        let mut salt = [0u8; SALT_BYTES];
        getrandom::fill(&mut salt).expect("the OS gives randomness");
        salt
    });
    // Hashes of secrets: not for everyone to read (Mosquitto's group, in a deployment).
    write(dir, PASSWORD_FILE, &text, 0o640)
}

/// Replaces `dir/name` in one step (write aside, flush, rename), so Mosquitto never reads a
/// half-written file.
fn write(dir: &Path, name: &str, text: &str, mode: u32) -> anyhow::Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line `mosquitto_passwd -H sha512 -b pw alice s3cret` wrote (Mosquitto 2.0.11).
    const FROM_MOSQUITTO_PASSWD: &str = "alice:$6$Y01bXo/4gEGaNiNh$Z5wdjTQSL2cY8vATXTjbcWOigHg5uehIghcATp7vdMmq+/QOhukJg7gJ1nnYbSR/Cpx+b/7wnaQOxlATnt/GRg==";

    #[test]
    fn password_lines_are_what_mosquitto_passwd_writes() {
        let salt: [u8; SALT_BYTES] = BASE64.decode("Y01bXo/4gEGaNiNh").unwrap().try_into().unwrap();
        assert_eq!(password_line("alice", "s3cret", &salt), FROM_MOSQUITTO_PASSWD);
        assert_ne!(password_line("alice", "s3cret!", &salt), FROM_MOSQUITTO_PASSWD);
    }

    #[test]
    fn the_password_file_has_the_controller_and_every_appliance() {
        let nodes: BTreeMap<NodeId, [u8; 32]> = [(NodeId([1; 16]), [7; 32]), (NodeId([2; 16]), [8; 32])].into();
        let text = password_file(("trove-controller", "pw"), &nodes, || [0; SALT_BYTES]);
        let users: Vec<&str> = text.lines().map(|l| l.split(':').next().unwrap()).collect();
        assert_eq!(
            users,
            [
                "trove-controller",
                &NodeId([1; 16]).to_string(),
                &NodeId([2; 16]).to_string()
            ]
        );
        // An appliance's line holds the password its join token gives it.
        let line = text.lines().nth(1).unwrap();
        let (user, _) = line.split_once(':').unwrap();
        assert_eq!(
            line,
            password_line(user, &NodeSecret([7; 32]).password(), &[0; SALT_BYTES])
        );
    }

    #[test]
    fn appliances_may_publish_only_under_their_own_prefix() {
        let acl = acl_file("ctl");
        let node = NodeId([3; 16]);
        for leaf in NODE_PUBLISHES {
            // Every topic troved publishes is one the ACL grants through `%u`.
            let granted = format!(
                "pattern write {}",
                control::node_topic(&node, leaf).replace(&node.to_string(), "%u")
            );
            assert!(acl.lines().any(|l| l == granted), "{granted} missing from:\n{acl}");
        }
        assert!(acl.contains("pattern read trove/v1/node/%u/cmd\n"));
        // No line grants an appliance anything outside its prefix but the controller's state.
        for l in acl.lines().filter(|l| l.starts_with("pattern")) {
            assert!(
                l.contains("/node/%u/") || l == "pattern read trove/v1/controller/state",
                "too broad: {l}"
            );
        }
        assert!(acl.contains("user ctl\ntopic readwrite trove/v1/#\n"));
    }

    #[test]
    fn usernames_that_would_break_the_files_are_refused() {
        for bad in ["", "a b", "a:b", "a#", "a+", "a/b", "a%u", "a\nuser x"] {
            assert!(check_username(bad).is_err(), "{bad:?}");
        }
        check_username("trove-controller").unwrap();
    }
}
