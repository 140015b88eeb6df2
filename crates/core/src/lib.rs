//! Ringfence's engine as pure logic: no IO, no async runtime, no wall clock. Time arrives with
//! each event, so replaying stored history reproduces every decision bit for bit.
//!
//! # Layout
//! - [`event`]: transactions as they arrive ([`event::RawTransaction`]) and as the engine sees
//!   them ([`event::Transaction`]), with card numbers keyed-hashed at parse time.
//! - [`window`]: bucketed sliding windows (count and amount sum) with O(1) updates.
//! - [`distinct`]: bounded distinct counts over a time window (users per device, ...).
//! - [`labels`]: per-day transaction and confirmed-fraud counts behind the label delay.
//! - [`profile`]: running spending profiles and last-seen location per user / card.
//! - [`graph`]: the link graph of users, cards and devices (incremental union-find).
//! - [`state`]: per-entity state, the feature read (before the event) and the update.
//! - [`snapshot`]: the binary format an engine's entity state is saved in and restored from.
//! - [`features`]: the named, typed feature catalog shared by rules, replay and training.
//! - [`model`]: tree-ensemble models (XGBoost or our own format): fraud probability and
//!   exact TreeSHAP explanations over catalog features.
//! - [`rules`]: the analyst rule language: lexer, parser, type check, compiled evaluation.
//! - [`decision`]: actions, thresholds, the escalation ladder and reasons.
//! - [`engine`]: ties it together: features -> rules -> score -> decision -> state update.

pub mod decision;
pub mod distinct;
pub mod engine;
pub mod event;
pub mod features;
pub mod graph;
pub mod labels;
pub mod model;
pub mod profile;
pub mod retail;
pub mod rules;
pub mod snapshot;
pub mod state;
pub mod window;
