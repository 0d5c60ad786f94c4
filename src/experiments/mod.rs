//! The experiments, one module each: the paper's figures and tables, and the runs they are made of.
#![forbid(unsafe_code)]

pub mod compare;
pub mod faults;
pub mod fig10;
pub mod msgbench;
pub mod netfig;
pub mod paper;
pub mod ping;
pub mod recoveryfig;
