//! The gateway's management, each call one transaction that makes its
//! change and its audit record: virtual keys, upstreams, the enforcement
//! prompts, usage, and reading the prompt log (audited too).

use super::Gateway;
use crate::audit::{self, Event, Origin, Resource};
use crate::llm::keys::Enforcement;
use crate::llm::keys::{self, KeyError, NewKey, VirtualKey};
use crate::llm::prompt_log::{self, Entry, LogError};
use crate::llm::prompts::{self, PromptError};
use crate::llm::upstreams::{self, Upstream, UpstreamError, UpstreamInfo, UpstreamSettings};
use crate::llm::usage::{self, UsageRow};
use tether_store as store;

impl Gateway {
    /// Makes a key; returns it and its secret, shown once.
    pub async fn issue_key(&self, origin: &Origin, new: NewKey) -> Result<(VirtualKey, String), KeyError> {
        let (now, origin) = (self.clock.now(), origin.clone());
        self.store.write(move |tx| keys::issue(tx, now, &origin, new)).await
    }

    /// Keys, every one or only `owner`'s.
    pub fn keys(&self, owner: Option<&str>) -> Result<Vec<VirtualKey>, store::Error> {
        self.store.read(|tx| keys::list(tx, owner))
    }

    /// Revokes key `id` (only among `owner`'s, if given).
    pub async fn revoke_key(&self, origin: &Origin, id: String, owner: Option<String>) -> Result<VirtualKey, KeyError> {
        let (now, origin) = (self.clock.now(), origin.clone());
        self.store.write(move |tx| keys::revoke(tx, now, &origin, &id, owner.as_deref())).await
    }

    /// Sets the upstream `name` (made or replaced) for `origin`'s person `by`:
    /// the settings checked, the CA usable, the credential sealed, then one
    /// audited write.
    pub async fn set_upstream(
        &self,
        origin: &Origin,
        by: &str,
        name: String,
        settings: UpstreamSettings,
    ) -> Result<UpstreamInfo, UpstreamError> {
        upstreams::check(&name, &settings.url, &settings.models).map_err(UpstreamError::Invalid)?;
        if let Some(ca) = &settings.ca_pem {
            tether_base::tls::client(ca, None, tether_base::tls::CLIENT_HTTP_ALPN)
                .map_err(|e| UpstreamError::Invalid(format!("ca_pem: {e}")))?;
        }
        let credential = match &settings.credential {
            Some(secret) => Some(self.vault.encrypt(upstreams::credential_place(&name), secret.as_bytes())?),
            None => None,
        };
        let now = self.clock.now();
        let UpstreamSettings { kind, url, models, ca_pem, .. } = settings;
        let upstream = Upstream { name, kind, url, models, ca_pem, credential, updated_at: now, updated_by: by.into() };
        let info = UpstreamInfo::from(&upstream);
        let origin = origin.clone();
        self.store.write(move |tx| upstreams::put(tx, now, &origin, &upstream)).await?;
        Ok(info)
    }

    /// Every upstream.
    pub fn upstreams(&self) -> Result<Vec<Upstream>, store::Error> {
        self.store.read(upstreams::list)
    }

    /// Removes the upstream `name`; `false` if there was none.
    pub async fn remove_upstream(&self, origin: &Origin, name: String) -> Result<bool, store::Error> {
        let (now, origin) = (self.clock.now(), origin.clone());
        self.store.write(move |tx| upstreams::remove(tx, now, &origin, &name)).await
    }

    /// Replaces the system prompt of `level`.
    pub async fn set_prompt(&self, origin: &Origin, level: Enforcement, prompt: String) -> Result<(), PromptError> {
        let (now, origin) = (self.clock.now(), origin.clone());
        self.store.write(move |tx| prompts::set(tx, now, &origin, level, &prompt)).await
    }

    /// Usage per day between `from` and `to` (inclusive, `YYYY-MM-DD`), of
    /// every owner or only `owner`.
    pub fn usage(&self, from: &str, to: &str, owner: Option<&str>) -> Result<Vec<UsageRow>, store::Error> {
        self.store.read(|tx| usage::report(tx, from, to, owner))
    }

    /// Opens the newest `limit` logged calls (of `key_id`, or every key's)
    /// for `origin`, and audits the reading: which entries were seen, by whom.
    pub async fn read_prompt_log(
        &self,
        origin: &Origin,
        key_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entry>, LogError> {
        let keys = self.vault.keys()?;
        let entries = self.store.read(|tx| prompt_log::read(tx, &keys, key_id, limit))?;
        let event = Event::new("llm.prompt_log_read", "read", Resource::new("llm_prompt_log", key_id.unwrap_or("*")))
            .detail("entries", entries.len())
            .detail("ids", entries.iter().map(|e| e.id.as_str()).collect::<Vec<_>>().join(","));
        let (now, origin) = (self.clock.now(), origin.clone());
        self.store.write(move |tx| audit::append(tx, now, &origin, event)).await?;
        Ok(entries)
    }
}
