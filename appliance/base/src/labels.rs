//! Names and labels: the one rule for task kinds and worker/task labels.
//!
//! 1-64 characters of ASCII letters, digits, '.', '_', '-', ':'; at most 32
//! labels; a label set is kept sorted and free of repeats, so matching can
//! binary-search it.

const MAX_LABELS: usize = 32;
const MAX_NAME_LEN: usize = 64;

/// What a valid name looks like, for error messages.
pub const NAME_RULE: &str = "1-64 characters of a-z, 0-9, '.', '_', '-', ':'";

pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

/// Checks a label set and returns it sorted without repeats, or says what is wrong.
pub fn normalize(mut labels: Vec<String>) -> Result<Vec<String>, String> {
    if labels.len() > MAX_LABELS {
        return Err(format!("at most {MAX_LABELS} labels"));
    }
    if let Some(bad) = labels.iter().find(|l| !is_valid_name(l)) {
        return Err(format!("label {bad:?} must be {NAME_RULE}"));
    }
    labels.sort();
    labels.dedup();
    Ok(labels)
}

/// True when someone holding `held` has every one of `needed` (a worker and
/// a task's labels, or a secret policy's). `held` is sorted.
pub fn labels_match(needed: &[String], held: &[String]) -> bool {
    needed.iter().all(|l| held.binary_search(l).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_back_sorted_unique_or_with_the_bad_one_named() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(normalize(s(&["b", "a", "b"])).unwrap(), ["a", "b"]);
        assert!(normalize(s(&["ok", "a/b"])).unwrap_err().contains("a/b"));
        assert!(normalize(vec!["x".to_string(); 33]).is_err());
        assert!(!is_valid_name("") && !is_valid_name(&"x".repeat(65)) && is_valid_name("gpu:a100"));
    }

    #[test]
    fn a_worker_needs_every_label_of_the_task() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let cases = [
            (s(&[]), s(&[]), true),
            (s(&[]), s(&["gpu"]), true),
            (s(&["gpu"]), s(&["gpu", "linux"]), true),
            (s(&["gpu", "linux"]), s(&["gpu"]), false),
            (s(&["gpu"]), s(&[]), false),
        ];
        for (task, worker, want) in cases {
            assert_eq!(labels_match(&task, &worker), want, "{task:?} vs {worker:?}");
        }
    }
}
