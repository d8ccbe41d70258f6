//! The certificates the listeners serve, kept current while they run.
//!
//! The appliance's own server certificate (both listeners) renews itself
//! two thirds into its lifetime, at once when it names fewer names than
//! configured or outlives the configured lifetime, and is swapped in with
//! no restart: new handshakes get the new one, open connections keep
//! theirs. Renewing needs the CA key, so it waits while the vault is sealed.
//!
//! An operator may supply the console's certificate instead, as PEM files.
//! They are checked (the key matches, the crypto policy approves it, it has
//! not expired) and reloaded on SIGHUP or once the files have changed and
//! settled (two periodic checks apart); a bad
//! replacement is refused, audited, and the one served so far stays.
//!
//! The CA side follows the store's [`CaSet`]: the worker gateway trusts
//! every CA in it, `ca.pem` holds them all (the bundle clients trust), the
//! enrollment chain ends with the CA that issued the server certificate,
//! and a server certificate not from the issuing CA (a rotation moved to
//! the new CA, or rolled back) is renewed at once.
//!
//! On disk a renewal writes `server.key.next` then `server.pem.next`, then
//! renames both into place. The `.pem.next` file is the commit point: a
//! start that finds it finishes the renames; one that finds only the key
//! drops it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;

use crate::config::{Config, OperatorCert};
use tether_base::clock::{SharedClock, Timestamp};
use tether_base::crypto::CryptoPolicy;
use tether_base::files::{sync_dir, write_private, write_with_mode};
use tether_base::tls::{self, ClientTrust, ServedCert};
use tether_domain::audit::{self, Event, Origin, Outcome, Resource};
use tether_domain::pki::{self, CA_CERT, CaSet, ExpiryAlert, SERVER_CERT, SERVER_KEY, Watched};
use tether_domain::vault::Vault;
use tether_store::Store;

/// How often the certificates are looked at when nothing is due sooner:
/// the operator's files for changes, the own certificate for its names.
const CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// How soon to try again after a renewal failed (a sealed vault included).
const RETRY: Duration = Duration::from_secs(10);

/// What each listener serves, and what it is made from.
#[derive(Debug)]
pub struct ListenerCerts {
    /// The appliance's certificate: the worker gateway (and the console
    /// unless the operator supplies one).
    pub own: Arc<ServedCert>,
    /// The same certificate followed by its CA's, for enrollment.
    pub enroll: Arc<ServedCert>,
    /// The console's: `own`, or the operator's.
    pub console: Arc<ServedCert>,
    /// The CAs whose worker certificates the gateway accepts.
    pub worker_trust: Arc<ClientTrust>,
    policy: CryptoPolicy,
    dir: PathBuf,
    /// `ca.pem` as read at start: the current CA of a store from before rotation.
    ca_file_pem: String,
    operator: Option<OperatorCert>,
    /// When the operator's files were last seen changed, by the periodic check.
    settling: std::sync::Mutex<Option<SystemTime>>,
    /// The PEMs served now, for status and expiry reports.
    served: RwLock<Served>,
}

/// The certificate PEMs the listeners serve now.
#[derive(Debug, Clone)]
pub struct Served {
    pub own: String,
    /// The CA certificate that issued `own`.
    pub own_issuer: String,
    /// The operator's console certificate, and when its files last changed.
    pub operator: Option<(String, Option<SystemTime>)>,
}

/// What a renewal needs from the running appliance.
#[derive(Debug, Clone)]
pub struct Renewer {
    pub store: Store,
    pub vault: Arc<Vault>,
    pub clock: SharedClock,
    pub config: Arc<Config>,
}

