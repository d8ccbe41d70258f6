//! API tokens as the accounts service hands them out: each call one
//! transaction that makes the change and its audit record (see
//! [`crate::auth::tokens`] for the rules).

use super::Accounts;
use crate::audit::Origin;
use crate::auth::tokens::{self, ApiToken, Asker, TokenError, TokenInfo};
use crate::auth::users::{self, UserInfo};
use crate::auth::{AuthError, Principal, Role};
use tether_base::clock::Timestamp;
use tether_store as store;

impl Accounts {
    /// The token `asker` asked for (see [`tokens::issue_requested`]), and
    /// its secret, shown once.
    pub async fn issue_token(
        &self,
        origin: &Origin,
        asker: Asker,
        name: Option<String>,
        role: Role,
        expires_at: Timestamp,
    ) -> Result<(ApiToken, String), TokenError> {
        let (now, origin) = (self.clock.now(), origin.clone());
        self.store.write(move |tx| tokens::issue_requested(tx, now, &origin, &asker, name, role, expires_at)).await
    }

    /// Whom the bearer token `presented` acts for, if it is valid now.
    pub fn token_principal(&self, presented: &str) -> Result<Result<Principal, AuthError>, store::Error> {
        let now = self.clock.now();
        self.store.read(|tx| tokens::authenticate(tx, presented, now))
    }

    /// Tokens, every one or only `owner`'s (never a secret).
    pub fn tokens(&self, owner: Option<&str>) -> Result<Vec<TokenInfo>, store::Error> {
        self.store.read(|tx| tokens::list(tx, owner))
    }

    /// Revokes token `id` (only among `owner`'s, if given).
    pub async fn revoke_token(
        &self,
        origin: &Origin,
        id: String,
        owner: Option<String>,
    ) -> Result<ApiToken, TokenError> {
        let (now, origin) = (self.clock.now(), origin.clone());
        self.store.write(move |tx| tokens::revoke(tx, now, &origin, &id, owner.as_deref())).await
    }

    /// Gives token `id` a new secret (only among `owner`'s, if given).
    pub async fn rotate_token(
        &self,
        origin: &Origin,
        id: String,
        owner: Option<String>,
    ) -> Result<(ApiToken, String), TokenError> {
        let (now, origin) = (self.clock.now(), origin.clone());
        self.store.write(move |tx| tokens::rotate(tx, now, &origin, &id, owner.as_deref())).await
    }

    /// The account `name`, local or signed in through SSO.
    pub fn account(&self, name: &str) -> Result<Option<UserInfo>, store::Error> {
        self.store.read(|tx| {
            if let Some(person) = crate::auth::sso_people::person(tx, name)? {
                let second_factor = crate::auth::sso_people::has_second_factor(tx, name)?;
                return Ok(Some(UserInfo { second_factor, ..UserInfo::from(&person) }));
            }
            Ok(users::get(tx, name)?.as_ref().map(UserInfo::from))
        })
    }
}
