//! `tether login`: a person's console credentials (and second factor)
//! traded for a short-lived API token of their own role, kept in a file
//! only they can read, which the other commands then use when neither
//! TETHER_TOKEN nor TETHER_TOKEN_FILE is set. The session the sign-in made
//! is ended at once: only the token stays.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::client::ApiClient;
use super::failure::ApiProblem;

const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Your account name (asked when not given).
    #[arg(long, env = "TETHER_USER")]
    user: Option<String>,
    /// Read the password from this file (mode 0600; `-` reads stdin)
    /// instead of asking on the terminal.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// The code from your authenticator app (asked on the terminal when
    /// your role needs one and it is not given).
    #[arg(long)]
    totp: Option<String>,
    /// How long the token lives, like 12h (the default) or 30m; at most token_max_ttl.
    #[arg(long, default_value = "12h")]
    ttl: String,
    /// Where to keep the token [default: $XDG_CONFIG_HOME/tether/token, or ~/.config/tether/token].
    #[arg(long)]
    token_file: Option<PathBuf>,
}

/// Where `tether login` keeps the token by default, if there is a home to keep it in.
pub fn default_token_file() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".config")))?;
    Some(config.join("tether").join("token"))
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = args.token_file.clone().or_else(default_token_file).context("no home directory: pass --token-file")?;
    let api = ApiClient::anonymous_from_env(TIMEOUT)?;
    let user = match &args.user {
        Some(user) => user.clone(),
        None => ask("Account: ")?,
    };
    let password = match &args.password_file {
        Some(file) => tether_base::files::read_secret(file)?,
        None if std::io::stdin().is_terminal() => super::vault::prompt_hidden("Password: ")?,
        None => bail!("no terminal to ask for the password on: pass --password-file (`-` reads stdin)"),
    };
    let (session, cookie) = sign_in(&api, &user, &password, args.totp.as_deref()).await?;
    let csrf = session["csrf_token"].as_str().unwrap_or_default().to_owned();
    let role = session["user"]["role"].as_str().context("the sign-in did not say your role")?.to_owned();
    let session_headers = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];
    let made =
        api.call(Method::POST, "/api/v1/tokens", Some(&json!({"role": role, "ttl": args.ttl})), &session_headers).await;
    // The session is not needed past this: only the token stays.
    if let Err(e) = api.call(Method::POST, "/api/v1/auth/logout", None, &session_headers).await {
        tracing::warn!(error = %format!("{e:#}"), "the sign-in's session could not be ended; it expires by itself");
    }
    let made = made?;
    let token = Zeroizing::new(made["token"].as_str().context("no token in the answer")?.to_owned());
    keep(&path, &token)?;
    eprintln!(
        "signed in as {user} ({role}); a token until {} is in {}",
        made["expires_at"].as_str().unwrap_or("its expiry"),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Signs in; asks for the second factor on the terminal when the account
/// needs one and none was given. Answers the session and its cookie.
async fn sign_in(api: &ApiClient, user: &str, password: &str, totp: Option<&str>) -> anyhow::Result<(Value, String)> {
    let body = |totp: Option<&str>| json!({"username": user, "password": password, "totp": totp});
    let first = api.call_with_headers(Method::POST, "/api/v1/auth/login", Some(&body(totp))).await;
    let answer = match first {
        Err(e) if totp.is_none() && is_code(&e, "second_factor_required") => {
            if !std::io::stdin().is_terminal() {
                bail!("this account needs its second factor: pass --totp CODE");
            }
            let code = ask("Code from your authenticator app: ")?;
            api.call_with_headers(Method::POST, "/api/v1/auth/login", Some(&body(Some(code.trim())))).await?
        }
        other => other?,
    };
    let (session, headers) = answer;
    let cookie = headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.split(';').next().filter(|pair| pair.contains('=')))
        .context("the sign-in gave no session")?
        .to_owned();
    Ok((session, cookie))
}

fn is_code(e: &anyhow::Error, code: &str) -> bool {
    e.downcast_ref::<ApiProblem>().is_some_and(|p| p.code == code)
}

/// Reads a line typed on the terminal.
fn ask(prompt: &str) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask on: pass --user (and --password-file, --totp)");
    }
    eprint!("{prompt}");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("reading from the terminal")?;
    Ok(line.trim().to_owned())
}

/// Writes the token where only its owner can read it (its directory made
/// only theirs too).
fn keep(path: &Path, token: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    tether_base::files::write_with_mode(path, format!("{token}\n").as_bytes(), 0o600)
        .with_context(|| format!("cannot write the token to {}", path.display()))
}
