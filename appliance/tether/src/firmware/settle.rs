//! `tether update settle`, run at each boot before the appliance starts
//! (`tether-firmware.service`): the machine's id kept in its boot entries,
//! and what became of a pending update, from the slot that booted and the
//! new slot's boot entry, recorded in the appliance's audit log.

use anyhow::Context;

use super::boot::{MACHINE_ID, Slot, Standing};
use super::{Machine, Pending, Stage};
use tether_domain::firmware::{self, Course};

/// What a boot does about a pending update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Record this; the update is over.
    Finish(Course),
    /// Record this; the update stays pending at `Stage`.
    Record(Course, Stage),
    /// Nothing happened yet (written, not rebooted).
    Wait,
}

/// `stage`: how far the update had come; `on_new_slot`: whether the machine
/// booted the slot it wrote; `standing`: that slot's entry, if it has one.
pub fn step(stage: Stage, on_new_slot: bool, standing: Option<Standing>) -> Step {
    match (on_new_slot, stage, standing) {
        // Booted the new slot: kept, or on trial.
        (true, _, Some(Standing::Blessed)) => Step::Finish(Course::Completed),
        (true, _, Some(Standing::Trial { left, .. })) => Step::Record(Course::Trial { tries_left: left }, Stage::Trial),
        (true, _, Some(Standing::Bad { .. })) => Step::Record(Course::Trial { tries_left: 0 }, Stage::Trial),
        (true, _, None) => Step::Wait,
        // On the old slot.
        (false, Stage::Writing, _) => Step::Finish(Course::Interrupted),
        (false, _, Some(Standing::Bad { done })) => Step::Finish(Course::FellBack { boots: done }),
        (false, _, None) => Step::Finish(Course::FellBack { boots: 0 }),
        (false, _, Some(Standing::Trial { .. } | Standing::Blessed)) => Step::Wait,
    }
}

/// The first boot's machine id (systemd made it up: the root is read-only)
/// into the boot entries, so every later boot is the same machine. Answers
/// whether it was not there yet.
pub fn pin_machine_id(machine: &Machine) -> anyhow::Result<bool> {
    if machine.cmdline.get(MACHINE_ID).is_some() {
        return Ok(false);
    }
    let id = std::fs::read_to_string("/etc/machine-id").context("cannot read /etc/machine-id")?;
    let id = id.trim();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        anyhow::bail!("/etc/machine-id holds no machine id ({id:?})");
    }
    machine.esp.pin_machine_id(id)
}

/// Settles the pending update, if there is one; answers what was recorded.
/// A console upload under way ends with the boot ([`super::uploaded`]).
pub fn settle(machine: &Machine) -> anyhow::Result<Option<Course>> {
    super::uploaded::clear_at_boot(&machine.data_dir.join(tether_domain::firmware::upload::UPLOAD_DIR))?;
    let Some(mut pending) = Pending::read(&machine.state_dir)? else {
        return Ok(None);
    };
    let booted = machine.cmdline.slot()?;
    let target = Slot::parse(&pending.update.slot).context("the pending update names no slot a or b")?;
    let standing = machine.esp.entry_of(target)?.filter(|e| e.generation == pending.generation).map(|e| e.standing);
    let step = step(pending.stage, booted == target, standing);
    let course = match step {
        Step::Wait => return Ok(None),
        Step::Finish(course) | Step::Record(course, _) => course,
    };
    if course == Course::Interrupted {
        // A half-written slot must never boot later.
        machine.esp.remove_entries_of(target)?;
    }
    let update = pending.update.clone();
    crate::install::record_if_set_up(&machine.data_dir, move |tx, now| firmware::record(tx, now, &update, course))?;
    match step {
        Step::Record(_, stage) => {
            pending.stage = stage;
            pending.write(&machine.state_dir)?;
        }
        _ => Pending::clear(&machine.state_dir)?,
    }
    Ok(Some(course))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_boot_finds_the_update_s_course() {
        let trial = |left, done| Some(Standing::Trial { left, done });
        let cases = [
            // The first boot of the new slot, then its second try, then kept.
            (Stage::Staged, true, trial(2, 1), Step::Record(Course::Trial { tries_left: 2 }, Stage::Trial)),
            (Stage::Trial, true, trial(1, 2), Step::Record(Course::Trial { tries_left: 1 }, Stage::Trial)),
            (Stage::Trial, true, Some(Standing::Blessed), Step::Finish(Course::Completed)),
            // Written, no reboot yet.
            (Stage::Staged, false, trial(3, 0), Step::Wait),
            // Three tries used up: back on the old slot.
            (Stage::Trial, false, Some(Standing::Bad { done: 3 }), Step::Finish(Course::FellBack { boots: 3 })),
            // It never came far enough to record a trial (a kernel that would not boot).
            (Stage::Staged, false, Some(Standing::Bad { done: 3 }), Step::Finish(Course::FellBack { boots: 3 })),
            // Power cut while writing: the old slot booted.
            (Stage::Writing, false, None, Step::Finish(Course::Interrupted)),
            // Cut after the entry was written but before the stage was: the new slot is whole.
            (Stage::Writing, true, trial(2, 1), Step::Record(Course::Trial { tries_left: 2 }, Stage::Trial)),
        ];
        for (stage, on_new_slot, standing, want) in cases {
            assert_eq!(step(stage, on_new_slot, standing), want, "{stage:?} {on_new_slot} {standing:?}");
        }
    }
}