impl ListenerCerts {
    /// Reads the certificates in `dir` (finishing a renewal a crash cut
    /// short) and the operator's, if configured, and brings `ca.pem` in
    /// line with the store's CAs.
    pub fn load(
        dir: &Path,
        policy: CryptoPolicy,
        store: &Store,
        config: &Config,
        now: Timestamp,
    ) -> anyhow::Result<ListenerCerts> {
        finish_interrupted_swap(dir)?;
        let ca_file_pem = read(dir, CA_CERT)?;
        let set = store.read(|tx| CaSet::load(tx, &ca_file_pem))?;
        write_ca_bundle(dir, &set)?;
        let own_pem = read(dir, SERVER_CERT)?;
        let key_pem = read(dir, SERVER_KEY)?;
        let own = ServedCert::load(policy, &own_pem, &key_pem).context("loading server.pem and server.key")?;
        // A server certificate from a CA no longer trusted renews at the
        // first check; until then the enrollment chain names the current CA.
        let own_issuer = set.issuer_of(&own_pem).unwrap_or(&set.current).to_owned();
        let enroll = ServedCert::load(policy, &tls::enroll_chain(&own_pem, &own_issuer), &key_pem)?;
        let worker_trust = ClientTrust::new(policy, &set.bundle())?;
        let (console, operator_served) = match &config.console_cert {
            Some(files) => {
                let (chain, key, changed) = read_operator(files)?;
                check_operator(policy, &chain, now).map_err(anyhow::Error::msg)?;
                let served = ServedCert::load(policy, &chain, &key)
                    .with_context(|| format!("loading the console certificate {}", files.cert.display()))?;
                (served, Some((chain, changed)))
            }
            None => (own.clone(), None),
        };
        Ok(ListenerCerts {
            own,
            enroll,
            console,
            worker_trust,
            policy,
            dir: dir.to_owned(),
            ca_file_pem,
            operator: config.console_cert.clone(),
            settling: std::sync::Mutex::new(None),
            served: RwLock::new(Served { own: own_pem, own_issuer, operator: operator_served }),
        })
    }

    /// `ca.pem` as read at start.
    pub fn ca_file_pem(&self) -> &str {
        &self.ca_file_pem
    }

    /// The CAs as the store has them now.
    pub fn ca_set(&self, store: &Store) -> Result<CaSet, tether_store::Error> {
        store.read(|tx| CaSet::load(tx, &self.ca_file_pem))
    }

    /// After a rotation step: trusts the store's CAs, rewrites `ca.pem`, and
    /// renews the server certificate if it is not from the issuing CA.
    pub async fn ca_changed(&self, renewer: &Renewer) -> anyhow::Result<()> {
        let set = self.ca_set(&renewer.store)?;
        self.worker_trust.replace(&set.bundle())?;
        write_ca_bundle(&self.dir, &set)?;
        self.renew_if_due(renewer).await.map(|_| ())
    }

