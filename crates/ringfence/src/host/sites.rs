//! The host's side of active-active sites (see [`crate::sites`]): serving this site's own
//! records to peers, and applying a peer's records in the engine's one order.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ringfence_core::decision::Action;
use ringfence_core::event::EntityId;
use ringfence_core::retail::ReceiptView;
use serde_json::value::RawValue;

use super::{EngineHost, HostError};
use crate::sites::{Applied, FeedPageOut, FeedRecord, FeedRecordOut, Site};
use crate::store::{self as records, Origin, StoreError, TxRecord, WriteOp};

impl EngineHost {
    /// This node as a site, when it runs as one (`--site`).
    pub fn site(&self) -> Option<&Arc<Site>> {
        self.site.as_ref()
    }

    /// Fingerprint of the card-hash key (a keyed hash of a fixed probe: reveals nothing).
    pub fn key_fingerprint(&self) -> &str {
        &self.key_fingerprint
    }

    /// How far this site holds `origin`'s records.
    pub fn site_offset(&self, origin: &str) -> i64 {
        self.lock().site_offsets.get(origin).copied().unwrap_or(0)
    }

    /// A receipt as the engine holds it, with its returns per store.
    pub fn receipt(&self, receipt_id: &EntityId) -> Option<ReceiptView> {
        self.lock().engine.receipt(receipt_id)
    }

    /// Up to `limit` of this site's own records after `after`, as a feed page (JSON). When
    /// there are none, waits up to `wait` for one to become durable.
    pub async fn feed(
        &self,
        site: &Site,
        after: i64,
        limit: usize,
        wait: Duration,
    ) -> Result<String, HostError> {
        // Watch before reading, so a record made durable in between wakes us.
        let mut head = site.watch_head();
        head.mark_unchanged();
        let deadline = tokio::time::Instant::now() + wait;
        let rows = loop {
            let rows = if limit == 0 {
                Vec::new()
            } else {
                self.store.local().own_records_after(after, limit).await?
            };
            if !rows.is_empty() || limit == 0 || site.closing() {
                break rows;
            }
            match tokio::time::timeout_at(deadline, head.changed()).await {
                Ok(Ok(())) => head.mark_unchanged(),
                // Time is up (or the site is going away): an empty page.
                _ => break Vec::new(),
            }
        };
        let mut records = Vec::with_capacity(rows.len());
        for (seq, event, decision) in rows {
            let corrupt =
                |e: serde_json::Error| StoreError::Corrupt(format!("transaction seq {seq}: {e}"));
            records.push(FeedRecordOut {
                seq,
                event: RawValue::from_string(event).map_err(corrupt)?,
                decision: RawValue::from_string(decision).map_err(corrupt)?,
            });
        }
        let page = FeedPageOut {
            site: &site.name,
            key_fingerprint: &self.key_fingerprint,
            head: site.head(),
            records,
        };
        serde_json::to_string(&page)
            .map_err(|e| HostError::Store(StoreError::Corrupt(e.to_string())))
    }

    /// Applies a page of `origin`'s records, in order, as that site decided them, and stores
    /// each with its origin and the new offset in one commit. Records at or below the stored
    /// offset are skipped (a page seen twice); a transaction id this site already holds moves
    /// only the offset. Takes the records only once the write queue has room for all of them
    /// (`Overloaded` leaves `records` as it was, to retry).
    pub async fn apply_remote(
        &self,
        origin: &str,
        records: &mut Vec<FeedRecord>,
    ) -> Result<Applied, HostError> {
        self.admit()?;
        let ids: Vec<String> = records
            .iter()
            .map(|r| r.event.transaction_id.as_str().to_owned())
            .filter(|id| self.store.may_hold(id))
            .collect();
        let stored = self.store.decisions_of(ids).await?;
        let mut applied = Applied::default();
        let mut acks = Vec::with_capacity(records.len());
        let mut observed = Vec::with_capacity(records.len());
        {
            let Some(permits) = self.store.writer().try_reserve_many(records.len()) else {
                return Err(HostError::Overloaded);
            };
            let mut guard = self.lock();
            if !self.ready() {
                return Err(self.refusal_error());
            }
            let locked = &mut *guard;
            let offset = locked.site_offsets.entry(origin.to_owned()).or_insert(0);
            for (rec, permit) in records.drain(..).zip(permits) {
                if rec.seq <= *offset {
                    continue; // already stored; the unused place goes back to the queue
                }
                *offset = rec.seq;
                let origin = Origin {
                    site: origin.to_owned(),
                    seq: rec.seq,
                };
                let id = rec.event.transaction_id.as_str();
                if stored.contains_key(id) || locked.recent.contains(id) {
                    // The same id was decided here too (a client sent it to both sites, or
                    // reused an id): the first record stands, as everywhere else.
                    tracing::warn!(transaction_id = id, site = %origin.site, "a replicated transaction id is already held here; keeping this site's record");
                    applied.duplicates += 1;
                    acks.push(records::send(permit, WriteOp::SiteOffset(origin)));
                    continue;
                }
                let d = &rec.decision.decision;
                observed.push(
                    self.live
                        .observe(&rec.event, &rec.decision, Some(&origin.site)),
                );
                locked
                    .engine
                    .apply_recorded(&rec.event, d.alert, d.decision == Action::Block);
                let conflicts = locked.engine.take_conflicts();
                locked.recent.insert(id);
                applied.records += 1;
                applied.conflicts += conflicts.len() as u64;
                acks.push(records::send(
                    permit,
                    WriteOp::Tx(Box::new(TxRecord {
                        tx: rec.event,
                        decision: rec.decision,
                        alert_event: None,
                        conflicts,
                        origin: Some(origin),
                    })),
                ));
            }
            applied.offset = *offset;
        }
        applied.applied_at_us = wall_us();
        self.scored_total
            .fetch_add(applied.records, Ordering::Release);
        for ack in acks {
            match ack.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(self.storage_failed(e)),
                Err(_) => return Err(self.storage_failed("writer stopped".into())),
            }
        }
        for o in observed {
            self.live.stored(o);
        }
        self.metrics
            .replicated
            .fetch_add(applied.records, Ordering::Relaxed);
        if applied.conflicts > 0 {
            self.metrics
                .site_conflicts
                .fetch_add(applied.conflicts, Ordering::Relaxed);
            tracing::warn!(site = %origin, conflicts = applied.conflicts, "returns accepted at two sites claim the same units: duplicate_return_across_sites raised");
        }
        Ok(applied)
    }
}

/// Wall-clock microseconds since the epoch.
fn wall_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
