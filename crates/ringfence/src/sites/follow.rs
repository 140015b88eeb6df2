//! The task that pulls one peer site's records into this site, for as long as the node runs.
//!
//! It learns the peer's name from a first, empty page, refuses a peer that is this very site
//! or tokenises cards under another key, then long-polls the feed from the stored offset.
//! A failure of any kind marks the link down and retries with a short backoff (at most a
//! second, so a healed link is noticed quickly); this site keeps deciding meanwhile.

use std::sync::Arc;
use std::time::Duration;

use super::{LagMeter, Peer, FEED_PAGE};
use crate::client::{endpoint_url, HttpClient};
use crate::host::{now, EngineHost, HostError};
use crate::sites::FeedPage;

/// How long a feed request is held open at the peer when it has nothing new.
const WAIT_MS: u64 = 10_000;
/// First and longest pause between attempts while the link is down.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Pause before retrying a page this node could not take (its write queue was full).
const BUSY_PAUSE: Duration = Duration::from_millis(20);

/// Why a link attempt ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    /// The peer did not answer as expected (down, cut off, or an error status).
    #[error("{0}")]
    Unreachable(String),
    /// The peer is not a site this one can replicate with.
    #[error("{0}")]
    Refused(String),
    /// This node can no longer store records: the link stops for good.
    #[error("storage failed: {0}")]
    Storage(String),
}

/// Pulls `peer`'s records into `host` until the task is aborted (or storage fails).
pub async fn follow(host: Arc<EngineHost>, peer: Arc<Peer>) {
    // `--peer-ca-cert` was read when the settings were resolved; unreadable since, the link
    // cannot be trusted and stays down, said so in the site's status.
    let client = match HttpClient::new()
        .with_optional_ca_cert(host.settings().peer_ca_cert.as_deref())
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(peer = %peer.url, error = %e, "replication stopped: the peers' CA certificate is unusable");
            peer.update(|s| {
                s.connected = false;
                s.last_error = Some(e.to_string());
            });
            return;
        }
    };
    let mut client = client.with_timeout(Duration::from_millis(WAIT_MS + 10_000));
    // The peer's feed needs the `analyst` role there: `--peer-key`.
    if let Some(key) = &host.settings().peer_key {
        client = client.with_bearer(key.expose());
    }
    let mut meter = LagMeter::new();
    let mut backoff = MIN_BACKOFF;
    let mut first = true; // a peer down at start is reported once too
    loop {
        let result = pull(&host, &peer, &client, &mut meter, &mut backoff).await;
        let e = match result {
            Ok(()) => return,
            Err(LinkError::Storage(e)) => {
                tracing::error!(peer = %peer.url, error = %e, "replication stopped: this node cannot store records");
                peer.update(|s| {
                    s.connected = false;
                    s.last_error = Some(format!("storage failed: {e}"));
                });
                return;
            }
            Err(e) => e,
        };
        // Reported when the link goes down (it was up during this attempt), not per retry.
        if first || peer.snapshot().connected {
            tracing::warn!(peer = %peer.url, error = %e, "peer site unreachable; deciding on local state and retrying");
        }
        first = false;
        peer.update(|s| {
            s.connected = false;
            s.last_error = Some(e.to_string());
        });
        let pause = if matches!(e, LinkError::Refused(_)) {
            MAX_BACKOFF * 5
        } else {
            backoff
        };
        tokio::time::sleep(pause).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn get_page(client: &HttpClient, url: &str) -> Result<FeedPage, LinkError> {
    let res = client
        .get(url)
        .await
        .map_err(|e| LinkError::Unreachable(e.to_string()))?;
    if res.status == 401 || res.status == 403 {
        return Err(LinkError::Refused(format!(
            "the peer refused access to its feed ({}): give this site --peer-key, a key with the analyst role at the peer",
            res.status
        )));
    }
    if !res.is_success() {
        let text = res.text();
        let text: String = text.chars().take(300).collect();
        return Err(LinkError::Unreachable(format!(
            "feed answered {}: {text}",
            res.status
        )));
    }
    res.json()
        .map_err(|e| LinkError::Unreachable(format!("feed page: {e}")))
}

/// One connection's worth of pulling: hello, then pages until something fails.
async fn pull(
    host: &EngineHost,
    peer: &Peer,
    client: &HttpClient,
    meter: &mut LagMeter,
    backoff: &mut Duration,
) -> Result<(), LinkError> {
    let Some(site) = host.site() else {
        return Ok(());
    };
    let feed = |after: i64, limit: usize, wait_ms: u64| {
        endpoint_url(
            &peer.url,
            &format!("/v1/sites/feed?after={after}&limit={limit}&wait_ms={wait_ms}"),
        )
        .map_err(|e| LinkError::Refused(e.to_string()))
    };
    let hello = get_page(client, &feed(0, 0, 0)?).await?;
    if hello.site == site.name {
        return Err(LinkError::Refused(format!(
            "the peer at {} is this site ({}) itself",
            peer.url, site.name
        )));
    }
    if hello.key_fingerprint != host.key_fingerprint() {
        return Err(LinkError::Refused(format!(
            "site {} tokenises card numbers with another card-hash key; sites must share one (--card-hash-key)",
            hello.site
        )));
    }
    let origin = hello.site;
    let mut offset = host.site_offset(&origin);
    tracing::info!(peer = %peer.url, site = %origin, from = offset, "replicating from peer site");
    peer.update(|s| {
        s.site = Some(origin.clone());
        s.connected = true;
        s.last_error = None;
        s.peer_head = hello.head;
        s.applied = offset;
        s.last_contact = Some(now());
    });
    *backoff = MIN_BACKOFF;
    loop {
        let mut page = get_page(client, &feed(offset, FEED_PAGE, WAIT_MS)?).await?;
        if page.site != origin {
            return Err(LinkError::Refused(format!(
                "the peer at {} is now site {} (was {origin})",
                peer.url, page.site
            )));
        }
        peer.update(|s| {
            s.connected = true;
            s.peer_head = page.head;
            s.last_contact = Some(now());
        });
        if page.records.is_empty() {
            continue;
        }
        let decided: Vec<Option<i64>> = page
            .records
            .iter()
            .map(|r| r.decision.decided_at.map(|t| t.millis()))
            .collect();
        let applied = loop {
            match host.apply_remote(&origin, &mut page.records).await {
                Ok(a) => break a,
                Err(HostError::Overloaded | HostError::StorageFull(_)) => {
                    tokio::time::sleep(BUSY_PAUSE).await
                }
                Err(e) => return Err(LinkError::Storage(e.to_string())),
            }
        };
        offset = applied.offset;
        // Decided at the peer (ms, truncated) to in this engine: over by less than 1 ms.
        let mut last = None;
        for ms in decided.into_iter().flatten() {
            let us = (applied.applied_at_us - ms * 1000).max(0) as u64;
            meter.record(us);
            last = Some(us as f64 / 1000.0);
        }
        let recent = meter.recent();
        let total = meter.total();
        peer.update(|s| {
            s.applied = offset;
            s.records += applied.records;
            s.duplicates += applied.duplicates;
            s.conflicts += applied.conflicts;
            if last.is_some() {
                s.last_lag_ms = last;
            }
            s.total_ms = total;
            if let Some((p50, p99)) = recent {
                s.recent_p50_ms = Some(p50);
                s.recent_p99_ms = Some(p99);
            }
        });
    }
}
