//! Who may do what: roles, the permission table, API tokens.
//!
//! [`grant`] is the single source of truth for access. Every route names one
//! [`Permission`]; the API asks [`grant`] for the caller's role and gets back
//! how much of the resource the role may see ([`Scope`]) or nothing.
//!
//! Token secrets are shown once and stored only as SHA-256 hashes (they are
//! 256 random bits, so a fast hash is the right tool; passwords come later and
//! use a slow one). Logs and audit records name a token by its public id.

mod tokens;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use tokens::{Principal, TokenRecord, authenticate, issue_token};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    TokenCreate,
    AuditRead,
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

        (P::WorkerEnroll | P::TokenCreate, R::Admin) => Some(S::All),
        (P::WorkerEnroll | P::TokenCreate, R::SecurityOfficer | R::Auditor | R::Developer | R::Viewer | R::Worker) => {
            None
        }

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
    }
}

/// Why a credential was not accepted. Deliberately coarse toward clients:
/// the API answers every variant the same way so probing learns nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token was presented")]
    Missing,
    #[error("the bearer token is not well formed")]
    Malformed,
    #[error("the bearer token is not known")]
    Unknown,
    #[error("the bearer token has expired")]
    Expired,
}

impl AuthError {
    /// A stable label for the audit record.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::Unknown => "unknown",
            AuthError::Expired => "expired",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            (Role::Developer, Permission::TokenCreate, None),
            (Role::Admin, Permission::WorkerEnroll, Some(Scope::All)),
        ];
        for (role, perm, want) in cases {
            assert_eq!(grant(role, perm), want, "{role} {perm:?}");
        }
    }
}
