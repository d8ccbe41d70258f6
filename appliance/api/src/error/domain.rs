//! How each domain error becomes an [`ApiError`]: one `From` per service's
//! error type, each match exhaustive, so a new domain variant is decided
//! here.

use super::ApiError;
use tether_domain::auth::oidc::OidcError;
use tether_domain::auth::sso::SsoError;
use tether_domain::auth::users::UserError;
use tether_domain::auth::{AccountError, LoginError, TokenError};
use tether_domain::firmware::upload::UploadError;
use tether_domain::llm::models::ImportError;
use tether_domain::llm::prompt_log::LogError;
use tether_domain::vault::secrets::SecretError;
use tether_domain::{backup, broker, pki, vault};
use tether_store as store;

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::Degraded => ApiError::AuditDegraded,
            store::Error::RandomFailed
            | store::Error::AlreadyOpen
            | store::Error::SchemaTooNew { .. }
            | store::Error::NotInitialised
            | store::Error::Exists(_)
            | store::Error::Storage(_)
            | store::Error::Io(_)
            | store::Error::Corrupt { .. }
            | store::Error::JournalGap { .. }
            | store::Error::CommitFailed
            | store::Error::BatchAborted
            | store::Error::WriterGone
            | store::Error::Injected(_) => ApiError::internal(e),
        }
    }
}

impl From<SsoError> for ApiError {
    fn from(e: SsoError) -> Self {
        match e {
            SsoError::Provider(e @ (OidcError::Unreachable(_) | OidcError::Unavailable(_))) => {
                ApiError::SsoProviderUnavailable(e.to_string())
            }
            SsoError::Provider(OidcError::Refused(m)) | SsoError::Refused(m) => ApiError::SsoFailed(m),
            SsoError::NoRole => ApiError::SsoNoRole,
            SsoError::NameTaken => ApiError::SsoFailed(e.to_string()),
            SsoError::Busy => ApiError::RateLimited(std::time::Duration::from_secs(60)),
            SsoError::Store(e) => e.into(),
            SsoError::Vault(e) => e.into(),
        }
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::Busy(_) => ApiError::FirmwareUpdateBusy(e.to_string()),
            UploadError::Refused(_) => ApiError::BundleRefused(e.to_string()),
            UploadError::Io(_) | UploadError::Stopped(_) => ApiError::internal(anyhow::Error::new(e)),
            UploadError::Store(e) => e.into(),
        }
    }
}

impl From<ImportError> for ApiError {
    fn from(e: ImportError) -> Self {
        match e {
            ImportError::Busy => ApiError::ModelImportBusy(e.to_string()),
            ImportError::NoSigningKey => ApiError::ModelSigningKeyMissing(e.to_string()),
            ImportError::Refused(_) => ApiError::BundleRefused(e.to_string()),
            ImportError::Exists(_) | ImportError::PathTaken(_) => ApiError::ModelExists(e.to_string()),
            ImportError::NoUpstream(m) => ApiError::InvalidRequest(m),
            ImportError::NoVllmDir => ApiError::VllmDirNotConfigured(e.to_string()),
            ImportError::ModelServer(_) | ImportError::ModelServerUnreachable(_) => {
                ApiError::ModelServerRefused(e.to_string())
            }
            ImportError::Io(_) | ImportError::StoredKey(_) | ImportError::Stopped(_) => ApiError::internal(e),
            ImportError::Store(e) => e.into(),
            ImportError::Vault(e) => e.into(),
        }
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Vault(e) => e.into(),
            LogError::Store(e) => e.into(),
        }
    }
}

impl From<broker::Error> for ApiError {
    fn from(e: broker::Error) -> Self {
        match e {
            broker::Error::NotFound => ApiError::NotFound,
            broker::Error::InvalidTask(m) => ApiError::InvalidRequest(m),
            broker::Error::LeaseStale => ApiError::LeaseStale,
            broker::Error::AlreadyFinished => ApiError::TaskFinished,
            broker::Error::IdempotencyConflict => ApiError::IdempotencyConflict,
            broker::Error::Draining => ApiError::Draining,
            broker::Error::Store(e) => e.into(),
            broker::Error::Vault(e) => e.into(),
            broker::Error::SecretRefused(m) => ApiError::SecretRefused(m),
            broker::Error::EventsFull(m) => ApiError::TaskEventsFull(m),
        }
    }
}

