//! What runs the check types, apart from them: a check's start ([`Run`]), following watches through a judge
//! into items, a check's own tally of a watch, and the set of running checks kept across reloads.

mod follow;
mod run;
pub(crate) mod running;
mod tally;

pub(crate) use follow::{follow, waiting, Destination, Source, Specs};
pub use run::Run;
pub(crate) use run::{start_one, CheckRef, Stash};
#[cfg(test)]
pub(crate) use run::{Kube, Starting};
pub(crate) use tally::{live, JudgedTally, LiveTally};
