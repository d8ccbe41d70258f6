//! Who may do what: people and their sessions, API tokens, roles, and the
//! permission table.
//!
//! [`grant`] is the single source of truth for access. Every route names one
//! [`Permission`]; the API asks [`grant`] for the caller's role and gets back
//! how much of the resource the role may see ([`Scope`]) or nothing.
//!
//! Token and session secrets are shown once and stored only as SHA-256
//! hashes (they are 256 random bits, so a fast hash is the right tool);
//! passwords use a slow one ([`password`]). Logs and audit records name a
//! token or session by its public id.

mod accounts;
pub mod factors;
pub mod oidc;
pub mod password;
pub mod rescue;
pub mod roles;
pub mod sessions;
pub mod sso;
pub mod sso_people;
pub mod throttle;
pub mod tokens;
pub mod totp;
pub mod users;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use accounts::{AccountError, Accounts, Credentials, LoggedIn, LoginError};
pub use sessions::Lifetimes;
pub use tokens::{ApiToken, TokenError, authenticate, issue_token};

/// An authenticated caller: whom it acts for, with which role, and how it
/// proved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub via: Via,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A bearer token; `holder`: who stands behind it (its owner, or for a
    /// service token the person who made it); `note_use`: its "last used"
    /// is due an update.
    Token { id: String, holder: tokens::Holder, note_use: bool },
    /// A console session. `set_up`: the account has its own password (and
    /// its second factor, if its role needs one); until then only its own
    /// account's routes answer. `fresh`: authenticated within the
    /// re-authentication window. `note_use`: "last seen" is due an update.
    Session { id: String, key: [u8; 32], set_up: bool, fresh: bool, note_use: bool },
}

impl Principal {
    /// The public id of the credential, for audit records.
    pub fn credential_id(&self) -> &str {
        match &self.via {
            Via::Token { id, .. } | Via::Session { id, .. } => id,
        }
    }
}

/// The role a person holds *now*: `None` if no such account exists or it
/// is disabled. Credentials are bounded by this at every use, so a
/// demotion or a disabled account takes effect on the next request.
pub fn current_role(mut tx: impl tether_store::Reads, person: &str) -> Result<Option<Role>, tether_store::Error> {
    if let Some(sso) = sso_people::person(&mut tx, person)? {
        return Ok(Some(sso.role));
    }
    Ok(users::get(&mut tx, person)?.filter(|u| !u.disabled).map(|u| u.role))
}

/// The roles of the design. `worker` is a machine identity (mTLS), not a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    SecurityOfficer,
    Auditor,
    Developer,
    Viewer,
    Worker,
}

impl Permission {
    pub const ALL: [Permission; 32] = [
        Permission::Public,
        Permission::TaskCreate,
        Permission::TaskRead,
        Permission::TaskCancel,
        Permission::WorkerRead,
        Permission::WorkerEnroll,
        Permission::WorkerRevoke,
        Permission::TokenManage,
        Permission::OwnAccount,
        Permission::UserRead,
        Permission::UserManage,
        Permission::RoleChange,
        Permission::RoleApprove,
        Permission::AuditRead,
        Permission::AuditSinkManage,
        Permission::AlertRead,
        Permission::MetricsRead,
        Permission::VaultManage,
        Permission::SecretRead,
        Permission::SecretWrite,
        Permission::BackupCreate,
        Permission::CaManage,
        Permission::CryptoManage,
        Permission::LlmKeyManage,
        Permission::LlmUpstreamManage,
        Permission::LlmPromptManage,
        Permission::LlmUsageRead,
        Permission::LlmModelImport,
        Permission::LlmModelTrust,
        Permission::LlmPromptLogRead,
        Permission::FirmwareUpdate,
        Permission::NetworkManage,
    ];

