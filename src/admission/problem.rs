//! A finding about one field: `field path: what is wrong; how to fix it`.

use serde::Serialize;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl Problem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl From<crate::canary::TypeMismatch> for Problem {
    fn from(m: crate::canary::TypeMismatch) -> Self {
        Problem::new(
            m.path,
            format!("must be {}; fix the value's type", m.expected),
        )
    }
}

/// Errors deny the object; warnings are returned to the client but allow it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl Findings {
    pub fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Problem::new(field, message));
    }

    pub fn warning(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Problem::new(field, message));
    }

    /// UPDATE ratcheting: errors the old object already had become warnings, so a
    /// canary created before install keeps working and unrelated writes succeed.
    pub fn ratchet(self, old: &Findings) -> Findings {
        let (pre_existing, errors): (Vec<_>, Vec<_>) = self
            .errors
            .into_iter()
            .partition(|e| old.errors.contains(e));
        let mut warnings = self.warnings;
        warnings.extend(pre_existing.into_iter().map(|p| Problem {
            message: format!(
                "{} (already present before this update: allowed for now, please fix it)",
                p.message
            ),
            field: p.field,
        }));
        Findings { errors, warnings }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratchet_keeps_only_new_errors() {
        let old = Findings {
            errors: vec![Problem::new("a", "bad; fix"), Problem::new("b", "bad; fix")],
            warnings: vec![],
        };
        let new = Findings {
            errors: vec![
                Problem::new("a", "bad; fix"),
                Problem::new("c", "bad; fix"),
                Problem::new("b", "worse; fix"),
            ],
            warnings: vec![Problem::new("w", "hmm")],
        };
        let r = new.ratchet(&old);
        assert_eq!(
            r.errors,
            vec![
                Problem::new("c", "bad; fix"),
                Problem::new("b", "worse; fix")
            ]
        );
        assert_eq!(r.warnings.len(), 2);
        assert_eq!(r.warnings[0], Problem::new("w", "hmm"));
        assert_eq!(r.warnings[1].field, "a");
        assert!(
            r.warnings[1]
                .message
                .starts_with("bad; fix (already present")
        );
    }
}
