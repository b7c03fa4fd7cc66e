//! What runs the check types, apart from them: following watches through a judge into items, and a check's
//! own tally of a watch.

mod follow;
mod tally;

pub(crate) use follow::{follow, waiting, Destination, Source, Specs};
pub(crate) use tally::{live, JudgedTally, LiveTally};