    /// Actions drastic enough that a console session must have proved the
    /// person again within the re-authentication window.
    /// Whether a console session needs a recent login for a request under
    /// this permission; `mints`: the request creates something (a POST).
    /// Sensitive permissions always do, and so does minting or rotating an
    /// API token: a credential that outlives the session.
    pub fn needs_recent_login(self, mints: bool) -> bool {
        self.is_sensitive() || (mints && self == Permission::TokenManage)
    }

    pub fn is_sensitive(self) -> bool {
        matches!(
            self,
            Permission::VaultManage
                | Permission::CaManage
                | Permission::CryptoManage
                | Permission::RoleChange
                | Permission::RoleApprove
                | Permission::AuditSinkManage
                | Permission::LlmPromptManage
                | Permission::LlmModelTrust
                | Permission::LlmPromptLogRead
                | Permission::FirmwareUpdate
                | Permission::NetworkManage
        )
    }
}

impl Role {
    pub const ALL: [Role; 6] =
        [Role::Admin, Role::SecurityOfficer, Role::Auditor, Role::Developer, Role::Viewer, Role::Worker];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::SecurityOfficer => "security_officer",
            Role::Auditor => "auditor",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
            Role::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            format!("unknown role {s:?}; one of admin, security_officer, auditor, developer, viewer, worker")
        })
    }
}

/// What a route does, as far as access control cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// No credentials needed (health).
    Public,
    TaskCreate,
    TaskRead,
    TaskCancel,
    WorkerRead,
    WorkerEnroll,
    /// Revoke a worker's enrollment (its certificates stop working at once).
    WorkerRevoke,
    /// Create, list, rotate and revoke API tokens (one's own, or anyone's
    /// with `All`). A token never carries more than its creator's rights.
    TokenManage,
    /// A person's own account: session, password, second factor.
    OwnAccount,
    /// See accounts.
    UserRead,
    /// Create and disable accounts, reset passwords, end sessions.
    UserManage,
    /// Change a person's role (granting or removing security_officer then
    /// waits for [`Permission::RoleApprove`]).
    RoleChange,
    /// Approve a pending role change (a second security officer).
    RoleApprove,
    AuditRead,
    /// Add, change or remove audit sinks (where the log goes to the SIEM).
    AuditSinkManage,
    /// See raised alerts.
    AlertRead,
    /// Scrape `/metrics` (a viewer's token is the scrape token).
    MetricsRead,
    /// Seal the vault, rotate its keys.
    VaultManage,
    /// See secrets' metadata (never a value).
    SecretRead,
    /// Write a secret's value or policy, delete a secret.
    SecretWrite,
    /// Take a backup of the whole appliance.
    BackupCreate,
    /// Step a CA rotation (add, issue, retire, roll back).
    CaManage,
    /// Switch the crypto mode (FIPS or standard).
    CryptoManage,
    /// Make, list and revoke LLM virtual keys (one's own, or anyone's with `All`).
    LlmKeyManage,
    /// Configure the model servers the gateway forwards to.
    LlmUpstreamManage,
    /// Set the enforcement levels' system prompts.
    LlmPromptManage,
    /// See the gateway's usage (one's own, or everyone's with `All`).
    LlmUsageRead,
    /// Import signed model bundles into the model servers; list them.
    LlmModelImport,
    /// Set the site's model-signing key, which decides what may be imported.
    LlmModelTrust,
    /// Open the prompt log: what people asked the models and what they answered.
    LlmPromptLogRead,
    /// Upload a firmware update to the appliance's image (it restarts into
    /// it). What runs and how an update goes are the system status's.
    FirmwareUpdate,
    /// Change the machine's host name, address (static or DHCP) and time
    /// servers on the firmware image: the console may move to another
    /// address.
    NetworkManage,
}

/// How much of a resource a grant covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything, payloads included.
    All,
    /// Only resources the caller created, payloads included.
    Own,
    /// Everything, but metadata only: never task inputs or results.
    Metadata,
}

/// The roles that hold `permission` (in any scope), for a refusal to name.
pub fn roles_with(permission: Permission) -> Vec<Role> {
    Role::ALL.into_iter().filter(|role| grant(*role, permission).is_some()).collect()
}

