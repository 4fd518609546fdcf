//! One module per page.

pub mod compare;
pub mod new;
pub mod run;
pub mod runs;
pub mod study;
