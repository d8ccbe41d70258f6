//! Changing what a person may do: their role (granting or removing the
//! security officer role waits for a second officer) and disabling their
//! account. Each takes away, in the same transaction, what the person no
//! longer may hold: the tokens the new role does not cover, or every token
//! and session.

use serde::Serialize;

use super::users::{RoleRequest, UserError, active_officers, get_for_update, put};
use super::{Role, sessions, tokens};
use crate::audit::{self, Event, Origin, Resource};
use tether_base::clock::Timestamp;
use tether_store::WriteTx;

/// The outcome of a role change request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleChange {
    Done,
    AwaitingApproval,
}

/// Changes a person's role (`by` is the person asking, whatever
/// credential they used). The person's tokens (their own and the service
/// tokens they hold) that the new role does not cover are revoked in the
/// same transaction. Granting or taking away `security_officer`
/// waits for a second officer's approval, except that the very first
/// officer may be named directly (there is no one to approve) — never by
/// themselves.
pub fn request_role(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    by: &str,
    target: &str,
    role: Role,
) -> Result<RoleChange, UserError> {
    let requester = by.to_owned();
    if role == Role::Worker {
        return Err(UserError::WorkerRole);
    }
    if requester == target {
        return Err(UserError::OwnAccount);
    }
    let mut user = get_for_update(tx, target)?;
    let touches_officer = role == Role::SecurityOfficer || user.role == Role::SecurityOfficer;
    let officers = active_officers(tx)?;
    let other_officers = officers.iter().filter(|o| **o != requester && *o != target).count();
    if user.role == Role::SecurityOfficer && role != Role::SecurityOfficer && officers.len() <= 1 {
        return Err(UserError::LastSecurityOfficer);
    }
    let resource = Resource::new("user", target);
    if touches_officer && !officers.is_empty() {
        if other_officers == 0 {
            return Err(UserError::NotASecondOfficer);
        }
        user.pending_role = Some(RoleRequest { role, requested_by: requester, requested_at: now });
        put(tx, &user)?;
        let event = Event::new("user.role_requested", "request", resource).detail("from", user.role).detail("to", role);
        audit::append(tx, now, origin, event)?;
        return Ok(RoleChange::AwaitingApproval);
    }
    let from = user.role;
    user.role = role;
    user.pending_role = None;
    put(tx, &user)?;
    let revoked = tokens::revoke_beyond(tx, now, target, role)?;
    let event = Event::new("user.role_changed", "change", resource)
        .detail("from", from)
        .detail("to", role)
        .detail("tokens_revoked", revoked);
    audit::append(tx, now, origin, event)?;
    Ok(RoleChange::Done)
}

/// A security officer approves a pending role change: someone other than
/// whoever asked for it and the person it concerns.
pub fn approve_role(
    tx: &mut WriteTx<'_>,
    now: Timestamp,
    origin: &Origin,
    approver: &str,
    target: &str,
) -> Result<Role, UserError> {
    let mut user = get_for_update(tx, target)?;
    let request = user.pending_role.take().ok_or(UserError::NothingPending)?;
    if approver == request.requested_by || approver == target {
        return Err(UserError::NotASecondOfficer);
    }
    let from = user.role;
    user.role = request.role;
    put(tx, &user)?;
    let revoked = tokens::revoke_beyond(tx, now, target, request.role)?;
    let event = Event::new("user.role_changed", "approve", Resource::new("user", target))
        .detail("from", from)
        .detail("to", request.role)
        .detail("requested_by", &request.requested_by)
        .detail("tokens_revoked", revoked);
    audit::append(tx, now, origin, event)?;
    Ok(request.role)
}

/// Disables an account: its sessions and tokens stop working at once.
pub fn disable(tx: &mut WriteTx<'_>, now: Timestamp, origin: &Origin, by: &str, target: &str) -> Result<(), UserError> {
    if by == target {
        return Err(UserError::OwnAccount);
    }
    let mut user = get_for_update(tx, target)?;
    user.disabled = true;
    put(tx, &user)?;
    let sessions = sessions::end_all_of(tx, target)?;
    let tokens = tokens::revoke_all_of(tx, now, target)?;
    let event = Event::new("user.disabled", "disable", Resource::new("user", target))
        .detail("sessions_ended", sessions)
        .detail("tokens_revoked", tokens);
    audit::append(tx, now, origin, event)?;
    Ok(())
}