/// The permission table: which role holds which permission, and how far.
/// `Public` routes are open to everyone and never reach this table.
pub fn grant(role: Role, permission: Permission) -> Option<Scope> {
    use Permission as P;
    use Role as R;
    use Scope as S;
    match (permission, role) {
        (P::Public, _) => Some(S::All),

        (P::TaskCreate, R::Admin | R::Developer) => Some(S::All),
        (P::TaskCreate, R::SecurityOfficer | R::Auditor | R::Viewer | R::Worker) => None,

        (P::TaskRead | P::TaskCancel, R::Admin) => Some(S::All),
        (P::TaskRead | P::TaskCancel, R::Developer) => Some(S::Own),
        (P::TaskRead, R::Viewer | R::SecurityOfficer) => Some(S::Metadata),
        (P::TaskRead, R::Auditor | R::Worker) => None,
        (P::TaskCancel, R::SecurityOfficer | R::Auditor | R::Viewer | R::Worker) => None,

        (P::WorkerRead, R::Admin | R::SecurityOfficer | R::Viewer) => Some(S::Metadata),
        (P::WorkerRead, R::Auditor | R::Developer | R::Worker) => None,

        (P::WorkerEnroll, R::Admin) => Some(S::All),
        (P::WorkerEnroll, R::SecurityOfficer | R::Auditor | R::Developer | R::Viewer | R::Worker) => None,

        (P::TokenManage, R::Admin) => Some(S::All),
        (P::TokenManage, R::SecurityOfficer | R::Auditor | R::Developer | R::Viewer) => Some(S::Own),
        (P::TokenManage, R::Worker) => None,

        (P::OwnAccount, R::Admin | R::SecurityOfficer | R::Auditor | R::Developer | R::Viewer) => Some(S::Own),
        (P::OwnAccount, R::Worker) => None,

        (P::UserRead, R::Admin | R::SecurityOfficer) => Some(S::All),
        (P::UserRead, R::Auditor | R::Developer | R::Viewer | R::Worker) => None,

        (P::UserManage | P::RoleChange, R::Admin) => Some(S::All),
        (P::UserManage | P::RoleChange, R::SecurityOfficer | R::Auditor | R::Developer | R::Viewer | R::Worker) => None,

        (P::RoleApprove, R::SecurityOfficer) => Some(S::All),
        (P::RoleApprove, R::Admin | R::Auditor | R::Developer | R::Viewer | R::Worker) => None,

        // The security officer's alone: an admin cannot silence the SIEM.
        (P::AuditSinkManage, R::SecurityOfficer) => Some(S::All),
        (P::AuditSinkManage, R::Admin | R::Auditor | R::Developer | R::Viewer | R::Worker) => None,

        (P::AlertRead, R::Admin | R::SecurityOfficer | R::Auditor) => Some(S::All),
        (P::AlertRead, R::Developer | R::Viewer | R::Worker) => None,

        (P::MetricsRead, R::Admin | R::SecurityOfficer | R::Auditor | R::Viewer) => Some(S::Metadata),
        (P::MetricsRead, R::Developer | R::Worker) => None,

        (P::WorkerRevoke, R::Admin | R::SecurityOfficer) => Some(S::All),
        (P::WorkerRevoke, R::Auditor | R::Developer | R::Viewer | R::Worker) => None,

        (P::AuditRead, R::Admin | R::SecurityOfficer | R::Auditor) => Some(S::All),
        (P::AuditRead, R::Developer | R::Viewer | R::Worker) => None,

        (P::SecretRead, R::Admin | R::SecurityOfficer | R::Developer | R::Auditor | R::Viewer) => Some(S::Metadata),
        (P::SecretRead, R::Worker) => None,

        (P::SecretWrite, R::Admin | R::SecurityOfficer) => Some(S::All),
        (P::SecretWrite, R::Auditor | R::Developer | R::Viewer | R::Worker) => None,

        (P::BackupCreate, R::Admin) => Some(S::All),
        (P::BackupCreate, R::SecurityOfficer | R::Auditor | R::Developer | R::Viewer | R::Worker) => None,

        (P::VaultManage, R::Admin | R::SecurityOfficer) => Some(S::All),
        (P::VaultManage, R::Auditor | R::Developer | R::Viewer | R::Worker) => None,

        (P::CaManage, R::Admin | R::SecurityOfficer) => Some(S::All),
        (P::CaManage, R::Auditor | R::Developer | R::Viewer | R::Worker) => None,

        // The security officer's decision alone, re-authenticated.
        (P::CryptoManage, R::SecurityOfficer) => Some(S::All),
        (P::CryptoManage, R::Admin | R::Auditor | R::Developer | R::Viewer | R::Worker) => None,

        (P::LlmKeyManage, R::Admin) => Some(S::All),
        (P::LlmKeyManage, R::Developer) => Some(S::Own),
        (P::LlmKeyManage, R::SecurityOfficer | R::Auditor | R::Viewer | R::Worker) => None,

        (P::LlmUpstreamManage, R::Admin) => Some(S::All),
        (P::LlmUpstreamManage, R::SecurityOfficer | R::Auditor | R::Developer | R::Viewer | R::Worker) => None,

        // What the gateway tells every model is a policy: the officer's.
        (P::LlmPromptManage, R::SecurityOfficer) => Some(S::All),
        (P::LlmPromptManage, R::Admin | R::Auditor | R::Developer | R::Viewer | R::Worker) => None,

        (P::LlmUsageRead, R::Admin | R::SecurityOfficer | R::Auditor) => Some(S::All),
        (P::LlmUsageRead, R::Developer) => Some(S::Own),
        (P::LlmUsageRead, R::Viewer | R::Worker) => None,

        (P::LlmModelImport, R::Admin) => Some(S::All),
        (P::LlmModelImport, R::SecurityOfficer | R::Auditor | R::Developer | R::Viewer | R::Worker) => None,

        (P::FirmwareUpdate, R::Admin) => Some(S::All),
        (P::FirmwareUpdate, R::SecurityOfficer | R::Auditor | R::Developer | R::Viewer | R::Worker) => None,
        (P::NetworkManage, R::Admin) => Some(S::All),
        (P::NetworkManage, R::SecurityOfficer | R::Auditor | R::Developer | R::Viewer | R::Worker) => None,

        // Which models may enter the site is a policy: the officer's.
        (P::LlmModelTrust, R::SecurityOfficer) => Some(S::All),
        (P::LlmModelTrust, R::Admin | R::Auditor | R::Developer | R::Viewer | R::Worker) => None,

        // People's prompts: for oversight, not for running the appliance;
        // the officer's alone, since an admin may make auditors.
        (P::LlmPromptLogRead, R::SecurityOfficer) => Some(S::All),
        (P::LlmPromptLogRead, R::Admin | R::Auditor | R::Developer | R::Viewer | R::Worker) => None,
    }
}

