//! Use cases that span records and rules, callable without HTTP: what a handler or a CLI
//! command asks for, decided here and written through the store.

pub mod bots;
pub mod cache;
pub mod conversations;
pub mod golden;
pub mod jobs;
pub mod leads;
pub mod turn;
