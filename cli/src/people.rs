//! Accounts and the things that hang off them: `signup`, `login`, `logout`, `whoami`,
//! `profile`, `passwd`, `tokens`, `users` (admin) and `me` (my shares and history).
//!
//! Passwords are read without echo from the terminal (rpassword opens `/dev/tty`), or one
//! per line from standard input with `--password-stdin`, never from a flag: a flag shows up
//! in `ps` and the shell's history. `signup` and `login` keep the token they get in the
//! credentials file ([`crate::credentials`]); `logout` revokes it and forgets it.

use std::io::{BufRead, IsTerminal};
use std::path::Path;

use anyhow::{Context, bail};
use reqwest::StatusCode;
use trove_common::api::{
    LoginRequest, LoginResponse, MeView, NewToken, ProfileUpdate, SignupRequest, TokenRequest, TokenView, UserView,
};

use crate::api::{self, Api, refused_with};
use crate::credentials::{self, Login};
use crate::dates::format_utc;
use crate::human_bytes;
use crate::table::{clip, one_line, print_table};

/// Where passwords come from.
#[derive(Clone, Copy)]
pub enum Passwords {
    /// Prompted for on the terminal, without echo.
    Terminal,
    /// One per line on standard input (`--password-stdin`).
    Stdin,
}

impl Passwords {
    /// Standard input when asked for, else the terminal if there is one.
    pub fn choose(from_stdin: bool) -> anyhow::Result<Passwords> {
        if from_stdin {
            Ok(Passwords::Stdin)
        } else if std::io::stdin().is_terminal() {
            Ok(Passwords::Terminal)
        } else {
            bail!("no terminal to ask for the password on: pipe it in with --password-stdin")
        }
    }

    /// A password the account already has.
    fn existing(self, prompt: &str) -> anyhow::Result<String> {
        match self {
            Passwords::Terminal => rpassword::prompt_password(prompt).context("reading the password from the terminal"),
            Passwords::Stdin => line_of(&mut std::io::stdin().lock()),
        }
    }

    /// A new password: asked twice on a terminal, as a typo there cannot be seen.
    fn new_password(self, prompt: &str) -> anyhow::Result<String> {
        let password = self.existing(prompt)?;
        if password.is_empty() {
            bail!("the password cannot be empty");
        }
        if let Passwords::Terminal = self {
            let again = self.existing("The same again: ")?;
            if again != password {
                bail!("the two passwords differ: nothing was sent; try again");
            }
        }
        Ok(password)
    }
}

/// One line of standard input, without its line ending; everything else in it is part of
/// the password, spaces included.
fn line_of(r: &mut impl BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    let n = r
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    if n == 0 {
        bail!("standard input ended before a password line");
    }
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    Ok(line)
}

/// This machine's name, as the label of a login's token.
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Stores the new login. The one it replaces is revoked at the controller (best effort):
/// once its token is gone from this file nobody holds it, and it would stay valid for good.
async fn keep_login(api: &Api, creds_path: &Path, resp: &LoginResponse) -> anyhow::Result<()> {
    let mut creds = credentials::load(creds_path)?;
    let replaced = creds.forget(api.base()).filter(|old| old.token != resp.token);
    creds.remember(Login {
        controller: api.base().to_owned(),
        user: resp.user.name.clone(),
        token: resp.token.clone(),
    });
    credentials::store(creds_path, &creds)?;
    if let Some(old) = replaced {
        let old_api = Api::new(api.base(), Some(old.token))?;
        match old_api.post_no_answer::<()>("/logout", None).await {
            Ok(()) => eprintln!("revoked the token of the login this one replaces ({})", old.user),
            // Already revoked or expired: nothing left to do.
            Err(e) if refused_with(&e) == Some(StatusCode::UNAUTHORIZED) => {}
            Err(e) => eprintln!(
                "trove: warning: the replaced login of {} could not be revoked ({e:#}); \
                 `trove tokens` as {} lists it",
                old.user, old.user
            ),
        }
    }
    Ok(())
}