/// Whether a credential of role `creator` may make one of role `role`: only
/// if every grant of `role` is covered by the creator's own. Workers are
/// machines with certificates, never tokens.
pub fn may_delegate(creator: Role, role: Role) -> bool {
    role != Role::Worker
        && Permission::ALL.into_iter().all(|p| match (grant(creator, p), grant(role, p)) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(Scope::All), Some(_)) => true,
            (Some(have), Some(want)) => have == want,
        })
}

/// Why a credential was not accepted. Deliberately coarse toward clients:
/// the API answers every variant the same way so probing learns nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credential was presented")]
    Missing,
    #[error("the credential is not well formed")]
    Malformed,
    #[error("the credential is not known")]
    Unknown,
    #[error("the credential has expired")]
    Expired,
    /// Revoked, or replaced by rotation, before it expired.
    #[error("the credential was revoked")]
    Revoked,
    /// The person behind it no longer exists or is disabled.
    #[error("the credential's holder no longer has an enabled account")]
    HolderGone,
    /// The person behind it no longer holds the rights it carries (demoted).
    #[error("the credential carries more rights than its holder now has")]
    HolderLacksRole,
}

impl AuthError {
    /// A stable label for the audit record.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::Unknown => "unknown",
            AuthError::Expired => "expired",
            AuthError::Revoked => "revoked",
            AuthError::HolderGone => "holder_gone",
            AuthError::HolderLacksRole => "holder_lacks_role",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_role_may_make_a_credential_with_more_rights_than_its_own() {
        assert!(may_delegate(Role::Admin, Role::Developer));
        assert!(may_delegate(Role::Admin, Role::Viewer));
        assert!(may_delegate(Role::Admin, Role::Auditor));
        assert!(!may_delegate(Role::Admin, Role::SecurityOfficer), "an admin holds no crypto or approval rights");
        assert!(!may_delegate(Role::SecurityOfficer, Role::Admin));
        assert!(
            !may_delegate(Role::Developer, Role::Viewer),
            "a viewer sees all tasks' metadata, a developer only its own"
        );
        assert!(!may_delegate(Role::Viewer, Role::Developer));
        for r in Role::ALL {
            assert!(!may_delegate(r, Role::Worker));
            if r != Role::Worker {
                assert!(may_delegate(r, r), "{r} may make its own role");
            }
        }
    }