    pub fn served(&self) -> Served {
        self.served.read().map(|s| s.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The fingerprint of the certificate the console serves now (the
    /// operator's, or the appliance's own): what a client on this machine
    /// pins to reach it, whoever issued it.
    pub fn console_fingerprint(&self) -> Result<String, tether_domain::pki::CertError> {
        let served = self.served();
        pki::fingerprint_pem(served.operator.as_ref().map_or(&served.own, |(pem, _)| pem))
    }

    /// The expiry alerts at `now` for the certificates served, the CA's,
    /// and the workers'.
    pub fn expiry_alerts(&self, store: &Store, config: &Config, now: Timestamp) -> anyhow::Result<Vec<ExpiryAlert>> {
        let served = self.served();
        let set = self.ca_set(store)?;
        let mut watched = vec![
            Watched { certificate: "ca", pem: &set.current, action: "plan a CA rotation before the CA expires" },
            Watched {
                certificate: "server",
                pem: &served.own,
                action: "unseal the appliance so that it can renew its certificate; check its log",
            },
        ];
        if let Some((pem, _)) = &served.operator {
            let action = "put a renewed console certificate in place and send SIGHUP";
            watched.push(Watched { certificate: "console", pem, action });
        }
        let lifetime = config.worker_cert_lifetime;
        let warning = config.cert_expiry_warning;
        Ok(store.read(|tx| pki::expiry_alerts(tx, now, warning, &watched, lifetime))?)
    }

    /// Audits alerts not audited before, and logs them.
    async fn watch_expiry(&self, renewer: &Renewer) -> anyhow::Result<()> {
        let now = renewer.clock.now();
        let alerts = self.expiry_alerts(&renewer.store, &renewer.config, now)?;
        let new = renewer.store.write(move |tx| pki::record_expiry_alerts(tx, now, alerts)).await?;
        for a in &new {
            let (certificate, id, not_after) = (a.certificate, &a.id, &a.not_after);
            tracing::warn!(certificate, %id, %not_after, expired = a.expired, "certificate expiring: {}", a.action);
        }
        Ok(())
    }

    /// Keeps the certificates current until the task is dropped.
    pub async fn run(self: Arc<Self>, renewer: Renewer) {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            let wait = match self.renew_if_due(&renewer).await {
                Ok(next) => next.min(CHECK_INTERVAL),
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "server certificate renewal failed; will retry");
                    RETRY
                }
            };
            self.reload_operator_if_changed(&renewer, false).await;
            if let Err(e) = self.watch_expiry(&renewer).await {
                tracing::warn!(error = format!("{e:#}"), "the certificate expiry watch failed; will retry");
            }
            let hung_up = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = hung_up => {
                    tracing::info!("SIGHUP: reloading the console certificate");
                    self.reload_operator_if_changed(&renewer, true).await;
                }
            }
        }
    }

    /// Renews the own certificate if it is due; says how long until it is.
    async fn renew_if_due(&self, renewer: &Renewer) -> anyhow::Result<Duration> {
        let now = renewer.clock.now();
        let current = self.served().own;
        let set = self.ca_set(&renewer.store)?;
        let (slot, issuing_pem) = set.issuing();
        let wanted = pki::server_names(&renewer.config.server_names);
        let mut names = pki::cert_names(&current)?;
        let missing = wanted.iter().any(|n| !names.contains(n));
        let (_, not_after) = pki::cert_validity(&current)?;
        let too_long = not_after > now.plus(renewer.config.server_cert_lifetime);
        let due = pki::renewal_due(&current)?;
        let reason = match () {
            () if !pki::issued_by(&current, issuing_pem)? => "ca_rotation",
            () if missing => "names_changed",
            () if too_long => "lifetime_changed",
            () if now >= due => "due",
            () => return Ok(due.since(now)),
        };
        if renewer.vault.is_sealed() {
            anyhow::bail!("the vault is sealed; the CA key is needed to renew");
        }
        // Names the certificate had (given to `tether init`) are kept.
        names.extend(wanted);
        let ca = pki::load_ca(&renewer.store, &renewer.vault, slot, issuing_pem)?;
        let next = ca.issue_server_cert(&names, now, renewer.config.server_cert_lifetime)?;
        write_swap(&self.dir, &next.cert_pem, &next.key_pem)?;
        self.own.replace(&next.cert_pem, &next.key_pem)?;
        self.enroll.replace(&tls::enroll_chain(&next.cert_pem, issuing_pem), &next.key_pem)?;
        if let Ok(mut served) = self.served.write() {
            served.own = next.cert_pem.clone();
            served.own_issuer = issuing_pem.to_owned();
        }
        let (_, not_after) = pki::cert_validity(&next.cert_pem)?;
        let fingerprint = pki::fingerprint_pem(&next.cert_pem)?;
        tracing::info!(%fingerprint, %not_after, reason, "renewed the server certificate");
        let event = Event::new("pki.server_cert_renewed", "renew", Resource::new("server_certificate", &fingerprint))
            .detail("reason", reason)
            .detail("not_after", not_after)
            .detail("previous", pki::fingerprint_pem(&current)?)
            .detail("issuer", ca.fingerprint());
        renewer.store.write(move |tx| audit::append(tx, now, &Origin::system(), event)).await?;
        Ok(pki::renewal_due(&next.cert_pem)?.since(now))
    }

    /// Takes up the operator's console certificate if its files changed
    /// (or, when `forced`, whatever they hold now).
    async fn reload_operator_if_changed(&self, renewer: &Renewer, forced: bool) {
        let Some(files) = &self.operator else { return };
        let seen = self.served().operator.and_then(|(_, changed)| changed);
        let now_modified = modified(files);
        if !forced {
            // A change is taken up once the files have stopped changing for
            // a check, so a pair being copied in (the certificate written,
            // the key not yet) is not refused half-way.
            let mut settling = self.settling.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if now_modified == seen || std::mem::replace(&mut *settling, now_modified) != now_modified {
                return;
            }
        }
        let now = renewer.clock.now();
        let outcome = read_operator(files).map_err(|e| format!("{e:#}")).and_then(|(chain, key, changed)| {
            check_operator(self.policy, &chain, now)?;
            self.console.replace(&chain, &key).map_err(|e| e.to_string())?;
            Ok((chain, changed))
        });
        let event = match outcome {
            Ok((chain, changed)) => {
                let fingerprint = pki::fingerprint_pem(&chain).unwrap_or_default();
                tracing::info!(%fingerprint, "serving the operator's new console certificate");
                if let Ok(mut served) = self.served.write() {
                    served.operator = Some((chain, changed));
                }
                Event::new("pki.console_cert_replaced", "replace", Resource::new("console_certificate", fingerprint))
            }
            Err(why) => {
                tracing::error!(error = %why, "the operator's console certificate was refused; the previous one stays");
                // Remember the attempt, so the same bad files are not retried every minute.
                if let Ok(mut served) = self.served.write()
                    && let Some((_, changed)) = served.operator.as_mut()
                {
                    *changed = modified(files);
                }
                Event::new("pki.console_cert_refused", "replace", Resource::new("console_certificate", "-"))
                    .outcome(Outcome::Failure)
                    .detail("reason", why)
            }
        };
        if let Err(e) = renewer.store.write(move |tx| audit::append(tx, now, &Origin::system(), event)).await {
            tracing::error!(error = %e, "could not audit the console certificate change");
        }
    }
}

