//! Identifier newtypes. All are UUIDv7: unique, and time-ordered when used as keys.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh id; later ids sort after earlier ones.
            pub fn new() -> Self {
                $name(Uuid::now_v7())
            }

            /// The 16 bytes used as a store key.
            pub fn to_key(self) -> [u8; 16] {
                *self.0.as_bytes()
            }

            /// The id a store key holds.
            pub fn from_key(key: [u8; 16]) -> Self {
                $name(Uuid::from_bytes(key))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map($name)
            }
        }
    };
}

id_type!(
    /// A task.
    TaskId
);
id_type!(
    /// An enrolled worker; also the identity in its certificate.
    WorkerId
);
id_type!(
    /// One lease of one task; a completion must name the current one.
    LeaseId
);