    #[test]
    fn the_permission_list_names_every_permission() {
        // A permission missing from ALL would escape `may_delegate`. This
        // match stops compiling when a variant is added, sending whoever
        // adds it here to list it and raise the count below.
        for p in Permission::ALL {
            match p {
                Permission::Public
                | Permission::TaskCreate
                | Permission::TaskRead
                | Permission::TaskCancel
                | Permission::WorkerRead
                | Permission::WorkerEnroll
                | Permission::WorkerRevoke
                | Permission::TokenManage
                | Permission::OwnAccount
                | Permission::UserRead
                | Permission::UserManage
                | Permission::RoleChange
                | Permission::RoleApprove
                | Permission::AuditRead
                | Permission::AuditSinkManage
                | Permission::AlertRead
                | Permission::MetricsRead
                | Permission::VaultManage
                | Permission::SecretRead
                | Permission::SecretWrite
                | Permission::BackupCreate
                | Permission::CaManage
                | Permission::CryptoManage
                | Permission::LlmKeyManage
                | Permission::LlmUpstreamManage
                | Permission::LlmPromptManage
                | Permission::LlmUsageRead
                | Permission::LlmModelImport
                | Permission::LlmModelTrust
                | Permission::LlmPromptLogRead
                | Permission::FirmwareUpdate
                | Permission::NetworkManage => {}
            }
        }
        let distinct: std::collections::HashSet<_> = Permission::ALL.into_iter().collect();
        assert_eq!(distinct.len(), Permission::ALL.len());
    }

    #[test]
    fn roles_round_trip_through_their_names() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn the_table_keeps_least_privilege() {
        let cases = [
            (Role::Viewer, Permission::TaskRead, Some(Scope::Metadata)),
            (Role::Developer, Permission::TaskRead, Some(Scope::Own)),
            (Role::Developer, Permission::TaskCancel, Some(Scope::Own)),
            (Role::Auditor, Permission::TaskRead, None),
            (Role::Auditor, Permission::AuditRead, Some(Scope::All)),
            (Role::Worker, Permission::TaskCreate, None),
            (Role::Worker, Permission::AuditRead, None),
            (Role::Developer, Permission::TokenManage, Some(Scope::Own)),
            (Role::Admin, Permission::CryptoManage, None),
            (Role::Admin, Permission::RoleApprove, None),
            (Role::SecurityOfficer, Permission::RoleChange, None),
            (Role::Admin, Permission::WorkerEnroll, Some(Scope::All)),
        ];
        for (role, perm, want) in cases {
            assert_eq!(grant(role, perm), want, "{role} {perm:?}");
        }
    }
}
