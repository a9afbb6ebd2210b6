//! The logins `trove login` and `trove signup` keep: one token per controller URL, and
//! which controller to use when none is named.
//!
//! The file is `$XDG_CONFIG_HOME/trove/credentials.toml` (else `~/.config/trove/...`), mode
//! 0600 in a directory of mode 0700, and is replaced atomically (a temporary file beside it,
//! synced, then renamed), so a crash leaves the old file or the new one, never half of one.
//! Tokens are bearer secrets: nothing here prints them.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use serde::{Deserialize, Serialize};

const FILE_NAME: &str = "credentials.toml";
const HEADER: &str = "# trove's logins (trove login / trove logout). Tokens are secrets: keep this file private.\n";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The controller used when neither `--controller` nor `TROVE_CONTROLLER` names one:
    /// the last one logged into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    #[serde(default, rename = "login", skip_serializing_if = "Vec::is_empty")]
    pub logins: Vec<Login>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    pub controller: String,
    pub user: String,
    pub token: String,
}

impl Credentials {
    /// The login kept for `controller` (URLs compared as [`normalize_url`] leaves them).
    pub fn login_for(&self, controller: &str) -> Option<&Login> {
        let url = normalize_url(controller);
        self.logins.iter().find(|l| normalize_url(&l.controller) == url)
    }

    /// Keeps `login`, replacing any for the same controller, and makes its controller the
    /// default.
    pub fn remember(&mut self, login: Login) {
        let url = normalize_url(&login.controller);
        self.logins.retain(|l| normalize_url(&l.controller) != url);
        self.controller = Some(url.clone());
        self.logins.push(Login {
            controller: url,
            ..login
        });
    }

    /// Drops the login for `controller`; returns it if there was one. The default controller
    /// stays: logging in again there is the likely next step.
    pub fn forget(&mut self, controller: &str) -> Option<Login> {
        let url = normalize_url(controller);
        let idx = self.logins.iter().position(|l| normalize_url(&l.controller) == url)?;
        Some(self.logins.remove(idx))
    }
}

/// `http://host:8080/` and `http://host:8080` are one controller.
pub fn normalize_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_owned()
}

/// Where the file lives, per the XDG base directory spec: `$XDG_CONFIG_HOME` when it is an
/// absolute path (the spec says to ignore a relative one), else `$HOME/.config`.
pub fn path() -> anyhow::Result<PathBuf> {
    path_from(std::env::var_os("XDG_CONFIG_HOME"), std::env::var_os("HOME"))
}

fn path_from(xdg_config_home: Option<std::ffi::OsString>, home: Option<std::ffi::OsString>) -> anyhow::Result<PathBuf> {
    let base = match xdg_config_home.map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        _ => match home.map(PathBuf::from) {
            Some(home) if home.is_absolute() => home.join(".config"),
            _ => anyhow::bail!("neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep the login"),
        },
    };
    Ok(base.join("trove").join(FILE_NAME))
}

/// Reads the file; a missing file is no logins.
pub fn load(path: &Path) -> anyhow::Result<Credentials> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Credentials::default()),
        Err(e) => return Err(anyhow!(e).context(format!("reading {}", path.display()))),
    };
    toml::from_str(&text).with_context(|| {
        format!(
            "{} is not a trove credentials file (fix it, or delete it and log in again)",
            path.display()
        )
    })
}

/// Replaces the file with `creds`: directory 0700, file 0600, atomically.
pub fn store(path: &Path, creds: &Credentials) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    // `mode` above applies only to directories it creates; an existing one may be wider.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))?;
    let text = format!(
        "{HEADER}{}",
        toml::to_string(creds).context("encoding the credentials")?
    );
    let tmp = dir.join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // A leftover temporary file from a crashed run may have been made with other modes.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow!(e).context(format!("writing {}", path.display())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(controller: &str, user: &str, token: &str) -> Login {
        Login {
            controller: controller.into(),
            user: user.into(),
            token: token.into(),
        }
    }

    #[test]
    fn the_path_follows_xdg() {
        let p = |xdg: Option<&str>, home: Option<&str>| path_from(xdg.map(Into::into), home.map(Into::into));
        assert_eq!(
            p(Some("/x/conf"), Some("/home/a")).unwrap(),
            PathBuf::from("/x/conf/trove/credentials.toml")
        );
        assert_eq!(
            p(None, Some("/home/a")).unwrap(),
            PathBuf::from("/home/a/.config/trove/credentials.toml")
        );
        // The spec: a relative XDG_CONFIG_HOME is invalid and ignored.
        assert_eq!(
            p(Some("conf"), Some("/home/a")).unwrap(),
            PathBuf::from("/home/a/.config/trove/credentials.toml")
        );
        assert!(p(None, None).is_err());
    }

    #[test]
    fn one_login_per_controller_and_the_last_is_the_default() {
        let mut c = Credentials::default();
        c.remember(login("http://a:8080/", "alice", "t1"));
        c.remember(login("http://b:8080", "bob", "t2"));
        c.remember(login("http://a:8080", "alice", "t3"));
        assert_eq!(c.logins.len(), 2);
        assert_eq!(c.controller.as_deref(), Some("http://a:8080"));
        assert_eq!(c.login_for("http://a:8080/").unwrap().token, "t3");
        assert_eq!(c.login_for("http://b:8080").unwrap().user, "bob");
        assert!(c.login_for("http://c:8080").is_none());
        assert_eq!(c.forget("http://b:8080/").unwrap().token, "t2");
        assert!(c.forget("http://b:8080").is_none());
        assert_eq!(c.logins.len(), 1);
    }

    #[test]
    fn the_file_round_trips_privately() {
        let tmp = tempfile::tempdir().unwrap();
        let path = path_from(Some(tmp.path().join("config").into()), None).unwrap();
        assert_eq!(load(&path).unwrap(), Credentials::default(), "no file is no logins");

        let mut c = Credentials::default();
        c.remember(login("http://127.0.0.1:8080", "al\"ice", "secret-token"));
        store(&path, &c).unwrap();
        assert_eq!(load(&path).unwrap(), c);

        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);

        // A rewrite keeps the modes, even over a directory someone opened up, and leaves
        // no temporary file behind.
        std::fs::set_permissions(path.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
        c.forget("http://127.0.0.1:8080");
        store(&path, &c).unwrap();
        assert_eq!(load(&path).unwrap(), c);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(FILE_NAME)]);
    }

    #[test]
    fn a_damaged_file_names_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(FILE_NAME);
        std::fs::write(&path, "controller = [").unwrap();
        let e = format!("{:#}", load(&path).unwrap_err());
        assert!(e.contains(&path.display().to_string()), "{e}");
    }
}