/// `trove signup NAME`: a new account, logged in at once.
pub async fn signup(
    api: &Api,
    creds_path: &Path,
    name: String,
    display_name: Option<String>,
    passwords: Passwords,
) -> anyhow::Result<()> {
    let password = passwords.new_password("Password: ")?;
    let resp: LoginResponse = api
        .post(
            "/signup",
            &SignupRequest {
                name,
                password,
                display_name,
            },
        )
        .await?
        .value;
    keep_login(api, creds_path, &resp).await?;
    eprintln!(
        "signed up and logged in as {} on {} (token kept in {})",
        resp.user.name,
        api.base(),
        creds_path.display()
    );
    Ok(())
}

/// `trove login NAME`.
pub async fn login(api: &Api, creds_path: &Path, name: String, passwords: Passwords) -> anyhow::Result<()> {
    let password = passwords.existing("Password: ")?;
    let resp: LoginResponse = api
        .post(
            "/login",
            &LoginRequest {
                name,
                password,
                label: host_name(),
            },
        )
        .await?
        .value;
    keep_login(api, creds_path, &resp).await?;
    eprintln!(
        "logged in as {} on {} (token kept in {})",
        resp.user.name,
        api.base(),
        creds_path.display()
    );
    Ok(())
}

/// `trove logout`: the controller revokes the token, and the stored copy is forgotten, even
/// when the controller cannot be reached (then the token stays valid there, which is said).
/// A token from `--token`/`TROVE_TOKEN` is revoked but the stored one (if another) is kept.
pub async fn logout(api: &Api, creds_path: &Path, token: Option<&str>) -> anyhow::Result<()> {
    let Some(token) = token else {
        bail!("not logged in to {}: no token to log out with", api.base());
    };
    let revoked = api.post_no_answer::<()>("/logout", None).await;
    let mut creds = credentials::load(creds_path)?;
    let forgotten = match creds.login_for(api.base()) {
        Some(l) if l.token == token => {
            creds.forget(api.base());
            credentials::store(creds_path, &creds)?;
            true
        }
        _ => false,
    };
    let here = if forgotten { "; forgot the stored token" } else { "" };
    match revoked {
        Ok(()) => eprintln!("logged out of {}{here}", api.base()),
        Err(e) if refused_with(&e) == Some(StatusCode::UNAUTHORIZED) => {
            eprintln!("the controller at {} no longer knew this token{here}", api.base());
        }
        Err(e) if forgotten => eprintln!(
            "trove: warning: forgot the stored token, but the controller did not revoke it ({e:#}); \
             it stays valid until revoked there (`trove tokens revoke ID` from another login)"
        ),
        Err(e) => return Err(e.context("logging out")),
    }
    Ok(())
}

/// `trove whoami`: the name on stdout; where and how on stderr.
pub async fn whoami(api: &Api, token_source: &str) -> anyhow::Result<()> {
    let me: MeView = api.get("/me").await?.value;
    println!("{}", me.user.name);
    eprintln!(
        "on {}{}, with the token from {token_source}",
        api.base(),
        if me.user.is_admin { " as an admin" } else { "" }
    );
    Ok(())
}

pub struct ProfileChange {
    pub display_name: Option<String>,
    pub bio: Option<String>,
}

/// `trove profile [NAME]`, or a change to mine with `--set-display-name`/`--set-bio`.
pub async fn profile(api: &Api, name: Option<String>, change: ProfileChange, json: bool) -> anyhow::Result<()> {
    let answer = if change.display_name.is_some() || change.bio.is_some() {
        if name.is_some() {
            bail!("only your own profile can be changed: leave out the NAME");
        }
        let update = ProfileUpdate {
            display_name: change.display_name,
            bio: change.bio,
            ..ProfileUpdate::default()
        };
        api.patch::<_, UserView>("/me", &update).await?
    } else {
        match name {
            Some(name) => {
                api.get::<UserView>(&api::path(&["users", &name], &[] as &[(&str, &str)]))
                    .await?
            }
            None => {
                let me = api.get::<MeView>("/me").await?;
                let text = serde_json::to_string(&me.value.user).context("encoding the profile")?;
                api::Answer {
                    value: me.value.user,
                    text,
                }
            }
        }
    };
    if json {
        println!("{}", answer.text.trim());
        return Ok(());
    }
    let u = answer.value;
    println!("name       {}", u.name);
    if !u.display_name.is_empty() {
        println!("shown as   {}", one_line(&u.display_name));
    }
    if !u.bio.is_empty() {
        println!("bio        {}", one_line(&u.bio));
    }
    println!("shares     {}", u.shares);
    println!("joined     {}", format_utc(u.created_at));
    if u.is_admin {
        println!("admin      yes");
    }
    if u.disabled {
        println!("disabled   yes: cannot log in or use tokens");
    }
    Ok(())
}