/// The operator's chain and key, and when the later of the two changed.
fn read_operator(files: &OperatorCert) -> anyhow::Result<(String, zeroize::Zeroizing<String>, Option<SystemTime>)> {
    let changed = modified(files);
    let chain = std::fs::read_to_string(&files.cert)
        .with_context(|| format!("cannot read the console certificate {}", files.cert.display()))?;
    let key = tether_base::files::read_secret(&files.key)
        .with_context(|| format!("cannot read the console key {}", files.key.display()))?;
    Ok((chain, key, changed))
}

fn modified(files: &OperatorCert) -> Option<SystemTime> {
    let at = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    at(&files.cert).max(at(&files.key))
}

/// What the appliance asks of an operator's certificate beyond matching its
/// key: a key the crypto policy approves, and not expired.
fn check_operator(policy: CryptoPolicy, chain: &str, now: Timestamp) -> Result<(), String> {
    let kind = pki::cert_key_kind(chain).map_err(|e| e.to_string())?;
    if policy.is_fips() {
        policy.check_own_key("the console certificate's key", kind).map_err(|e| e.to_string())?;
    }
    let (_, not_after) = pki::cert_validity(chain).map_err(|e| e.to_string())?;
    if not_after <= now {
        return Err(format!("the console certificate expired at {not_after}"));
    }
    Ok(())
}

/// `ca.pem` holds every CA clients must trust now (rewritten only if it differs).
fn write_ca_bundle(dir: &Path, set: &CaSet) -> anyhow::Result<()> {
    let bundle = set.bundle();
    if read(dir, CA_CERT).ok().as_deref() != Some(bundle.as_str()) {
        write_with_mode(&dir.join(CA_CERT), bundle.as_bytes(), 0o644)?;
        sync_dir(dir)?;
    }
    Ok(())
}

fn read(dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = dir.join(name);
    std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {} (is this a data directory made by `tether init`?)", path.display()))
}

fn next_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.next"))
}

/// Puts a new certificate and key in place so that a crash at any point
/// leaves a matching pair (see the module notes).
fn write_swap(dir: &Path, cert_pem: &str, key_pem: &str) -> anyhow::Result<()> {
    write_private(&next_path(dir, SERVER_KEY), key_pem.as_bytes())?;
    write_with_mode(&next_path(dir, SERVER_CERT), cert_pem.as_bytes(), 0o644)?;
    finish_interrupted_swap(dir)
}

fn finish_interrupted_swap(dir: &Path) -> anyhow::Result<()> {
    let (key_next, cert_next) = (next_path(dir, SERVER_KEY), next_path(dir, SERVER_CERT));
    if cert_next.exists() {
        if key_next.exists() {
            std::fs::rename(&key_next, dir.join(SERVER_KEY))?;
        }
        std::fs::rename(&cert_next, dir.join(SERVER_CERT))?;
    } else if key_next.exists() {
        std::fs::remove_file(&key_next)?;
    }
    sync_dir(dir)?;
    Ok(())
}
