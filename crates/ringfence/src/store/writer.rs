//! The write queue both stores share: the host reserves places before it applies
//! transactions (so a full queue refuses work before any state changes), sends each record
//! through its place, and gets the record's sequence number once it is durable.

use tokio::sync::{mpsc, oneshot};

use super::WriteOp;

/// One queued write and the sender of its durability acknowledgement (the record's
/// sequence number, or the reason the write failed).
pub type QueuedWrite = (WriteOp, oneshot::Sender<Result<i64, String>>);

/// The write side: submit in engine order, get the record's sequence number once durable.
#[derive(Clone, Debug)]
pub struct Writer {
    queue: mpsc::Sender<QueuedWrite>,
}

/// A reserved place in the write queue, taken before the engine applies a transaction so a
/// full queue turns the request away before any state changes.
pub type WritePermit<'a> = mpsc::Permit<'a, QueuedWrite>;

impl Writer {
    /// The write side of a store whose writer task or thread reads `queue`'s receiver.
    pub(super) fn new(queue: mpsc::Sender<QueuedWrite>) -> Writer {
        Writer { queue }
    }

    /// Reserves one place in the queue, or `None` when the queue is full.
    pub fn try_reserve(&self) -> Option<WritePermit<'_>> {
        self.queue.try_reserve().ok()
    }

    /// Reserves `n` places, or `None` when the queue has fewer free.
    pub fn try_reserve_many(&self, n: usize) -> Option<mpsc::PermitIterator<'_, QueuedWrite>> {
        self.queue.try_reserve_many(n).ok()
    }

    /// Writes everything queued so far, closes the store's write side and waits until it is
    /// closed. Later writes fail.
    pub async fn close(&self) {
        if let Ok(permit) = self.queue.reserve().await {
            let _ = send(permit, WriteOp::Close).await;
        }
    }

    /// Writes pending in the queue.
    pub fn backlog(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

/// Sends `op` through a reserved place and returns the receiver of its durability ack.
pub fn send(permit: WritePermit<'_>, op: WriteOp) -> oneshot::Receiver<Result<i64, String>> {
    let (ack, rx) = oneshot::channel();
    permit.send((op, ack));
    rx
}