/// `trove passwd`: the current password (empty when none is set yet, as for the bootstrap
/// admin), then the new one. With `--password-stdin`: two lines, current then new.
pub async fn passwd(api: &Api, passwords: Passwords) -> anyhow::Result<()> {
    let current = passwords.existing("Current password (empty if you have none): ")?;
    let password = passwords.new_password("New password: ")?;
    let update = ProfileUpdate {
        password: Some(password),
        current_password: Some(current).filter(|c| !c.is_empty()),
        ..ProfileUpdate::default()
    };
    let user: UserView = api.patch("/me", &update).await?.value;
    eprintln!("password changed for {}", user.name);
    Ok(())
}

pub enum TokensAction {
    List { json: bool },
    New { label: Option<String> },
    Revoke { id: String },
}

/// `trove tokens`, `tokens new`, `tokens revoke ID`. Revoking the token in use also forgets
/// it here when it is the stored one, as `logout` would.
pub async fn tokens(
    api: &Api,
    creds_path: Option<&Path>,
    token: Option<&str>,
    action: TokensAction,
) -> anyhow::Result<()> {
    match action {
        TokensAction::List { json } => {
            let answer = api.get::<Vec<TokenView>>("/tokens").await?;
            if json {
                println!("{}", answer.text.trim());
                return Ok(());
            }
            let rows: Vec<[String; 5]> = answer
                .value
                .iter()
                .map(|t| {
                    [
                        t.id.clone(),
                        clip(&one_line(&t.label), 40),
                        format_utc(t.created_at),
                        t.last_used_at.map(format_utc).unwrap_or_else(|| "never".into()),
                        if t.current { "this one".into() } else { String::new() },
                    ]
                })
                .collect();
            print_table(["ID", "LABEL", "CREATED (UTC)", "LAST USED", ""], &rows);
        }
        TokensAction::New { label } => {
            let t: NewToken = api.post("/tokens", &TokenRequest { label }).await?.value;
            println!("{}", t.token);
            eprintln!(
                "token {}: shown only now, keep it secret; use it as TROVE_TOKEN or --token, \
                 and revoke it with `trove tokens revoke {}`",
                t.id, t.id
            );
        }
        TokensAction::Revoke { id } => {
            let listed = api.get::<Vec<TokenView>>("/tokens").await?.value;
            let current = listed.iter().any(|t| t.id == id && t.current);
            api.delete(&api::path(&["tokens", &id], &[] as &[(&str, &str)])).await?;
            eprintln!("token {id}: revoked");
            if current {
                let mut creds = match creds_path {
                    Some(path) => credentials::load(path)?,
                    None => credentials::Credentials::default(),
                };
                if let Some(path) = creds_path
                    && token.is_some()
                    && creds.login_for(api.base()).map(|l| l.token.as_str()) == token
                {
                    creds.forget(api.base());
                    credentials::store(path, &creds)?;
                    eprintln!("that was this login's token: forgot it here; `trove login NAME` to log in again");
                } else {
                    eprintln!("that was the token this command used: it no longer works");
                }
            }
        }
    }
    Ok(())
}

pub enum UsersAction {
    List { json: bool },
    Disable { name: String },
    Enable { name: String },
}

