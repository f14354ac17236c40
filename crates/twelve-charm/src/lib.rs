//! The 12-factor charm rules as a pure function: (project, desired state, unit) -> the plan
//! that unit must run and the status it must show. No I/O of any kind.

pub mod integrations;