impl From<pki::RotationError> for ApiError {
    fn from(e: pki::RotationError) -> Self {
        use pki::RotationError as R;
        match e {
            R::InProgress(_) | R::NotInProgress | R::WrongPhase { .. } | R::Changed => {
                ApiError::RotationConflict(e.to_string())
            }
            R::StillInUse { .. } | R::ServerOnOldCa | R::BundleNotDelivered { .. } => ApiError::CaInUse(e.to_string()),
            R::Cert(e) => e.into(),
            R::Vault(e) => e.into(),
            R::Store(e) => e.into(),
        }
    }
}

impl From<pki::EnrollError> for ApiError {
    fn from(e: pki::EnrollError) -> Self {
        match e {
            pki::EnrollError::TokenInvalid => ApiError::EnrollmentTokenInvalid,
            pki::EnrollError::UnknownWorker | pki::EnrollError::Revoked => ApiError::WorkerRevoked,
            pki::EnrollError::Superseded => ApiError::CertificateSuperseded,
            pki::EnrollError::Invalid(m) => ApiError::InvalidRequest(m),
            pki::EnrollError::Cert(e) => e.into(),
            pki::EnrollError::Store(e) => e.into(),
        }
    }
}

impl From<pki::CertError> for ApiError {
    fn from(e: pki::CertError) -> Self {
        match e {
            pki::CertError::CsrInvalid(_) | pki::CertError::CsrKeyType(_) => ApiError::CsrRefused(e.to_string()),
            pki::CertError::KeyGeneration(_)
            | pki::CertError::Signing(_)
            | pki::CertError::BadCertificate(_)
            | pki::CertError::BadCa(_) => ApiError::internal(e),
            pki::CertError::Vault(e) => e.into(),
        }
    }
}

impl From<pki::CrlError> for ApiError {
    fn from(e: pki::CrlError) -> Self {
        match e {
            pki::CrlError::Cert(e) => e.into(),
            pki::CrlError::Store(e) => e.into(),
        }
    }
}

impl From<vault::Error> for ApiError {
    fn from(e: vault::Error) -> Self {
        use vault::Error as V;
        match e {
            V::Sealed => ApiError::Sealed,
            V::WrongPassphrase
            | V::WrongKeyFile
            | V::SharesDoNotOpen
            | V::WrongMethod { .. }
            | V::NotAKeyFile
            | V::QuorumNeeded => ApiError::UnsealRefused(e.to_string()),
            V::Share(_) | V::ShareFromAnotherSet { .. } | V::DuplicateShare { .. } => {
                ApiError::ShareInvalid(e.to_string())
            }
            V::WeakPassphrase | V::BadShareSetup => ApiError::InvalidRequest(e.to_string()),
            V::NotAllowedInMode(why) => ApiError::KeyNotApproved(why),
            V::Integrity { .. } | V::UnknownKeyVersion(_) => ApiError::Integrity(e),
            V::Store(s) => s.into(),
            V::NotInitialised | V::AlreadyInitialised | V::KeyExhausted | V::Corrupt(_) | V::Random => {
                ApiError::internal(e)
            }
        }
    }
}

impl From<SecretError> for ApiError {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::Invalid(m) => ApiError::InvalidRequest(m),
            SecretError::NotFound(_) => ApiError::NotFound,
            SecretError::Vault(v) => v.into(),
        }
    }
}

impl From<backup::Error> for ApiError {
    fn from(e: backup::Error) -> Self {
        match e {
            backup::Error::Vault(v) => v.into(),
            backup::Error::Store(s) => s.into(),
            backup::Error::Damaged(_)
            | backup::Error::HeaderUnreadable(_)
            | backup::Error::UnknownFormat(_)
            | backup::Error::HeaderUnwritable(_)
            | backup::Error::Tampered
            | backup::Error::EpochTampered
            | backup::Error::Rollback { .. }
            | backup::Error::OfficerNeeded
            | backup::Error::AuditBroken(_) => ApiError::internal(e),
            backup::Error::NotOurs => ApiError::BackupNotOurs,
        }
    }
}

