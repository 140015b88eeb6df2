//! Several nodes acting as one: the shared, totally ordered log of state changes in Redis
//! ([`log`]) and the engine replica every node keeps by applying it ([`replica`]).
//!
//! Why a log and not per-entity records updated by a script: a decision reads state and then
//! changes it (the alert it raises feeds the account's escalation ladder), so nodes agree with
//! a single node only if every change happens in one order that every node sees. Redis gives
//! that order in one round trip: a script appends a node's transactions to the log and returns
//! every entry the node has not applied yet, up to its own. Each node applies the entries in
//! log order with the same deterministic engine, so each computes the same state and the same
//! decision for every transaction, and answers its own. The feature code stays the one in
//! `crates/core`; nothing is reimplemented in Lua.
//!
//! Rules and models changes are log entries too (see `host::reload`), so every node switches
//! at the same place in the order.
//!
//! The log is trimmed behind snapshots of the state ([`snapshot`]), which nodes load to start
//! or to catch up after falling behind a trim.

pub mod log;
pub mod replica;
pub mod snapshot;
