//! Who this node is: its [`NodeId`], the key whose grants it trusts, and, once it has joined a
//! fleet, its [`JoinToken`].
//!
//! A join token decides all three: the controller chose the node ID and the secret, and its
//! key signs the grants. It is kept in `DATA/join.token` (mode 0600: it holds the node's
//! secret), so `--join` is needed once; a token given again replaces the kept one. Without
//! any token the node runs standalone, with a random ID chosen at its first start.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, bail};
use tracing::info;
use trove_common::control::JoinToken;
use trove_common::{NodeId, PublicKey};

pub const NODE_ID_FILE: &str = "node_id";
pub const JOIN_TOKEN_FILE: &str = "join.token";

#[derive(Debug)]
pub struct Identity {
    pub node_id: NodeId,
    pub trusted_key: Option<PublicKey>,
    /// Set when the node has joined a fleet: then it speaks MQTT.
    pub join: Option<JoinToken>,
}

/// Settles the node's identity in `data` (which must exist) from a token given now, or the
/// one kept there, or neither. `trusted_key` is the configured grant key, if any: with a
/// token it must agree with the token's controller key.
pub fn resolve(data: &Path, given: Option<JoinToken>, trusted_key: Option<PublicKey>) -> anyhow::Result<Identity> {
    let token_path = data.join(JOIN_TOKEN_FILE);
    let kept = read_token(&token_path)?;
    let Some(token) = given.clone().or_else(|| kept.clone()) else {
        return Ok(Identity {
            node_id: load_or_create_node_id(data)?,
            trusted_key,
            join: None,
        });
    };
    let controller_key = token.controller_key();
    if let Some(key) = trusted_key
        && key != controller_key
    {
        bail!(
            "the trusted key {key} differs from the join token's controller key {controller_key}; \
             drop trusted_key (the token sets it) or use a token from that controller"
        );
    }
    if given.is_some() && kept.as_ref() != Some(&token) {
        write_atomically(&token_path, token.encode().as_bytes(), 0o600)?;
        info!(node = %token.node_id, replaced = kept.is_some(), "join token saved");
    }
    let id_path = data.join(NODE_ID_FILE);
    let current = std::fs::read_to_string(&id_path).ok();
    if current.as_deref().map(str::trim) != Some(token.node_id.to_string().as_str()) {
        write_atomically(&id_path, token.node_id.to_string().as_bytes(), 0o644)?;
    }
    Ok(Identity {
        node_id: token.node_id,
        trusted_key: Some(controller_key),
        join: Some(token),
    })
}

fn read_token(path: &Path) -> anyhow::Result<Option<JoinToken>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(
            JoinToken::decode(&text).with_context(|| format!("{} is damaged", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn load_or_create_node_id(data: &Path) -> anyhow::Result<NodeId> {
    let path = data.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.parse().with_context(|| format!("{} is damaged", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut id = [0u8; 16];
            getrandom::fill(&mut id).map_err(|e| anyhow::anyhow!("no randomness for a node ID: {e}"))?;
            let id = NodeId(id);
            write_atomically(&path, id.to_string().as_bytes(), 0o644)?;
            Ok(id)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Replaces `path` with `bytes` so that a reader (or a crash) sees the old file or the new
/// one, never a mix: write a temporary file with `mode`, fsync, rename, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp); // a leftover would keep its old mode
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use trove_common::control::NodeSecret;
    use trove_common::grant::SigningKey;

    fn token(id: u8, key: &SigningKey) -> JoinToken {
        JoinToken {
            broker: "127.0.0.1:1883".into(),
            node_id: NodeId([id; 16]),
            secret: NodeSecret([id; 32]),
            controller_key: key.public().to_bytes(),
        }
    }

    #[test]
    fn standalone_keeps_a_random_id() {
        let dir = tempfile::tempdir().unwrap();
        let a = resolve(dir.path(), None, None).unwrap();
        let b = resolve(dir.path(), None, None).unwrap();
        assert_eq!(a.node_id, b.node_id);
        assert!(a.join.is_none() && a.trusted_key.is_none());
    }

    #[test]
    fn a_token_sets_id_and_key_and_is_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let before = resolve(dir.path(), None, None).unwrap().node_id;
        let key = SigningKey::from_secret(&[1; 32]);
        let t = token(3, &key);
        let id = resolve(dir.path(), Some(t.clone()), None).unwrap();
        assert_ne!(before, t.node_id);
        assert_eq!(
            (id.node_id, id.trusted_key, id.join.as_ref()),
            (t.node_id, Some(key.public()), Some(&t))
        );
        let path = dir.path().join(JOIN_TOKEN_FILE);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(NODE_ID_FILE)).unwrap(),
            t.node_id.to_string()
        );

        // Later starts without --join use the kept token; a trusted key that agrees is fine.
        let again = resolve(dir.path(), None, Some(key.public())).unwrap();
        assert_eq!((again.node_id, again.join), (t.node_id, Some(t.clone())));

        // A new token replaces it.
        let t2 = token(4, &key);
        assert_eq!(resolve(dir.path(), Some(t2.clone()), None).unwrap().node_id, t2.node_id);
        assert_eq!(resolve(dir.path(), None, None).unwrap().join, Some(t2));
    }

    #[test]
    fn a_trusted_key_that_disagrees_with_the_token_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_secret(&[1; 32]);
        let other = SigningKey::from_secret(&[2; 32]);
        let err = resolve(dir.path(), Some(token(3, &key)), Some(other.public())).unwrap_err();
        assert!(err.to_string().contains("differs"), "{err}");
        assert!(
            !dir.path().join(JOIN_TOKEN_FILE).exists(),
            "a refused token is not kept"
        );
    }

    #[test]
    fn a_damaged_kept_token_is_an_error_not_a_silent_standalone_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(JOIN_TOKEN_FILE), "trove1-zz").unwrap();
        assert!(resolve(dir.path(), None, None).is_err());
    }
}