impl From<LoginError> for ApiError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::Invalid => ApiError::InvalidCredentials,
            LoginError::SecondFactorRequired => ApiError::SecondFactorRequired,
            LoginError::NoSecondFactorPending => ApiError::SecondFactorNotPending,
            LoginError::NotEnrolled => ApiError::SecondFactorNotEnrolled,
            LoginError::Throttled(r) => ApiError::Throttled(r.retry_after()),
            LoginError::Password(p) => ApiError::AccountRefused(p.to_string()),
            LoginError::Vault(v) => v.into(),
            LoginError::Store(s) => s.into(),
        }
    }
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::NotFound => ApiError::NotFound,
            UserError::Exists | UserError::NothingPending => ApiError::Conflict(e.to_string()),
            UserError::BadName => ApiError::InvalidRequest(e.to_string()),
            UserError::WorkerRole
            | UserError::OwnAccount
            | UserError::LastSecurityOfficer
            | UserError::NotASecondOfficer => ApiError::AccountRefused(e.to_string()),
            UserError::Store(s) => s.into(),
        }
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::User(u) => u.into(),
            AccountError::Password(p) => ApiError::AccountRefused(p.to_string()),
            AccountError::WrongPassword | AccountError::WrongCode => ApiError::InvalidCredentials,
            AccountError::NoTotpPending => ApiError::Conflict(e.to_string()),
            AccountError::Vault(v) => v.into(),
            AccountError::Store(s) => s.into(),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::NotFound => ApiError::NotFound,
            TokenError::HolderLacksRole | TokenError::NotYoursToName | TokenError::MoreThanYourRole { .. } => {
                ApiError::ExceedsYourRights(e.to_string())
            }
            TokenError::BadName => ApiError::InvalidRequest(e.to_string()),
            TokenError::Store(s) => s.into(),
        }
    }
}

impl From<tether_domain::llm::prompts::PromptError> for ApiError {
    fn from(e: tether_domain::llm::prompts::PromptError) -> Self {
        use tether_domain::llm::prompts::PromptError as P;
        match e {
            P::Invalid(m) => ApiError::InvalidRequest(m),
            P::Store(e) => e.into(),
        }
    }
}

impl From<tether_domain::llm::upstreams::UpstreamError> for ApiError {
    fn from(e: tether_domain::llm::upstreams::UpstreamError) -> Self {
        use tether_domain::llm::upstreams::UpstreamError as U;
        match e {
            U::Invalid(m) => ApiError::InvalidRequest(m),
            U::Vault(e) => e.into(),
            U::Store(e) => e.into(),
        }
    }
}

impl From<tether_domain::llm::keys::KeyError> for ApiError {
    fn from(e: tether_domain::llm::keys::KeyError) -> Self {
        use tether_domain::llm::keys::KeyError as K;
        match e {
            K::NotFound => ApiError::NotFound,
            K::OwnerCannotHold | K::Invalid(_) => ApiError::InvalidRequest(e.to_string()),
            K::Store(s) => s.into(),
        }
    }
}

impl From<tether_domain::evidence::EvidenceError> for ApiError {
    fn from(e: tether_domain::evidence::EvidenceError) -> Self {
        use tether_domain::evidence::EvidenceError as E;
        match e {
            E::Signing(e) => e.into(),
            E::Vault(e) => e.into(),
            E::Store(e) => e.into(),
            E::Stopped(_) => ApiError::internal(e),
        }
    }
}

impl From<tether_domain::evidence::signing::SigningError> for ApiError {
    fn from(e: tether_domain::evidence::signing::SigningError) -> Self {
        use tether_domain::evidence::signing::SigningError as S;
        match e {
            S::Vault(v) => v.into(),
            S::Store(s) => s.into(),
            S::NoKey | S::BadKey | S::Key(_) => ApiError::internal(e),
        }
    }
}

impl From<tether_domain::audit::sinks::SinkError> for ApiError {
    fn from(e: tether_domain::audit::sinks::SinkError) -> Self {
        use tether_domain::audit::sinks::SinkError as S;
        match e {
            S::BadName | S::Invalid(_) => ApiError::InvalidRequest(e.to_string()),
            S::NotFound => ApiError::NotFound,
            S::Store(s) => s.into(),
        }
    }
}