/// `trove users`, `users disable NAME`, `users enable NAME` (admin).
pub async fn users(api: &Api, action: UsersAction) -> anyhow::Result<()> {
    let (name, verb) = match action {
        UsersAction::List { json } => {
            let answer = api.get::<Vec<UserView>>("/users").await?;
            if json {
                println!("{}", answer.text.trim());
                return Ok(());
            }
            let rows: Vec<[String; 5]> = answer
                .value
                .iter()
                .map(|u| {
                    let mut notes = Vec::new();
                    if u.is_admin {
                        notes.push("admin");
                    }
                    if u.disabled {
                        notes.push("disabled");
                    }
                    [
                        u.name.clone(),
                        clip(&one_line(&u.display_name), 30),
                        u.shares.to_string(),
                        format_utc(u.created_at),
                        notes.join(", "),
                    ]
                })
                .collect();
            print_table(["NAME", "SHOWN AS", "SHARES", "JOINED (UTC)", ""], &rows);
            return Ok(());
        }
        UsersAction::Disable { name } => (name, "disable"),
        UsersAction::Enable { name } => (name, "enable"),
    };
    let user: UserView = api
        .post_empty(&api::path(&["users", &name, verb], &[] as &[(&str, &str)]))
        .await?
        .value;
    eprintln!("{}: {}", user.name, if user.disabled { "disabled" } else { "enabled" });
    Ok(())
}

/// `trove me`: my shares (with who got them), my downloads and views, my space.
pub async fn me(api: &Api, json: bool) -> anyhow::Result<()> {
    let answer = api.get::<MeView>("/me").await?;
    if json {
        println!("{}", answer.text.trim());
        return Ok(());
    }
    let me = answer.value;
    println!(
        "{}{}: {} shared, taking {}",
        me.user.name,
        if me.user.display_name.is_empty() {
            String::new()
        } else {
            format!(" ({})", one_line(&me.user.display_name))
        },
        match me.shares.len() {
            1 => "1 file".to_owned(),
            n => format!("{n} files"),
        },
        human_bytes(me.shared_bytes)
    );
    if !me.shares.is_empty() {
        println!();
        let rows: Vec<[String; 7]> = me
            .shares
            .iter()
            .map(|s| {
                [
                    clip(&one_line(&s.title), 40),
                    s.kind.clone(),
                    human_bytes(s.size),
                    if s.private { "private".into() } else { String::new() },
                    s.downloaders.to_string(),
                    s.views.to_string(),
                    s.file_id.clone(),
                ]
            })
            .collect();
        print_table(
            ["MY SHARES", "KIND", "SIZE", "", "DOWNLOADERS", "VIEWS", "FILE ID"],
            &rows,
        );
    }
    if !me.history.is_empty() {
        println!();
        let mut history = me.history;
        // The controller sends newest first; sorting again costs nothing and keeps the
        // promise if it ever does not.
        history.sort_by_key(|e| std::cmp::Reverse(e.at));
        let rows: Vec<[String; 4]> = history
            .iter()
            .map(|e| {
                [
                    format_utc(e.at),
                    match e.kind.as_str() {
                        "download" => "got".into(),
                        "view" => "watched".into(),
                        other => other.to_owned(),
                    },
                    clip(&one_line(&e.title), 40),
                    e.file_id.clone(),
                ]
            })
            .collect();
        print_table(["WHEN (UTC)", "", "TITLE", "FILE ID"], &rows);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_line_keeps_everything_but_its_ending() {
        let check = |input: &str, expected: &str| {
            assert_eq!(
                line_of(&mut std::io::Cursor::new(input)).unwrap(),
                expected,
                "{input:?}"
            );
        };
        check("hunter2\n", "hunter2");
        check("hunter2\r\n", "hunter2");
        check("no newline", "no newline");
        check(" spaced out \nsecond\n", " spaced out ");
        check("\n", "");
        assert!(line_of(&mut std::io::Cursor::new("")).is_err());

        // `passwd --password-stdin`: the current password, then the new one.
        let mut two = std::io::Cursor::new("old\nnew\n");
        assert_eq!(line_of(&mut two).unwrap(), "old");
        assert_eq!(line_of(&mut two).unwrap(), "new");
    }
}
