//! From observations to the verdict: the policy, a pure function of observations, configuration and time,
//! into the report each endpoint answers from; with what it reads beside them (the links between checks,
//! the operators' silences and maintenance, the root causes) and the bounded history of transitions.

pub mod causes;
pub mod history;
pub mod links;
pub mod operations;
pub mod policy;
pub mod report;
